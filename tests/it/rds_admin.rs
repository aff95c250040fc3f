//! Admin secrets as RDS manages them for an instance's master user (`username` and
//! `password` only, tagged with the instance): the issuer and the reaper find the endpoint
//! through RDS, and only for the secret the instance names as its own. moto's RDS stands for
//! RDS: an instance created with `ManageMasterUserPassword` gets its secret in moto's Secrets
//! Manager, tagged as RDS tags it, and reports the harness PostgreSQL as its endpoint
//! (`localhost` and the harness port; tests/moto_server.py's endpoint route). Its admin is
//! the harness's RDS-like master user, never a superuser.

use aws_sdk_secretsmanager::types::Tag;
use keyturn_tests::lease::{call, deploy_with_admin, Deployment, CI};
use keyturn_tests::{random_token, TestEnv};
use serde_json::{json, Value};

/// An RDS instance of the harness PostgreSQL whose master user secret RDS manages, holding
/// the harness's RDS-like admin: (instance ARN, its secret's ARN).
async fn rds_instance(env: &TestEnv) -> (String, String) {
    let rds = aws_sdk_rds::Client::new(&env.sdk);
    let id = env.unique("db").replace('_', "-");
    let instance = rds
        .create_db_instance()
        .db_instance_identifier(&id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .port(i32::from(env.pg.port))
        .master_username(&env.pg.admin)
        .manage_master_user_password(true)
        .allocated_storage(20)
        .send()
        .await
        .expect("CreateDBInstance")
        .db_instance
        .expect("the instance");
    let instance_arn = instance.db_instance_arn().expect("its ARN").to_owned();
    let secret_arn = instance.master_user_secret().and_then(|s| s.secret_arn()).expect("its master secret").to_owned();
    env.moto.post("/keyturn-test/rds/endpoint", &json!({"DBInstanceIdentifier": id, "Address": "localhost"}));
    // RDS sets its master user's password to the one it stores; the harness's master user
    // exists already, so its password is stored instead, as RDS's rotation of it would.
    env.sm
        .put_secret_value()
        .secret_id(&secret_arn)
        .secret_string(json!({"username": env.pg.admin, "password": env.pg.admin_password}).to_string())
        .send()
        .await
        .expect("PutSecretValue");
    (instance_arn, secret_arn)
}

/// A secret made by hand with the master user's credentials and, when `tag` is set, the
/// tag RDS puts on its own: what a writer who knows the password, or can tag, could make.
async fn handmade_secret(env: &TestEnv, name: &str, tag: Option<&str>) -> String {
    let value = json!({"username": env.pg.admin, "password": env.pg.admin_password});
    let mut create = env.sm.create_secret().name(env.unique(name)).secret_string(value.to_string());
    if let Some(instance_arn) = tag {
        create = create.tags(Tag::builder().key("aws:rds:primaryDBInstanceArn").value(instance_arn).build());
    }
    create.send().await.expect("CreateSecret").arn().expect("its ARN").to_owned()
}

async fn deployment(env: TestEnv, admin: &str) -> Deployment {
    let (group, table) = env.pg_group_with_table("grp").await;
    deploy_with_admin(env, admin, group, table, "").await
}

/// The database users of this deployment.
async fn users(s: &Deployment) -> Vec<String> {
    let rows = s
        .env
        .pg_superuser()
        .await
        .query("SELECT rolname::text AS name FROM pg_roles WHERE starts_with(rolname::text, $1)", &[&s.prefix])
        .await
        .unwrap();
    rows.iter().map(|r| r.get("name")).collect()
}

fn text<'a>(body: &'a Value, key: &str) -> &'a str {
    body[key].as_str().unwrap_or_else(|| panic!("{key} in {body}"))
}

#[tokio::test]
async fn an_rds_managed_admin_secret_issues_and_revokes_through_the_endpoint_rds_reports() {
    let env = TestEnv::new("rdsadm").await;
    let (_, secret_arn) = rds_instance(&env).await;
    let s = deployment(env, &secret_arn).await;

    let (status, body) = call(&s.service, "POST", "/v1/credentials/ci", Some(r#"{"ttl_seconds": 600}"#), CI).await;
    assert_eq!(status, 201, "{body}");
    let (user, password, lease) = (text(&body, "username"), text(&body, "password"), text(&body, "lease_id"));
    // The host and port RDS reports, with the engine's default database.
    assert_eq!((body["host"].as_str(), body["port"].as_u64()), (Some("localhost"), Some(u64::from(s.env.pg.port))));
    assert_eq!((body["engine"].as_str(), body["dbname"].as_str()), (Some("postgres"), Some("postgres")));
    let session = s.env.pg_login(user, password).await.expect("the issued user logs in over verified TLS");
    session.query_one(&format!("SELECT id FROM {}", s.table), &[]).await.expect("through its group");

    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    assert!(!s.env.can_login(user, password).await, "revoked");
    assert!(users(&s).await.is_empty(), "the user is dropped");
}

#[tokio::test]
async fn a_secret_tagged_with_an_instance_that_manages_another_is_refused_and_creates_nothing() {
    let env = TestEnv::new("rdsforge").await;
    let (instance_arn, managed) = rds_instance(&env).await;
    let forged = handmade_secret(&env, "forged", Some(&instance_arn)).await;
    let s = deployment(env, &forged).await;

    let (status, body) = call(&s.service, "POST", "/v1/credentials/ci", None, CI).await;
    assert_eq!(status, 500, "{body}");
    let message = text(&body, "message");
    assert!(message.contains(&forged) && message.contains(&managed), "names both secrets: {message}");
    assert!(message.contains("refused"), "{message}");
    assert!(users(&s).await.is_empty(), "no user");
    let (_, leases) = call(&s.service, "GET", "/v1/leases", None, CI).await;
    assert_eq!(leases["leases"], json!([]), "no lease");
}

#[tokio::test]
async fn a_secret_tagged_with_an_instance_without_a_managed_secret_is_refused() {
    let env = TestEnv::new("rdsnomanaged").await;
    let rds = aws_sdk_rds::Client::new(&env.sdk);
    let id = env.unique("db").replace('_', "-");
    let instance = rds
        .create_db_instance()
        .db_instance_identifier(&id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .port(i32::from(env.pg.port))
        .master_username(&env.pg.admin)
        .master_user_password(random_token())
        .allocated_storage(20)
        .send()
        .await
        .expect("CreateDBInstance")
        .db_instance
        .unwrap();
    env.moto.post("/keyturn-test/rds/endpoint", &json!({"DBInstanceIdentifier": id, "Address": "localhost"}));
    let forged = handmade_secret(&env, "forged", instance.db_instance_arn()).await;
    let s = deployment(env, &forged).await;

    let (status, body) = call(&s.service, "POST", "/v1/credentials/ci", None, CI).await;
    assert_eq!(status, 500, "{body}");
    let message = text(&body, "message");
    assert!(message.contains(&forged) && message.contains("no RDS-managed master user secret"), "{message}");
    assert!(users(&s).await.is_empty(), "no user");
}

#[tokio::test]
async fn an_admin_secret_without_host_or_tag_is_named_in_a_clear_error() {
    let env = TestEnv::new("rdsnotag").await;
    let untagged = handmade_secret(&env, "untagged", None).await;
    let s = deployment(env, &untagged).await;

    let (status, body) = call(&s.service, "POST", "/v1/credentials/ci", None, CI).await;
    assert_eq!(status, 500, "{body}");
    let message = text(&body, "message");
    assert!(message.contains(&format!("role \"ci\"'s admin secret {untagged}")), "{message}");
    assert!(message.contains("missing key \"host\"") && message.contains("aws:rds:primaryDBInstanceArn"), "{message}");
    assert!(users(&s).await.is_empty(), "no user");
}

/// The dedicated admin of docs/sql/postgres-rds-admin.sql, made as the docs say: the script
/// run by the harness's RDS-like master user (not a superuser), its password set by the
/// same master user, the group granted to it WITH ADMIN OPTION as the script's note says,
/// and its login stored as the admin secret the docs show. Issuing, logging in and
/// revoking through it work. PostgreSQL 16 and later refuse the script's GRANT of
/// pg_signal_backend to a master user without ADMIN OPTION on it (the harness's), which
/// the test pins there.
#[tokio::test]
async fn the_documented_dedicated_admin_made_by_the_master_user_issues_and_revokes() {
    use postgres_protocol::escape::{escape_identifier, escape_literal};
    let env = TestEnv::new("rdsdedicated").await;
    let (group, table) = env.pg_group_with_table("grp").await;
    let admin = env.unique("kt_admin");
    let script = keyturn_tests::project_root().join("docs/sql/postgres-rds-admin.sql");
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "host=localhost port={} dbname=postgres user={} sslmode=verify-full sslrootcert={}",
            env.pg.port,
            env.pg.admin,
            env.h.ca_file.display()
        ))
        .args(["-v", &format!("admin={admin}"), "-f"])
        .arg(&script)
        .env("PGPASSWORD", &env.pg.admin_password)
        .output()
        .expect("run psql");
    if env.pg.version_num >= 160000 {
        // The harness's master user holds pg_signal_backend through rds_superuser without
        // ADMIN OPTION, and from 16 that refuses the GRANT, as the script's note says.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("permission denied to grant role \"pg_signal_backend\""),
            "{stderr}"
        );
        return;
    }
    assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    // What psql's \password sends (a SCRAM verifier), sent by the master user.
    let password = random_token();
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let master = env.pg_admin_session().await;
    let (a, g) = (escape_identifier(&admin), escape_identifier(&group));
    master.batch_execute(&format!("ALTER ROLE {a} PASSWORD {}", escape_literal(&verifier))).await.unwrap();
    master.batch_execute(&format!("GRANT {g} TO {a} WITH ADMIN OPTION")).await.unwrap();
    let row = env
        .pg_superuser()
        .await
        .query_one("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1", &[&admin])
        .await
        .unwrap();
    let flags: (bool, bool, bool) = (row.get("rolsuper"), row.get("rolcreaterole"), row.get("rolcreatedb"));
    assert_eq!(flags, (false, true, false), "CREATEROLE and nothing more");

    // The admin secret as docs/database-admins.md shows it.
    let secret = json!({
        "engine": "postgres",
        "host": "localhost",
        "port": env.pg.port,
        "username": admin,
        "password": password,
    });
    let arn = env.create_secret("dedicated", &secret).await;
    let s = deploy_with_admin(env, &arn, group, table, "").await;
    let (status, body) = call(&s.service, "POST", "/v1/credentials/ci", None, CI).await;
    assert_eq!(status, 201, "{body}");
    let (user, user_password, lease) = (text(&body, "username"), text(&body, "password"), text(&body, "lease_id"));
    let session = s.env.pg_login(user, user_password).await.expect("the issued user logs in");
    session.query_one(&format!("SELECT id FROM {}", s.table), &[]).await.expect("through its group");
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    assert!(session.simple_query("SELECT 1").await.is_err(), "its session is ended (pg_signal_backend)");
    assert!(users(&s).await.is_empty(), "the user is dropped");
}
