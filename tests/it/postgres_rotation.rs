//! PostgreSQL rotation against a real server and moto: what a user of the rotation function
//! relies on — logins that work or are refused, stages that moved, users that exist.

use keyturn::rotation::database::Strategy;
use keyturn::rotation::store::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use keyturn::rotation::{Outcome, RotationError, Step};
use keyturn_tests::{random_token, TestEnv, TestRotator};
use postgres_protocol::escape::escape_identifier;
use serde_json::{json, Value};

const STEPS: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

/// A fresh secret set up for `strategy`; returns its ARN.
async fn secret_for(env: &TestEnv, strategy: Strategy) -> String {
    match strategy {
        Strategy::SingleUser => single_user_secret(env, "app").await.0,
        Strategy::AlternatingUsers => alternating_secret(env, "app").await.0,
    }
}

/// A single-user secret for a new role; returns (arn, username, password).
async fn single_user_secret(env: &TestEnv, name: &str) -> (String, String, String) {
    let user = env.unique(name);
    let password = random_token();
    env.create_role(&user, &password).await;
    let arn = env.create_secret(name, &env.user_secret(&user, &password)).await;
    (arn, user, password)
}

async fn role_exists(env: &TestEnv, name: &str) -> bool {
    let admin = env.pg_superuser().await;
    admin.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name]).await.unwrap().is_some()
}

fn stage_of<'a>(
    stages: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    stage: &str,
) -> Option<&'a str> {
    stages.iter().find(|(_, s)| s.contains(stage)).map(|(id, _)| id.as_str())
}

#[tokio::test]
async fn single_user_three_rotations() {
    let env = TestEnv::new("single3").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, first) = single_user_secret(&env, "app").await;
    let mut old = vec![first];
    for _ in 0..3 {
        let token = env.rotate(&rotator, &arn).await;
        let stages = env.stages(&arn).await;
        assert_eq!(stage_of(&stages, AWSCURRENT), Some(token.as_str()));
        assert_eq!(stage_of(&stages, AWSPENDING), None, "AWSPENDING left behind: {stages:?}");
        let (current_user, current) = env.login_of(&arn, AWSCURRENT).await;
        assert_eq!(current_user, user);
        assert!(env.can_login(&user, &current).await, "AWSCURRENT does not log in");
        for password in &old {
            assert!(!env.can_login(&user, password).await, "an old password still logs in");
        }
        assert_eq!(env.login_of(&arn, AWSPREVIOUS).await.1, *old.last().unwrap());
        old.push(current);
    }
    env.assert_no_password_logged(&arn).await;
}

/// An alternating pair: `app` with a membership and a schema it owns objects in, its
/// secret and the admin secret (the harness's RDS-like admin). Returns (arn, user).
async fn alternating_secret(env: &TestEnv, name: &str) -> (String, String) {
    alternating_secret_with(env, name, env.admin_secret()).await
}

/// [`alternating_secret`] with another admin secret.
async fn alternating_secret_with(env: &TestEnv, name: &str, admin_secret: Value) -> (String, String) {
    let user = env.unique(name);
    let password = random_token();
    env.create_role(&user, &password).await;
    let (u, readers, schema) = (
        escape_identifier(&user),
        escape_identifier(&format!("{user}_readers")),
        escape_identifier(&format!("{user}_s")),
    );
    // Roles as a user of RDS makes them, as the admin (RDS's master user); the schema as an
    // application's migrations would (an owner keyturn's admin need not be).
    env.pg_admin_session()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {readers} NOLOGIN; GRANT {readers} TO {u}; ALTER ROLE {u} CREATEDB CONNECTION LIMIT 20"
        ))
        .await
        .expect("set up the original user");
    env.pg_superuser()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION {u}"))
        .await
        .expect("the original user's schema");
    let admin_arn = env.create_secret(&format!("{name}-admin"), &admin_secret).await;
    let mut secret = env.user_secret(&user, &password);
    secret["masterarn"] = json!(admin_arn);
    let arn = env.create_secret(name, &secret).await;
    (arn, user)
}

async fn session(env: &TestEnv, user: &str, password: &str) -> tokio_postgres::Client {
    env.pg_login(user, password).await.expect("login")
}

#[tokio::test]
async fn alternating_users_three_rotations() {
    let env = TestEnv::new("alt3").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (arn, user) = alternating_secret(&env, "app").await;
    let clone = format!("{user}_clone");
    let schema = format!("\"{user}_s\"");
    let mut expected_user = clone.clone();
    let mut history: Vec<(String, String)> = vec![env.login_of(&arn, AWSCURRENT).await];
    for round in 0..3 {
        env.rotate(&rotator, &arn).await;
        let current = env.login_of(&arn, AWSCURRENT).await;
        assert_eq!(current.0, expected_user, "round {round}");
        assert!(env.can_login(&current.0, &current.1).await, "AWSCURRENT does not log in");
        let previous = env.login_of(&arn, AWSPREVIOUS).await;
        assert_eq!(&previous, history.last().unwrap());
        assert!(env.can_login(&previous.0, &previous.1).await, "AWSPREVIOUS must stay valid until the next rotation");
        if history.len() >= 2 {
            let (u, p) = &history[history.len() - 2];
            assert!(!env.can_login(u, p).await, "the credentials of two rotations ago must be refused");
        }
        expected_user = if expected_user == clone { user.clone() } else { clone.clone() };
        history.push(current);
        if round == 0 {
            // Changes to the original after the clone exists reach it at its next rotation:
            // a membership given, one taken away, an attribute changed.
            let (u, writers) = (escape_identifier(&user), escape_identifier(&format!("{user}_writers")));
            let readers = escape_identifier(&format!("{user}_readers"));
            let sql = format!(
                "CREATE ROLE {writers} NOLOGIN; GRANT {writers} TO {u}; REVOKE {readers} FROM {u}; \
                 ALTER ROLE {u} CONNECTION LIMIT 25"
            );
            env.pg_admin_session().await.batch_execute(&sql).await.unwrap();
        }
    }

    // Same memberships and attributes, and objects either user creates usable by the other.
    let admin = env.pg_superuser().await;
    // Direct memberships only: through the original the clone would inherit them anyway.
    let row = admin
        .query_one(
            "SELECT c.rolcreatedb, c.rolconnlimit, ARRAY(SELECT r.rolname::text FROM pg_auth_members m \
             JOIN pg_roles r ON r.oid = m.roleid WHERE m.member = c.oid ORDER BY 1) FROM pg_roles c WHERE c.rolname = $1",
            &[&clone],
        )
        .await
        .unwrap();
    let mut expected_roles = vec![user.clone(), format!("{user}_writers")];
    expected_roles.sort();
    assert_eq!((row.get::<_, bool>(0), row.get::<_, i32>(1), row.get::<_, Vec<String>>(2)), (true, 25, expected_roles));
    let by_password: std::collections::HashMap<String, String> = history.iter().rev().take(2).cloned().collect();
    let original = session(&env, &user, &by_password[&user]).await;
    let cloned = session(&env, &clone, &by_password[&clone]).await;
    cloned
        .batch_execute(&format!(
            "CREATE TABLE {schema}.made_by_clone (x int); INSERT INTO {schema}.made_by_clone VALUES (1)"
        ))
        .await
        .unwrap();
    original.batch_execute(&format!("CREATE TABLE {schema}.made_by_original (x int)")).await.unwrap();
    original
        .batch_execute(&format!(
            "INSERT INTO {schema}.made_by_clone VALUES (2); ALTER TABLE {schema}.made_by_clone ADD COLUMN y int"
        ))
        .await
        .expect("the original must be able to use and alter what the clone created");
    cloned
        .batch_execute(&format!(
            "INSERT INTO {schema}.made_by_original VALUES (3); DROP TABLE {schema}.made_by_original"
        ))
        .await
        .expect("the clone must be able to use and drop what the original created");
    env.assert_no_password_logged(&arn).await;
}

#[tokio::test]
async fn every_step_run_twice_converges() {
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let env = TestEnv::new("twice").await;
        let rotator = env.rotator(strategy);
        let arn = secret_for(&env, strategy).await;
        let token = env.start_rotation(&arn).await;
        let mut pending_value: Option<Value> = None;
        for step in STEPS {
            env.step(&rotator, &arn, &token, step).await.unwrap();
            let again = env.step(&rotator, &arn, &token, step).await.unwrap();
            match step {
                Step::Create => {
                    assert_eq!(again, Outcome::AlreadyDone);
                    pending_value = Some(env.value(&arn, AWSPENDING).await);
                }
                Step::Finish => assert_eq!(again, Outcome::AlreadyCurrent),
                _ => {}
            }
        }
        let current = env.value(&arn, AWSCURRENT).await;
        assert_eq!(Some(&current), pending_value.as_ref(), "a rerun of createSecret must not replace the value");
        let (u, p) = env.login_of(&arn, AWSCURRENT).await;
        assert!(env.can_login(&u, &p).await);
    }
}

#[tokio::test]
async fn a_rotation_stopped_after_any_step_and_restarted_converges() {
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        for stop_after in 1..=4 {
            let env = TestEnv::new("crash").await;
            let rotator = env.rotator(strategy);
            let arn = secret_for(&env, strategy).await;
            let token = env.start_rotation(&arn).await;
            for step in &STEPS[..stop_after] {
                env.step(&rotator, &arn, &token, *step).await.unwrap();
            }
            // Secrets Manager retries the rotation from the start with the same token.
            for step in STEPS {
                env.step(&rotator, &arn, &token, step).await.unwrap_or_else(|e| {
                    panic!("{strategy:?}, stopped after {stop_after}, rerun {}: {e}", step.as_str())
                });
            }
            let stages = env.stages(&arn).await;
            assert_eq!(stage_of(&stages, AWSCURRENT), Some(token.as_str()));
            assert_eq!(stage_of(&stages, AWSPENDING), None);
            let (u, p) = env.login_of(&arn, AWSCURRENT).await;
            assert!(env.can_login(&u, &p).await, "{strategy:?} stopped after {stop_after}");
        }
    }
}

#[tokio::test]
async fn an_abandoned_rotation_heals() {
    let env = TestEnv::new("heal").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, _) = single_user_secret(&env, "app").await;
    env.rotate(&rotator, &arn).await; // so AWSPREVIOUS exists too

    // A rotation changes the database, then is abandoned.
    let abandoned = env.abandon_after_set(&rotator, &arn).await;
    let (cur_user, cur_password) = env.login_of(&arn, AWSCURRENT).await;
    assert!(!env.can_login(&cur_user, &cur_password).await, "setup: the database must have left AWSCURRENT behind");

    let token = env.rotate(&rotator, &arn).await;
    let (_, healed) = env.login_of(&arn, AWSCURRENT).await;
    assert!(env.can_login(&user, &healed).await);
    assert_eq!(stage_of(&env.stages(&arn).await, AWSCURRENT), Some(token.as_str()));
    let logs = keyturn_tests::captured_logs();
    assert!(
        logs.lines().any(|l| l.contains(&format!("version {abandoned}")) && l.contains("password changed")),
        "the log must say which version matched"
    );
}

/// AWSCURRENT as it was and, for input refused at createSecret, no pending value stored.
async fn assert_unchanged(env: &TestEnv, arn: &str, before: &Value) {
    assert_eq!(&env.value(arn, AWSCURRENT).await, before, "AWSCURRENT changed");
    let stages = env.stages(arn).await;
    let pending = stage_of(&stages, AWSPENDING).expect("the failed rotation stays pending");
    let stored = env.sm.get_secret_value().secret_id(arn).version_id(pending).send().await;
    if let Ok(stored) = stored {
        assert_eq!(stored.secret_string(), None, "a pending value was stored for {arn}");
    }
}

#[tokio::test]
async fn bad_secrets_are_refused_and_change_nothing() {
    let env = TestEnv::new("bad").await;
    let user = env.unique("app");
    let password = random_token();
    env.create_role(&user, &password).await;
    let good = env.user_secret(&user, &password);
    let mut no_host = good.clone();
    no_host.as_object_mut().unwrap().remove("host");
    let mut oracle = good.clone();
    oracle["engine"] = json!("oracle");
    let mut unreachable = good.clone();
    unreachable["port"] = json!(keyturn_tests::process::free_port());
    let mut missing_admin = good.clone();
    missing_admin["masterarn"] = json!("arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf");
    let long_user = format!("{}{}", user, "x".repeat(63 - user.len()));

    let cases: Vec<(&str, Strategy, Value, &str)> = vec![
        ("malformed", Strategy::SingleUser, json!("{\"engine\": \"postgres\", "), "malformed JSON"),
        ("nohost", Strategy::SingleUser, no_host, "missing key \"host\""),
        ("oracle", Strategy::SingleUser, oracle, "unknown engine \"oracle\""),
        ("noadmin", Strategy::AlternatingUsers, good.clone(), "missing key \"masterarn\""),
        ("badadmin", Strategy::AlternatingUsers, missing_admin, "nope-AbCdEf"),
        (
            "long",
            Strategy::AlternatingUsers,
            {
                let mut v = env.user_secret(&long_user, &password);
                v["masterarn"] = json!("unused");
                v
            },
            "over the 63-byte limit",
        ),
        ("unreachable", Strategy::SingleUser, unreachable, "cannot connect"),
    ];
    for (name, strategy, value, expected) in cases {
        let raw = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let arn = env
            .sm
            .create_secret()
            .name(env.unique(name))
            .secret_string(raw)
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_owned();
        let before = env.sm.get_secret_value().secret_id(&arn).version_stage(AWSCURRENT).send().await.unwrap();
        let err = env.rotation_error(&env.rotator(strategy), &arn).await;
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains(&arn), "{name}: the error must name the secret: {message}");
        assert!(!message.contains(&password), "{name}: the error shows a password");
        let after = env.sm.get_secret_value().secret_id(&arn).version_stage(AWSCURRENT).send().await.unwrap();
        assert_eq!(before.secret_string(), after.secret_string(), "{name}: AWSCURRENT changed");
        if let Ok(v) = serde_json::from_str::<Value>(before.secret_string().unwrap()) {
            // An unreachable host is only found at setSecret, after the pending value is stored.
            if v.is_object() && name != "unreachable" {
                assert_unchanged(&env, &arn, &v).await;
            }
        }
        assert!(env.can_login(&user, &password).await, "{name}: the database password changed");
        assert!(!role_exists(&env, &format!("{user}_clone")).await, "{name}: a clone was created");
    }
}

#[tokio::test]
async fn bad_tokens_and_disabled_rotation_are_refused() {
    let env = TestEnv::new("tokens").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, password) = single_user_secret(&env, "app").await;

    // Rotation never enabled.
    let version = stage_of(&env.stages(&arn).await, AWSCURRENT).unwrap().to_owned();
    let err = env.step(&rotator, &arn, &version, Step::Create).await.unwrap_err();
    assert!(matches!(err, RotationError::RotationDisabled { .. }), "{err}");
    assert!(err.to_string().contains(&arn));

    let token = env.start_rotation(&arn).await;
    let err = env.step(&rotator, &arn, &random_token(), Step::Create).await.unwrap_err();
    assert!(matches!(err, RotationError::UnknownToken { .. }), "{err}");
    // Move the pending label away: the token is a version, but not staged AWSPENDING.
    env.sm
        .update_secret_version_stage()
        .secret_id(&arn)
        .version_stage(AWSPENDING)
        .remove_from_version_id(&token)
        .send()
        .await
        .unwrap();
    let other = env.start_rotation(&arn).await;
    assert_ne!(other, token);
    let err = env.step(&rotator, &arn, &token, Step::Set).await;
    // AWS leaves unlabelled versions out of VersionIdsToStages (UnknownToken); moto lists
    // them with no labels (NotPending). Either is a refusal.
    assert!(matches!(err, Err(RotationError::NotPending { .. }) | Err(RotationError::UnknownToken { .. })), "{err:?}");
    assert!(env.can_login(&user, &password).await, "nothing may change");
    assert_eq!(env.login_of(&arn, AWSCURRENT).await.1, password);
}

#[tokio::test]
async fn tls_is_verified_and_never_downgraded() {
    // A server that also takes plaintext, so that any fallback to it would succeed.
    let env = TestEnv::accepting_plaintext("tls").await;
    let (arn, user, password) = single_user_secret(&env, "app").await;

    // The certificate names "localhost" only: 127.0.0.1 is the right server under the wrong
    // name. The server also accepts plaintext, so any fallback would succeed.
    let mut wrong_name = env.user_secret(&user, &password);
    wrong_name["host"] = json!("127.0.0.1");
    let wrong = env.create_secret("wrongname", &wrong_name).await;
    let err = env.rotation_error(&env.rotator(Strategy::SingleUser), &wrong).await;
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(env.can_login(&user, &password).await);

    // Without the harness CA (system and RDS roots only) the server is not trusted.
    let untrusted = {
        let tls = keyturn::backend::tls::client_config(&[]).unwrap();
        let backend = keyturn::backend::postgres::PostgresBackend::new(tls, Default::default());
        let target = keyturn::rotation::database::DatabaseRotation::new(
            backend,
            keyturn::aws::rds::RdsClient::new(&env.sdk),
            Strategy::SingleUser,
            Default::default(),
        );
        keyturn::rotation::Rotator::new(keyturn::aws::secretsmanager::SecretsManagerStore::new(&env.sdk, None), target)
    };
    let token = env.start_rotation(&arn).await;
    env.step(&untrusted, &arn, &token, Step::Create).await.unwrap();
    let err = env.step(&untrusted, &arn, &token, Step::Set).await.unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(env.can_login(&user, &password).await);

    // With the CA the same rotation goes through over verified TLS.
    let rotator = env.rotator(Strategy::SingleUser);
    for step in [Step::Set, Step::Test, Step::Finish] {
        env.step(&rotator, &arn, &token, step).await.unwrap();
    }
    let admin = env.pg_superuser().await;
    let tls_sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND usename = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tls_sessions, 0, "keyturn's sessions are closed after each step");

    // "ssl": false is the only way to plaintext.
    let (plain_arn, plain_user, _) = single_user_secret(&env, "plain").await;
    let mut plain = env.value(&plain_arn, AWSCURRENT).await;
    plain["ssl"] = json!(false);
    env.sm.put_secret_value().secret_id(&plain_arn).secret_string(plain.to_string()).send().await.unwrap();
    env.rotate(&rotator, &plain_arn).await;
    let (_, p) = env.login_of(&plain_arn, AWSCURRENT).await;
    assert!(env.can_login(&plain_user, &p).await);
    assert_eq!(env.value(&plain_arn, AWSCURRENT).await["ssl"], json!(false), "unknown and optional keys are kept");
}

#[tokio::test]
async fn hostile_usernames_work_and_inject_nothing() {
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let env = TestEnv::new("quote").await;
        let rotator = env.rotator(strategy);
        for suffix in ["o'brien \"the\" user", "ünïcødé ユーザー", "x\"; DROP ROLE postgres; --"] {
            let user = env.unique(suffix);
            let password = random_token();
            env.create_role(&user, &password).await;
            let mut secret = env.user_secret(&user, &password);
            if strategy == Strategy::AlternatingUsers {
                secret["masterarn"] = json!(env.create_secret(&format!("m{}", user.len()), &env.admin_secret()).await);
            }
            let arn = env.create_secret(&format!("q{}", user.len()), &secret).await;
            env.rotate(&rotator, &arn).await;
            env.rotate(&rotator, &arn).await;
            let (u, p) = env.login_of(&arn, AWSCURRENT).await;
            assert!(env.can_login(&u, &p).await, "{strategy:?} {user:?}");
            assert!(role_exists(&env, &user).await);
        }
        assert!(role_exists(&env, "postgres").await, "injection");
    }
}

#[tokio::test]
async fn an_rds_managed_admin_secret_is_located_through_rds() {
    let env = TestEnv::new("rds").await;
    let rds = aws_sdk_rds::Client::new(&env.sdk);
    // An instance whose master user secret RDS manages: credentials only, tagged with the instance.
    let instance = rds
        .create_db_instance()
        .db_instance_identifier(env.unique("db").replace('_', "-"))
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .master_username("postgres")
        .manage_master_user_password(true)
        .allocated_storage(20)
        .send()
        .await
        .expect("CreateDBInstance")
        .db_instance
        .unwrap();
    let instance_arn = instance.db_instance_arn().unwrap().to_owned();
    let address = instance.endpoint().and_then(|e| e.address()).unwrap().to_owned();
    let managed = instance.master_user_secret().and_then(|s| s.secret_arn()).unwrap().to_owned();

    let found =
        keyturn::rotation::database::RdsLookup::instance(&keyturn::aws::rds::RdsClient::new(&env.sdk), &instance_arn)
            .await
            .unwrap();
    assert_eq!((found.host.as_str(), found.engine.as_str()), (address.as_str(), "postgres"));
    assert_eq!(found.master_user_secret.as_deref(), Some(managed.as_str()));

    let user = env.unique("app");
    let password = random_token();
    env.create_role(&user, &password).await;
    let mut secret = env.user_secret(&user, &password);
    secret["masterarn"] = json!(managed);
    let arn = env.create_secret("app", &secret).await;
    // The user secret points at this machine, the instance elsewhere: the mismatch is
    // caught before anything changes, and the message shows the host came from RDS.
    let err = env.rotation_error(&env.rotator(Strategy::AlternatingUsers), &arn).await;
    assert!(err.to_string().contains(&address), "{err}");
    assert!(!role_exists(&env, &format!("{user}_clone")).await);

    // A secret made by hand with the tag RDS puts on its own is not the instance's secret.
    let forged = env
        .sm
        .create_secret()
        .name(env.unique("rds-forged"))
        .secret_string(json!({"username": env.pg.admin, "password": env.pg.admin_password}).to_string())
        .tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key("aws:rds:primaryDBInstanceArn")
                .value(&instance_arn)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    secret["masterarn"] = json!(forged);
    let arn = env.create_secret("app2", &secret).await;
    let err = env.rotation_error(&env.rotator(Strategy::AlternatingUsers), &arn).await.to_string();
    assert!(err.contains(&managed) && err.contains("master user secret is another one"), "{err}");
    assert!(!role_exists(&env, &format!("{user}_clone")).await);
}

#[tokio::test]
async fn passwords_with_every_printable_character_work() {
    let policy = keyturn::password::PasswordPolicy::new(96, "").unwrap();
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let env = TestEnv::new("chars").await;
        let rotator = env.rotator_with(strategy, policy.clone());
        let arn = secret_for(&env, strategy).await;
        for _ in 0..3 {
            env.rotate(&rotator, &arn).await;
            let (u, p) = env.login_of(&arn, AWSCURRENT).await;
            assert!(env.can_login(&u, &p).await, "{strategy:?}");
        }
        env.assert_no_password_logged(&arn).await;
    }
}

#[tokio::test]
async fn a_blocked_statement_is_cut_by_the_statement_timeout() {
    use keyturn::backend::{BackendError, Credentials, DatabaseBackend, SetOwnPassword, Timeouts, TlsMode, Username};
    let env = TestEnv::new("stmt").await;
    let user = env.unique("app");
    let password = random_token();
    env.create_role(&user, &password).await;
    // Another session holds the role's row: keyturn's ALTER ROLE has to wait for it.
    let mut blocker = env.pg_superuser().await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&format!("ALTER ROLE {} CONNECTION LIMIT 5", escape_identifier(&user))).await.unwrap();

    let timeouts =
        Timeouts { connect: std::time::Duration::from_secs(5), statement: std::time::Duration::from_secs(1) };
    let backend = env.pg_backend(timeouts);
    let endpoint = env.pg_endpoint(TlsMode::VerifyFull);
    let login = Credentials { username: Username::parse(&user).unwrap(), password: password.clone().into() };
    let started = std::time::Instant::now();
    let new_password = random_token().into();
    let err = backend.set_own_password(&endpoint, SetOwnPassword { login: &login, new_password: &new_password }).await;
    let err = err.unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "waited {:?}", started.elapsed());
    assert!(matches!(&err, BackendError::Database { .. }) && err.to_string().contains("statement timeout"), "{err}");
    assert!(err.is_retryable(), "a timed-out statement may succeed later: {err}");
    tx.rollback().await.unwrap();
    assert!(env.can_login(&user, &password).await, "the password did not change");
}

/// The clone's superuser-only attributes and admin options: (SUPERUSER, REPLICATION,
/// BYPASSRLS, admin option on `group`, member of `group`).
async fn privileges_of(env: &TestEnv, role: &str, group: &str) -> (bool, bool, bool, bool, bool) {
    let row = env
        .pg_superuser()
        .await
        .query_one(
            "SELECT r.rolsuper, r.rolreplication, r.rolbypassrls, \
             COALESCE(bool_or(m.admin_option), false) AS admin_option, count(m.roleid) > 0 AS member \
             FROM pg_roles r LEFT JOIN pg_auth_members m ON m.member = r.oid \
             AND m.roleid = (SELECT oid FROM pg_roles WHERE rolname = $2) \
             WHERE r.rolname = $1 GROUP BY r.rolsuper, r.rolreplication, r.rolbypassrls",
            &[&role, &group],
        )
        .await
        .unwrap();
    (
        row.get("rolsuper"),
        row.get("rolreplication"),
        row.get("rolbypassrls"),
        row.get("admin_option"),
        row.get("member"),
    )
}

/// With a superuser admin (a self-managed server): only a superuser may give a clone
/// SUPERUSER, REPLICATION or BYPASSRLS, and take them away again.
#[tokio::test]
async fn clone_privileges_follow_the_original_down() {
    let env = TestEnv::new("drift").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (arn, user) = alternating_secret_with(&env, "app", env.superuser_secret()).await;
    let (clone, group) = (format!("{user}_clone"), format!("{user}_grp"));
    let (u, g) = (escape_identifier(&user), escape_identifier(&group));
    let admin = env.pg_superuser().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {g} NOLOGIN; GRANT {g} TO {u} WITH ADMIN OPTION; ALTER ROLE {u} SUPERUSER REPLICATION BYPASSRLS"
        ))
        .await
        .unwrap();
    env.rotate(&rotator, &arn).await;
    assert_eq!(privileges_of(&env, &clone, &group).await, (true, true, true, true, true), "the clone copies them");

    admin
        .batch_execute(&format!(
            "ALTER ROLE {u} NOSUPERUSER NOREPLICATION NOBYPASSRLS; REVOKE ADMIN OPTION FOR {g} FROM {u}"
        ))
        .await
        .unwrap();
    // The next rotation sets the original's password; the one after re-shapes the clone.
    env.rotate(&rotator, &arn).await;
    env.rotate(&rotator, &arn).await;
    assert_eq!(privileges_of(&env, &user, &group).await, (false, false, false, false, true));
    assert_eq!(
        privileges_of(&env, &clone, &group).await,
        (false, false, false, false, true),
        "what the original lost, the clone must lose"
    );
}

/// How many connections of `user` the server's pg_hba.conf refused (its log says so for each).
fn hba_refusals(env: &TestEnv, user: &str) -> usize {
    let log = std::fs::read_to_string(&env.pg.log_file).expect("read postgres.log");
    let user = format!("user \"{user}\"");
    log.lines().filter(|l| l.contains("no pg_hba.conf entry") && l.contains(&user)).count()
}

/// RDS for PostgreSQL 15 and later takes TLS only (`rds.force_ssl = 1`), as the harness
/// server does: a secret with `"ssl": false` gets "no pg_hba.conf entry", which is no verdict
/// on any password. Rotation stops there and says so, instead of trying every older version
/// and ending in "none of the secret's versions logs in".
#[tokio::test]
async fn a_secret_without_tls_fails_clearly_where_the_server_requires_tls_and_changes_nothing() {
    use keyturn::backend::BackendError;
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let env = TestEnv::new("notls").await;
        let rotator = env.rotator(strategy);
        let arn = secret_for(&env, strategy).await;
        // Two rotations over TLS: AWSPREVIOUS and an unlabelled version exist to be tried.
        env.rotate(&rotator, &arn).await;
        env.rotate(&rotator, &arn).await;
        let (previous_user, previous_password) = env.login_of(&arn, AWSPREVIOUS).await;
        let mut plain = env.value(&arn, AWSCURRENT).await;
        plain["ssl"] = json!(false);
        env.sm.put_secret_value().secret_id(&arn).secret_string(plain.to_string()).send().await.unwrap();
        let (user, password) = env.login_of(&arn, AWSCURRENT).await;
        let before = env.stages(&arn).await;

        let token = env.start_rotation(&arn).await;
        env.step(&rotator, &arn, &token, Step::Create).await.unwrap();
        let err = env.step(&rotator, &arn, &token, Step::Set).await.unwrap_err();
        let RotationError::Backend { source: BackendError::ConnectionNotAllowed { tls: false, .. }, .. } = &err else {
            panic!("{strategy:?}: {err:?}");
        };
        let message = err.to_string();
        for expected in [format!("localhost:{}", env.pg.port), "requires TLS".into(), "\"ssl\": false".into()] {
            assert!(message.contains(&expected), "{strategy:?}: {message}");
        }
        assert!(!message.contains(&password), "the message holds the password");
        assert!(!err.is_retryable(), "{strategy:?}");
        assert_eq!(hba_refusals(&env, &user), 1, "{strategy:?}: one connection, no other version tried");

        let after = env.stages(&arn).await;
        for stage in [AWSCURRENT, AWSPREVIOUS] {
            assert_eq!(stage_of(&after, stage), stage_of(&before, stage), "{strategy:?}: {stage} moved");
        }
        assert_eq!(stage_of(&after, AWSPENDING), Some(token.as_str()));
        assert!(env.can_login(&user, &password).await, "{strategy:?}: the password changed");
        if strategy == Strategy::AlternatingUsers {
            assert!(env.can_login(&previous_user, &previous_password).await, "the other user's password changed");
        }
        let logs = keyturn_tests::captured_logs();
        assert!(
            logs.lines().any(|l| l.contains(&arn)
                && l.contains(r#""error_kind":"Backend""#)
                && l.contains(r#""backend_error_kind":"ConnectionNotAllowed""#)),
            "{strategy:?}: the step's log line names the kind"
        );
    }
}

/// Servers send their certificate alone, without the intermediate CA, as RDS does: the
/// bundle keyturn is given (root and intermediate, as RDS's `global-bundle.pem`) verifies
/// it, the root alone does not, and a server whose certificate another CA signed, for the
/// right name, is refused.
#[tokio::test]
async fn only_a_server_certificate_from_the_bundle_is_trusted() {
    use keyturn::backend::postgres::PostgresBackend;
    use keyturn::backend::{tls, BackendError, Credentials, DatabaseBackend, Endpoint, TlsMode, Username};
    use keyturn_tests::{pki, postgres};
    let env = TestEnv::new("chain").await;
    let user = env.unique("app");
    let password = random_token();
    env.create_role(&user, &password).await;
    let login = Credentials { username: Username::parse(&user).unwrap(), password: password.into() };
    let endpoint = env.pg_endpoint(TlsMode::VerifyFull);
    env.pg_backend(Default::default()).verify(&endpoint, &login).await.expect("the bundle verifies the server");

    let root_only = tls::client_config(std::slice::from_ref(&env.h.pki().root_cert)).unwrap();
    let err = PostgresBackend::new(root_only, Default::default()).verify(&endpoint, &login).await.unwrap_err();
    assert!(matches!(err, BackendError::Tls { .. }) && err.to_string().contains("UnknownIssuer"), "{err}");

    let dir = env.h.work.join(env.unique("other-ca"));
    let other = pki::generate(&dir, "other", &["localhost"]);
    let other_bundle = other.ca_bundle.clone();
    let server = tokio::task::spawn_blocking(move || postgres::start(&dir.join("pg"), &other)).await.unwrap();
    let there = Endpoint { port: server.port, ..endpoint.clone() };
    let admin = Credentials {
        username: Username::parse(&server.superuser).unwrap(),
        password: server.superuser_password.clone().into(),
    };
    let err = env.pg_backend(Default::default()).verify(&there, &admin).await.unwrap_err();
    assert!(matches!(err, BackendError::Tls { .. }) && err.to_string().contains("UnknownIssuer"), "{err}");
    let own_bundle = tls::client_config(&[other_bundle]).unwrap();
    PostgresBackend::new(own_bundle, Default::default())
        .verify(&there, &admin)
        .await
        .expect("the same server with its own CA bundle");
}

/// A rotation abandoned before setSecret: its version keeps a value and loses its label.
async fn abandon_after_create(env: &TestEnv, rotator: &keyturn_tests::TestRotator, arn: &str) -> String {
    let token = env.start_rotation(arn).await;
    env.step(rotator, arn, &token, Step::Create).await.expect("createSecret");
    env.sm
        .update_secret_version_stage()
        .secret_id(arn)
        .version_stage(AWSPENDING)
        .remove_from_version_id(&token)
        .send()
        .await
        .expect("UpdateSecretVersionStage");
    token
}

/// The password of version `id`.
async fn password_of(env: &TestEnv, arn: &str, id: &str) -> String {
    let out = env.sm.get_secret_value().secret_id(arn).version_id(id).send().await.unwrap();
    let value: Value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
    value["password"].as_str().unwrap().to_owned()
}

/// Secrets Manager removes unlabelled versions once a secret has more than about 100. When
/// the one an abandoned rotation left the database on is gone, no version logs in: the
/// rotation says so, with what to do, and changes nothing.
#[tokio::test]
async fn a_removed_version_that_held_the_password_ends_in_a_clear_error() {
    let env = TestEnv::new("removed").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, _) = single_user_secret(&env, "app").await;
    env.rotate(&rotator, &arn).await;
    let oldest = env.abandon_after_set(&rotator, &arn).await; // the database is on its password
    let newer = abandon_after_create(&env, &rotator, &arn).await; // a value that never reached it
    let held = password_of(&env, &arn, &oldest).await;
    env.remove_secret_version(&arn, &oldest, false);
    let before = env.stages(&arn).await;
    assert!(!before.contains_key(&oldest), "setup: the version is removed");
    assert!(before.contains_key(&newer));

    let err = env.rotation_error(&rotator, &arn).await;
    assert_eq!(err.kind(), "NoWorkingCredentials", "{err}");
    let message = err.to_string();
    assert!(message.contains("and 1 older versions"), "{message}");
    assert!(message.contains("set the user's password to AWSCURRENT's by hand"), "{message}");
    assert!(env.can_login(&user, &held).await, "the database's password changed");
    let after = env.stages(&arn).await;
    for stage in [AWSCURRENT, AWSPREVIOUS] {
        assert_eq!(stage_of(&after, stage), stage_of(&before, stage), "{stage} moved");
    }
}

/// A version removed while rotation reads the unlabelled ones (listed, then gone when read)
/// is skipped and counted; the version that holds the password still heals the rotation.
#[tokio::test]
async fn removed_versions_do_not_stop_self_healing() {
    let env = TestEnv::new("removedheal").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, _) = single_user_secret(&env, "app").await;
    env.rotate(&rotator, &arn).await;
    let oldest = env.abandon_after_set(&rotator, &arn).await;
    let holder = env.abandon_after_set(&rotator, &arn).await; // the database is on its password
    let newest = abandon_after_create(&env, &rotator, &arn).await;
    env.remove_secret_version(&arn, &oldest, false);
    env.remove_secret_version(&arn, &newest, true);

    let token = env.rotate(&rotator, &arn).await;
    let stages = env.stages(&arn).await;
    assert_eq!(stage_of(&stages, AWSCURRENT), Some(token.as_str()));
    assert!(!stages.contains_key(&newest), "setup: the version was removed after it was listed");
    let (_, healed) = env.login_of(&arn, AWSCURRENT).await;
    assert!(env.can_login(&user, &healed).await);
    let logs = keyturn_tests::captured_logs();
    assert!(logs.lines().any(|l| l.contains(&format!("version {holder}")) && l.contains("password changed")));
    assert!(
        logs.lines().any(|l| l.contains(&newest) && l.contains("skipping a listed version without a value")),
        "the removed version is reported"
    );
}

/// A role the original never had, made by the admin (which then holds ADMIN OPTION on it)
/// and granted to `clone` by the superuser, not by the admin. Returns its name.
async fn granted_by_another_role(env: &TestEnv, clone: &str) -> String {
    let extra = env.unique("extra");
    let (c, x) = (escape_identifier(clone), escape_identifier(&extra));
    env.pg_admin_session().await.batch_execute(&format!("CREATE ROLE {x} NOLOGIN")).await.unwrap();
    env.pg_superuser().await.batch_execute(&format!("GRANT {x} TO {c}")).await.unwrap();
    extra
}

/// PostgreSQL 15 records no grantor to check: the next rotation's REVOKE removes `extra`.
async fn revoked_on_15(env: &TestEnv, rotator: &TestRotator, arn: &str, clone: &str, extra: &str) {
    env.rotate(rotator, arn).await;
    assert!(!privileges_of(env, clone, extra).await.4, "the admin revoked it");
}

/// From PostgreSQL 16, a REVOKE of a membership another role granted only warns. The
/// clone's membership granted by someone other than the admin, which the original does not
/// have: on 16 and later the rotation fails naming the warning and changes nothing (the
/// clone keeps its password and the membership); on 15 the admin's REVOKE removes it.
#[tokio::test]
async fn a_membership_another_role_granted_is_never_silently_kept() {
    let env = TestEnv::new("grantor").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (arn, user) = alternating_secret(&env, "app").await;
    env.rotate(&rotator, &arn).await;
    let clone = format!("{user}_clone");
    let extra = granted_by_another_role(&env, &clone).await;
    // The next rotation sets the original; the one after re-shapes the clone.
    env.rotate(&rotator, &arn).await;
    let before = env.login_of(&arn, AWSCURRENT).await;
    assert_eq!(before.0, user);
    let stages = env.stages(&arn).await;
    if env.pg.version_num >= 160_000 {
        let err = env.rotation_error(&rotator, &arn).await.to_string();
        assert!(err.contains("warned") && err.contains(&extra), "the error names the warning: {err}");
        assert!(privileges_of(&env, &clone, &extra).await.4, "the membership is still there");
        let (old_user, old_password) = env.login_of(&arn, AWSPREVIOUS).await;
        assert_eq!(old_user, clone);
        assert!(env.can_login(&old_user, &old_password).await, "the clone's password is unchanged");
        let after = env.stages(&arn).await;
        let labels = |m: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>| {
            m.values().filter(|l| l.contains(AWSCURRENT) || l.contains(AWSPREVIOUS)).cloned().collect::<Vec<_>>()
        };
        assert_eq!(labels(&after), labels(&stages), "AWSCURRENT and AWSPREVIOUS did not move");
    } else {
        revoked_on_15(&env, &rotator, &arn, &clone, &extra).await;
    }
}

/// The rollback on a WARNING depends on the warning being sent, which a session's
/// `client_min_messages` decides: the owner of the admin's database (here the application,
/// which has CREATEDB, made it, and the admin secret names it) sets it to `error`. keyturn's
/// startup options pin it, so the REVOKE's warning still arrives and nothing is kept.
#[tokio::test]
async fn a_database_setting_cannot_silence_the_warning() {
    let env = TestEnv::new("quiet").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let appdb = env.unique("appdb");
    let mut admin_secret = env.admin_secret();
    admin_secret["dbname"] = json!(appdb);
    let (arn, user) = alternating_secret_with(&env, "app", admin_secret).await;
    let (_, password) = env.login_of(&arn, AWSCURRENT).await;
    let app = session(&env, &user, &password).await;
    let d = escape_identifier(&appdb);
    app.batch_execute(&format!("CREATE DATABASE {d}")).await.unwrap();
    app.batch_execute(&format!("ALTER DATABASE {d} SET client_min_messages = error")).await.unwrap();
    env.rotate(&rotator, &arn).await;
    let clone = format!("{user}_clone");
    let extra = granted_by_another_role(&env, &clone).await;
    env.rotate(&rotator, &arn).await;
    if env.pg.version_num >= 160_000 {
        let err = env.rotation_error(&rotator, &arn).await.to_string();
        assert!(err.contains("warned") && err.contains(&extra), "the error names the warning: {err}");
        assert!(privileges_of(&env, &clone, &extra).await.4, "rolled back: the grant is as it was");
    } else {
        revoked_on_15(&env, &rotator, &arn, &clone, &extra).await;
    }
}
