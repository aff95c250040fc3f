//! Short-lived PostgreSQL users ([`DynamicUsers`]) against a real server: a new user logs
//! in and works through its group, the server itself refuses it after its expiry, and
//! deleting it ends its sessions, keeps what it created (owned by the group), and
//! succeeds again when it is already gone.

use std::time::{Duration, SystemTime};

use keyturn::backend::postgres::PostgresBackend;
use keyturn::backend::{
    BackendError, DeleteUser, DynamicUsers, Endpoint, ListUsers, NewUser, Timeouts, TlsMode, UpdateUser, Username,
};
use keyturn_tests::{random_token, TestEnv};
use postgres_protocol::escape::{escape_identifier, escape_literal};

/// A test's environment, the backend as the functions build it, the harness endpoint over
/// verify-full TLS, and a group with a table: (env, backend, endpoint, group, table).
async fn setup(test: &str) -> (TestEnv, PostgresBackend, Endpoint, String, String) {
    let env = TestEnv::new(test).await;
    let backend = env.pg_backend(Timeouts::default());
    let endpoint = env.pg_endpoint(TlsMode::VerifyFull);
    let (group, table) = env.pg_group_with_table("grp").await;
    (env, backend, endpoint, group, table)
}

fn new_user(name: &str, group: &str, password: &str, ttl: Duration) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        groups: vec![group.to_owned()],
        password: password.to_owned().into(),
        expires_at: SystemTime::now() + ttl,
        connection_limit: keyturn::lease::kind::database::DEFAULT_CONNECTION_LIMIT,
    }
}

#[tokio::test]
async fn a_new_user_works_through_its_group_and_its_objects_belong_to_the_group() {
    let (env, backend, endpoint, group, table) = setup("dynnew").await;
    let user = env.unique("kt_u");
    let password = random_token();
    backend
        .new_user(&endpoint, &env.pg_admin_credentials(), new_user(&user, &group, &password, Duration::from_secs(600)))
        .await
        .unwrap();

    let session = env.pg_login(&user, &password).await.expect("the new user logs in");
    let row = session.query_one(&format!("SELECT id FROM {table}"), &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>("id"), 7, "the group's grant works");
    session.batch_execute(&format!("CREATE TABLE {}.made (x int)", escape_identifier(&group))).await.unwrap();
    let owner: String = env
        .pg_superuser()
        .await
        .query_one(
            "SELECT tableowner::text AS owner FROM pg_tables WHERE schemaname = $1 AND tablename = 'made'",
            &[&group],
        )
        .await
        .unwrap()
        .get("owner");
    assert_eq!(owner, group, "what the user creates belongs to the group");
    let until: Option<String> = env
        .pg_superuser()
        .await
        .query_one("SELECT rolvaliduntil::text AS until FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap()
        .get("until");
    assert!(until.is_some(), "VALID UNTIL is set");
    let verifier: String = env
        .pg_superuser()
        .await
        .query_one("SELECT rolpassword AS v FROM pg_authid WHERE rolname = $1", &[&user])
        .await
        .unwrap()
        .get("v");
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "generated passwords get 4096 iterations: {verifier}");

    // Another iteration count, set on the backend, logs in as well.
    let strong = env.pg_backend(Timeouts::default()).with_generated_password_iterations(16);
    let other = env.unique("kt_v");
    strong
        .new_user(&endpoint, &env.pg_admin_credentials(), new_user(&other, &group, &password, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(env.can_login(&other, &password).await);
}

#[tokio::test]
async fn the_server_refuses_an_expired_user_and_an_update_renews_it() {
    let (env, backend, endpoint, group, _) = setup("dynexp").await;
    let user = env.unique("kt_u");
    let password = random_token();
    backend
        .new_user(&endpoint, &env.pg_admin_credentials(), new_user(&user, &group, &password, Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(env.can_login(&user, &password).await);

    // Expiry moved into the past (no sleeping): PostgreSQL itself refuses the login.
    let past = UpdateUser {
        username: Username::parse(&user).unwrap(),
        password: None,
        expires_at: Some(SystemTime::now() - Duration::from_secs(5)),
    };
    backend.update_user(&endpoint, &env.pg_admin_credentials(), past).await.unwrap();
    assert!(!env.can_login(&user, &password).await, "an expired user must be refused by the server");

    // Renewal and a new password are one operation.
    let renewed = random_token();
    let renew = UpdateUser {
        username: Username::parse(&user).unwrap(),
        password: Some(renewed.clone().into()),
        expires_at: Some(SystemTime::now() + Duration::from_secs(600)),
    };
    backend.update_user(&endpoint, &env.pg_admin_credentials(), renew).await.unwrap();
    assert!(env.can_login(&user, &renewed).await);
    assert!(!env.can_login(&user, &password).await);

    let ghost = UpdateUser {
        username: Username::parse(&env.unique("ghost")).unwrap(),
        password: None,
        expires_at: Some(SystemTime::now()),
    };
    let err = backend.update_user(&endpoint, &env.pg_admin_credentials(), ghost).await.unwrap_err();
    assert!(matches!(err, BackendError::NoSuchUser { .. }), "{err}");
}

#[tokio::test]
async fn deleting_ends_sessions_keeps_the_data_and_is_idempotent() {
    let (env, backend, endpoint, group, _) = setup("dyndel").await;
    let user = env.unique("kt_u");
    let password = random_token();
    backend
        .new_user(&endpoint, &env.pg_admin_credentials(), new_user(&user, &group, &password, Duration::from_secs(600)))
        .await
        .unwrap();
    let session = env.pg_login(&user, &password).await.unwrap();
    let g = escape_identifier(&group);
    // One table as the group (the default), one as the user itself.
    session
        .batch_execute(&format!(
            "CREATE TABLE {g}.kept (x int); INSERT INTO {g}.kept VALUES (1);
             SET ROLE NONE; CREATE TABLE {g}.own (x int)"
        ))
        .await
        .unwrap();

    let admin = env.pg_admin_credentials();
    let held_before = memberships_of(&env, admin.username.as_str(), &group).await;
    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: Some(group.clone()) };
    let outcome = backend.delete_user(&endpoint, &admin, request.clone()).await.unwrap();
    assert!(outcome.existed);
    assert_eq!(outcome.sessions_ended, 1);
    assert!(session.simple_query("SELECT 1").await.is_err(), "the open session must be ended");
    assert!(!env.can_login(&user, &password).await, "the login must be refused");
    let owners: Vec<String> = env
        .pg_superuser()
        .await
        .query(
            "SELECT tableowner::text AS owner FROM pg_tables WHERE schemaname = $1 AND tablename IN ('kept', 'own')",
            &[&group],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("owner"))
        .collect();
    assert_eq!(owners, vec![group.clone(), group.clone()], "both tables survive, owned by the group");
    assert_eq!(
        memberships_of(&env, admin.username.as_str(), &group).await,
        held_before,
        "the admin holds no membership it took for the deletion"
    );

    let again = backend.delete_user(&endpoint, &env.pg_admin_credentials(), request).await.unwrap();
    assert!(!again.existed, "deleting a user that is gone succeeds");
}

/// A user's objects given to a group it is not in (so that it passes the group's
/// privileges on to nobody): the RDS-like admin, which has no privileges of that group
/// either, grants it to itself for the transaction and gives it back.
#[tokio::test]
async fn deleting_gives_objects_to_a_group_the_user_is_not_in() {
    let (env, backend, endpoint, group, _) = setup("dynother").await;
    let (other, _) = env.pg_group_with_table("other").await;
    let admin = env.pg_admin_credentials();
    let user = env.unique("kt_u");
    let password = random_token();
    backend.new_user(&endpoint, &admin, new_user(&user, &group, &password, Duration::from_secs(600))).await.unwrap();
    let session = env.pg_login(&user, &password).await.unwrap();
    session
        .batch_execute(&format!("SET ROLE NONE; CREATE TABLE {}.mine (x int)", escape_identifier(&group)))
        .await
        .unwrap();
    let held_before = memberships_of(&env, admin.username.as_str(), &other).await;

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: Some(other.clone()) };
    backend.delete_user(&endpoint, &admin, request).await.unwrap();
    let owner: String = env
        .pg_superuser()
        .await
        .query_one(
            "SELECT tableowner::text AS owner FROM pg_tables WHERE schemaname = $1 AND tablename = 'mine'",
            &[&group],
        )
        .await
        .unwrap()
        .get("owner");
    assert_eq!(owner, other, "the table is the other group's");
    assert_eq!(
        memberships_of(&env, admin.username.as_str(), &other).await,
        held_before,
        "the admin gave the group back"
    );
}

/// The memberships `role` holds in the test's `group` (its user, once dropped, can hold
/// none; other tests' roles are left out, as they change meanwhile): (role it is a
/// member of, grantor, admin option).
async fn memberships_of(env: &TestEnv, role: &str, group: &str) -> Vec<(String, String, bool)> {
    let rows = env
        .pg_superuser()
        .await
        .query(
            "SELECT r.rolname::text AS role, g.rolname::text AS grantor, m.admin_option \
             FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles g ON g.oid = m.grantor \
             WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1) AND r.rolname = $2 ORDER BY 1, 2",
            &[&role, &group],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get("role"), r.get("grantor"), r.get("admin_option"))).collect()
}

/// Runs the self-managed admin script of the docs as the superuser, with Debian's psql (the
/// client a reader would use), and gives the admin a password by its SCRAM verifier.
async fn admin_from_the_docs(env: &TestEnv, name: &str) -> keyturn::backend::Credentials {
    let script = keyturn_tests::project_root().join("docs/sql/postgres-admin.sql");
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &env.pg.port.to_string()])
        .args(["-U", &env.pg.superuser, "-d", "postgres", "-v", &format!("admin={name}"), "-f"])
        .arg(&script)
        .env("PGPASSWORD", &env.pg.superuser_password)
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    let password = random_token();
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let sql = format!("ALTER ROLE {} PASSWORD {}", escape_identifier(name), escape_literal(&verifier));
    env.pg_superuser().await.batch_execute(&sql).await.unwrap();
    keyturn::backend::Credentials { username: Username::parse(name).unwrap(), password: password.into() }
}

/// The admin the docs tell self-managed users to make (CREATEROLE and pg_signal_backend,
/// nothing more) issues, ends the sessions of, and deletes a user that made objects here
/// and in another database; its groups, made by someone else, are granted to it WITH ADMIN
/// OPTION as the script says. The same with a superuser admin, which needs none of it.
#[tokio::test]
async fn the_documented_minimal_admin_and_a_superuser_both_delete_a_user_everywhere() {
    let env = TestEnv::new("dynmin").await;
    let backend = env.pg_backend(Timeouts::default());
    let endpoint = env.pg_endpoint(TlsMode::VerifyFull);
    let (group, table) = env.pg_group_with_table("grp").await;
    let other_db = env.unique("otherdb");
    env.pg_superuser().await.batch_execute(&format!("CREATE DATABASE {}", escape_identifier(&other_db))).await.unwrap();
    let minimal = admin_from_the_docs(&env, &env.unique("minadmin")).await;
    let sql = format!(
        "GRANT {} TO {} WITH ADMIN OPTION",
        escape_identifier(&group),
        escape_identifier(minimal.username.as_str())
    );
    env.pg_superuser().await.batch_execute(&sql).await.unwrap();

    for (which, admin) in [("minimal", minimal), ("superuser", env.pg_superuser_credentials())] {
        let held_before = memberships_of(&env, admin.username.as_str(), &group).await;
        let user = env.unique(&format!("kt_{which}"));
        let password = random_token();
        backend
            .new_user(&endpoint, &admin, new_user(&user, &group, &password, Duration::from_secs(600)))
            .await
            .unwrap_or_else(|e| panic!("{which}: {e}"));
        let session = env.pg_login(&user, &password).await.unwrap();
        session.query_one(&format!("SELECT id FROM {table}"), &[]).await.expect("the group's grant works");
        let there = env.pg_login_to(&other_db, &user, &password).await.unwrap();
        // Default privileges: what any user may make for itself in a database it may reach.
        there.batch_execute("SET ROLE NONE; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC").await.unwrap();

        let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: Some(group.clone()) };
        let outcome = backend.delete_user(&endpoint, &admin, request).await.unwrap_or_else(|e| panic!("{which}: {e}"));
        assert_eq!((outcome.existed, outcome.sessions_ended), (true, 2), "{which}");
        assert!(session.simple_query("SELECT 1").await.is_err(), "{which}: the session here is ended");
        assert!(there.simple_query("SELECT 1").await.is_err(), "{which}: the session there is ended");
        assert!(!env.can_login(&user, &password).await, "{which}");
        let gone = env.pg_superuser().await.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user]).await;
        assert!(gone.unwrap().is_none(), "{which}: the user is dropped");
        assert_eq!(
            memberships_of(&env, admin.username.as_str(), &group).await,
            held_before,
            "{which}: nothing left on the admin"
        );
    }
}

#[tokio::test]
async fn users_are_listed_by_a_literal_prefix() {
    let (env, backend, endpoint, group, _) = setup("dynlist").await;
    let prefix = format!("{}_k%t_", env.unique("p"));
    let mut made = Vec::new();
    for i in 0..3 {
        let user = format!("{prefix}{i} it's \"q\"");
        backend
            .new_user(
                &endpoint,
                &env.pg_admin_credentials(),
                new_user(&user, &group, &random_token(), Duration::from_secs(60)),
            )
            .await
            .unwrap();
        made.push(user);
    }
    // `%` and `_` in the prefix match only themselves.
    let lookalike = prefix.replace("%", "x");
    env.create_role(&format!("{lookalike}0"), &random_token()).await;
    let listed =
        backend.list_users(&endpoint, &env.pg_admin_credentials(), ListUsers { prefix: prefix.clone() }).await.unwrap();
    let listed: Vec<String> = listed.iter().map(|u| u.to_string()).collect();
    assert_eq!(listed, made);
}

/// The harness knows which server it started (Debian's 15, or the 16 or 17 that `make
/// test-pg16` and `make test-pg17` name in `KEYTURN_PG_BIN`), so a test can branch where
/// versions differ: what the binary reports is what the running server says.
#[tokio::test]
async fn the_harness_reports_the_version_of_the_server_it_runs() {
    let env = TestEnv::new("version").await;
    let shown: String =
        env.pg_superuser().await.query_one("SHOW server_version_num", &[]).await.unwrap().get("server_version_num");
    assert_eq!(shown.parse::<u32>().unwrap(), env.pg.version_num);
}
