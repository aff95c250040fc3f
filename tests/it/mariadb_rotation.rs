//! MariaDB rotation against a real server and moto: logins that work or are refused,
//! grants and TLS requirements that match, and no password in the server's general log.

use keyturn::backend::mysql::literal;
use keyturn::rotation::database::Strategy;
use keyturn::rotation::store::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use keyturn::rotation::Step;
use keyturn_tests::{random_token, TestEnv};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const STEPS: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

/// SHOW GRANTS of `user`@`%`, with the user's name, its password hash and TLS clause
/// taken out, so two users' grants compare equal when they have the same rights.
async fn grants(env: &TestEnv, user: &str) -> Vec<String> {
    let lines: Vec<String> =
        env.mariadb_admin().await.query(format!("SHOW GRANTS FOR {}@'%'", literal(user))).await.unwrap();
    let mut normalized: Vec<String> = lines
        .iter()
        .map(|l| {
            let l = l.replace(&format!("`{user}`@`%`"), "GRANTEE");
            match l.find(" IDENTIFIED BY PASSWORD") {
                Some(at) => l[..at].to_owned(),
                None => l,
            }
        })
        .collect();
    normalized.sort();
    normalized
}

async fn tls_requirement(env: &TestEnv, user: &str) -> (String, String, String) {
    env.mariadb_admin()
        .await
        .exec_first(
            "SELECT ssl_type, CAST(x509_issuer AS CHAR), CAST(x509_subject AS CHAR) FROM mysql.user WHERE User = ?",
            (user,),
        )
        .await
        .unwrap()
        .expect("account exists")
}

async fn assert_no_password_in_general_log(env: &TestEnv, arn: &str) {
    let log = std::fs::read_to_string(&env.h.mariadb().general_log).expect("read the general log");
    assert!(log.contains("ALTER USER") || log.contains("CREATE USER"), "the general log is not recording");
    for p in env.all_passwords(arn).await {
        assert!(!log.contains(&p), "a password of {arn} appears in MariaDB's general log");
    }
    env.assert_no_password_logged(arn).await;
}

async fn single_user_secret(env: &TestEnv, name: &str) -> (String, String, String) {
    let user = env.unique(name);
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let arn = env.create_secret(name, &env.mariadb_secret(&user, &password)).await;
    (arn, user, password)
}

/// An original with database, table, column and role grants, a default role and REQUIRE
/// SSL, its secret and the admin secret.
async fn alternating_secret(env: &TestEnv, name: &str) -> (String, String) {
    let user = env.unique(name);
    let password = random_token();
    env.create_mariadb_account(&user, &password, "REQUIRE SSL").await;
    let db = format!("{user}_db");
    let role = format!("{user}_reader");
    let mut a = env.mariadb_admin().await;
    for sql in [
        format!("CREATE DATABASE `{db}`"),
        format!("CREATE TABLE `{db}`.items (id INT, name TEXT)"),
        format!("GRANT SELECT, INSERT ON `{db}`.* TO {}@'%'", literal(&user)),
        format!("GRANT UPDATE (name) ON `{db}`.items TO {}@'%'", literal(&user)),
        format!("GRANT DELETE ON `{db}`.items TO {}@'%' WITH GRANT OPTION", literal(&user)),
        format!("CREATE ROLE `{role}`"),
        format!("GRANT SELECT ON mysql.db TO `{role}`"),
        format!("GRANT `{role}` TO {}@'%'", literal(&user)),
        format!("SET DEFAULT ROLE `{role}` FOR {}@'%'", literal(&user)),
    ] {
        a.query_drop(sql).await.expect("set up the original");
    }
    let admin_arn = env.create_secret(&format!("{name}-admin"), &env.mariadb_admin_secret()).await;
    let mut value = env.mariadb_secret(&user, &password);
    value["masterarn"] = json!(admin_arn);
    (env.create_secret(name, &value).await, user)
}

#[tokio::test]
async fn mariadb_single_user_three_rotations() {
    let env = TestEnv::new("msingle").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, first) = single_user_secret(&env, "app").await;
    let mut old = vec![first];
    for _ in 0..3 {
        env.rotate(&rotator, &arn).await;
        let (u, current) = env.login_of(&arn, AWSCURRENT).await;
        assert_eq!(u, user);
        assert!(env.can_login_mariadb(&user, &current).await, "AWSCURRENT does not log in");
        for password in &old {
            assert!(!env.can_login_mariadb(&user, password).await, "an old password still logs in");
        }
        old.push(current);
    }
    assert_no_password_in_general_log(&env, &arn).await;
}

#[tokio::test]
async fn mariadb_alternating_users_three_rotations_keep_grants_in_step() {
    let env = TestEnv::new("malt").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (arn, user) = alternating_secret(&env, "app").await;
    let clone = format!("{user}_clone");
    let mut history = vec![env.login_of(&arn, AWSCURRENT).await];
    for round in 0..3 {
        env.rotate(&rotator, &arn).await;
        let current = env.login_of(&arn, AWSCURRENT).await;
        assert_eq!(&current.0, if round % 2 == 0 { &clone } else { &user }, "round {round}");
        assert!(env.can_login_mariadb(&current.0, &current.1).await, "AWSCURRENT does not log in");
        let previous = env.login_of(&arn, AWSPREVIOUS).await;
        assert_eq!(&previous, history.last().unwrap());
        assert!(env.can_login_mariadb(&previous.0, &previous.1).await, "AWSPREVIOUS must stay valid");
        if history.len() >= 2 {
            let (u, p) = &history[history.len() - 2];
            assert!(!env.can_login_mariadb(u, p).await, "the credentials of two rotations ago must be refused");
        }
        history.push(current);
        // The clone was just (re)shaped at rounds 0 and 2.
        if round != 1 {
            assert_eq!(grants(&env, &clone).await, grants(&env, &user).await, "round {round}: grants differ");
        }
        if round == 0 {
            // A grant given to the original later reaches the clone at its next rotation,
            // and one taken away is taken from the clone too.
            let mut a = env.mariadb_admin().await;
            a.query_drop(format!("GRANT CREATE ON `{user}_db`.* TO {}@'%'", literal(&user))).await.unwrap();
            a.query_drop(format!("REVOKE INSERT ON `{user}_db`.* FROM {}@'%'", literal(&user))).await.unwrap();
            a.query_drop(format!("REVOKE `{user}_reader` FROM {}@'%'", literal(&user))).await.unwrap();
        }
        assert_eq!(tls_requirement(&env, &clone).await, tls_requirement(&env, &user).await);
    }
    let g = grants(&env, &clone).await;
    assert!(g.iter().any(|l| l.contains("CREATE")) && !g.iter().any(|l| l.contains("INSERT")), "{g:?}");
    let role_grant = format!("GRANT `{user}_reader` TO");
    assert!(!g.iter().any(|l| l.starts_with(&role_grant)), "a role taken from the original stays on the clone: {g:?}");
    assert_eq!(tls_requirement(&env, &clone).await.0, "ANY", "REQUIRE SSL copied");
    assert_no_password_in_general_log(&env, &arn).await;
}

#[tokio::test]
async fn mariadb_steps_twice_and_restarts_converge() {
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        for stop_after in 0..=4 {
            let env = TestEnv::new("mcrash").await;
            let rotator = env.rotator(strategy);
            let arn = match strategy {
                Strategy::SingleUser => single_user_secret(&env, "app").await.0,
                Strategy::AlternatingUsers => alternating_secret(&env, "app").await.0,
            };
            let token = env.start_rotation(&arn).await;
            // stop_after 0: every step twice; otherwise stop after that step and restart.
            for step in &STEPS[..stop_after] {
                env.step(&rotator, &arn, &token, *step).await.unwrap();
            }
            for step in STEPS {
                env.step(&rotator, &arn, &token, step).await.unwrap();
                if stop_after == 0 {
                    env.step(&rotator, &arn, &token, step).await.unwrap();
                }
            }
            let (u, p) = env.login_of(&arn, AWSCURRENT).await;
            assert!(env.can_login_mariadb(&u, &p).await, "{strategy:?} stop after {stop_after}");
            let stages = env.stages(&arn).await;
            assert!(!stages.values().any(|s| s.contains(AWSPENDING)), "{stages:?}");
        }
    }
}

#[tokio::test]
async fn mariadb_abandoned_rotation_heals() {
    let env = TestEnv::new("mheal").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let (arn, user, _) = single_user_secret(&env, "app").await;
    env.abandon_after_set(&rotator, &arn).await;
    env.rotate(&rotator, &arn).await;
    let (_, healed) = env.login_of(&arn, AWSCURRENT).await;
    assert!(env.can_login_mariadb(&user, &healed).await);
}

async fn account_exists(env: &TestEnv, user: &str) -> bool {
    let found: Option<String> =
        env.mariadb_admin().await.exec_first("SELECT User FROM mysql.user WHERE User = ?", (user,)).await.unwrap();
    found.is_some()
}

#[tokio::test]
async fn mariadb_bad_inputs_are_refused_and_change_nothing() {
    let env = TestEnv::new("mbad").await;
    let admin_arn = env.create_secret("admin", &env.mariadb_admin_secret()).await;

    // An admin without the right to create users.
    let weak = env.unique("weak");
    let weak_password = random_token();
    env.create_mariadb_account(&weak, &weak_password, "").await;
    let weak_admin = env.create_secret("weak-admin", &env.mariadb_secret(&weak, &weak_password)).await;

    let user = env.unique("app");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let with_admin = |m: &str| {
        let mut v = env.mariadb_secret(&user, &password);
        v["masterarn"] = json!(m);
        v
    };
    // 27 characters + "_clone" is over MySQL's 32.
    let mut long = env.mariadb_secret(&"m".repeat(27), &password);
    long["engine"] = json!("mysql");
    long["masterarn"] = json!(admin_arn);
    let mut no_user = env.mariadb_secret(&env.unique("ghost"), &password);
    no_user["masterarn"] = json!(admin_arn);

    let cases: Vec<(&str, Strategy, Value, &str)> = vec![
        ("long", Strategy::AlternatingUsers, long, "over the 32-character limit of mysql"),
        (
            "noadmin",
            Strategy::AlternatingUsers,
            with_admin("arn:aws:secretsmanager:us-east-1:123456789012:secret:none-AbCdEf"),
            "none-AbCdEf",
        ),
        ("weak", Strategy::AlternatingUsers, with_admin(&weak_admin), "SELECT command denied"),
        ("ghost", Strategy::AlternatingUsers, no_user, "AWSCURRENT does not log in"),
        (
            "engine",
            Strategy::SingleUser,
            json!({"engine": "db2", "host": "localhost", "username": user, "password": password}),
            "unknown engine",
        ),
    ];
    for (name, strategy, value, expected) in cases {
        let arn = env.create_secret(name, &value).await;
        let err = env.rotation_error(&env.rotator(strategy), &arn).await;
        let message = err.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains(&arn), "{name}: the error must name the secret: {message}");
        assert!(!message.contains(&password), "{name}: the error shows a password");
        assert_eq!(env.value(&arn, AWSCURRENT).await, value, "{name}: AWSCURRENT changed");
        assert!(env.can_login_mariadb(&user, &password).await, "{name}: the password changed");
        assert!(!account_exists(&env, &format!("{user}_clone")).await, "{name}: a clone was created");
    }
}

#[tokio::test]
async fn passwords_with_every_printable_character_work() {
    // Nothing excluded: quotes, backslashes, `@`, `:` and `/` all appear.
    let policy = keyturn::password::PasswordPolicy::new(96, "").unwrap();
    let env = TestEnv::new("mchars").await;
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let rotator = env.rotator_with(strategy, policy.clone());
        let arn = match strategy {
            Strategy::SingleUser => single_user_secret(&env, "app").await.0,
            Strategy::AlternatingUsers => alternating_secret(&env, "alt").await.0,
        };
        for _ in 0..3 {
            env.rotate(&rotator, &arn).await;
            let (u, p) = env.login_of(&arn, AWSCURRENT).await;
            assert!(env.can_login_mariadb(&u, &p).await, "{strategy:?}");
        }
        assert_no_password_in_general_log(&env, &arn).await;
    }
}

#[tokio::test]
async fn mariadb_tls_is_verified_and_never_downgraded() {
    let env = TestEnv::new("mtls").await;
    let user = env.unique("app");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;

    // The certificate names "localhost" only; the server also accepts plaintext, so a
    // fallback would succeed where keyturn must refuse.
    let mut wrong_name = env.mariadb_secret(&user, &password);
    wrong_name["host"] = json!("127.0.0.1");
    let arn = env.create_secret("wrongname", &wrong_name).await;
    let err = env.rotation_error(&env.rotator(Strategy::SingleUser), &arn).await;
    assert!(err.to_string().contains("TLS"), "{err}");
    assert!(env.can_login_mariadb(&user, &password).await, "nothing may change");

    // "ssl": false is the only way to plaintext, and it works.
    let mut plain = env.mariadb_secret(&user, &password);
    plain["ssl"] = json!(false);
    let arn = env.create_secret("plain", &plain).await;
    env.rotate(&env.rotator(Strategy::SingleUser), &arn).await;
    let (u, p) = env.login_of(&arn, AWSCURRENT).await;
    assert!(env.can_login_mariadb(&u, &p).await);
}

/// MariaDB sends its certificate alone, without the intermediate CA, as RDS does: the
/// bundle keyturn is given (root and intermediate) verifies it, the root alone does not.
#[tokio::test]
async fn the_server_certificate_comes_alone_and_the_bundle_completes_it() {
    use keyturn::backend::mysql::MysqlBackend;
    use keyturn::backend::{BackendError, Credentials, DatabaseBackend, Timeouts, Username};
    let env = TestEnv::new("chain").await;
    let user = env.unique("app");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let login = Credentials { username: Username::parse(&user).unwrap(), password: password.into() };
    let endpoint = env.mariadb_endpoint();
    env.mariadb_backend().verify(&endpoint, &login).await.expect("the bundle verifies the server");
    let root_only = MysqlBackend::new(std::slice::from_ref(&env.h.pki().root_cert), Timeouts::default()).unwrap();
    let err = root_only.verify(&endpoint, &login).await.unwrap_err();
    assert!(matches!(err, BackendError::Tls { .. }), "{err}");
}
