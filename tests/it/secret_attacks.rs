//! What a writer of a hostile database secret tries, against real PostgreSQL, MariaDB and
//! moto. Whoever may call PutSecretValue (or create a secret and point it at keyturn) can
//! name any user, host or admin secret; the rotation function has more privilege than
//! they do. Each test plays one attack and checks it gained nothing: the admin keeps its
//! password, no user appears, no password reaches the attacker's server.

use keyturn::backend::mysql::grants::identifier;
use keyturn::backend::mysql::{literal, native_password_hash};
use keyturn::rotation::database::Strategy;
use keyturn::rotation::store::AWSPENDING;
use keyturn::rotation::Step;
use keyturn_tests::fake_postgres::{Ask, FakePostgres};
use keyturn_tests::{random_token, TestEnv};
use postgres_protocol::escape::escape_identifier;
use serde_json::{json, Value};

/// A PostgreSQL admin of the test's own (CREATEROLE, not superuser, as on RDS), and its
/// secret. Returns (admin user, admin password, admin secret ARN).
async fn pg_admin_of_test(env: &TestEnv) -> (String, String, String) {
    let admin = env.unique("admin");
    let password = random_token();
    env.create_role(&admin, &password).await;
    let sql = format!("ALTER ROLE {} CREATEROLE", escape_identifier(&admin));
    env.pg_superuser().await.batch_execute(&sql).await.unwrap();
    let arn = env.create_secret("admin", &env.user_secret(&admin, &password)).await;
    (admin, password, arn)
}

async fn pg_role_exists(env: &TestEnv, name: &str) -> bool {
    let admin = env.pg_superuser().await;
    admin.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name]).await.unwrap().is_some()
}

/// Writes `value` as the token's AWSPENDING version, as a writer with PutSecretValue can.
async fn put_pending(env: &TestEnv, arn: &str, token: &str, value: &Value) {
    env.sm
        .put_secret_value()
        .secret_id(arn)
        .client_request_token(token)
        .secret_string(value.to_string())
        .version_stages(AWSPENDING)
        .send()
        .await
        .expect("PutSecretValue");
}

/// Writes `value` as a new AWSCURRENT version.
async fn put_current(env: &TestEnv, arn: &str, value: &Value) {
    env.sm.put_secret_value().secret_id(arn).secret_string(value.to_string()).send().await.expect("PutSecretValue");
}

#[tokio::test]
async fn an_alternating_secret_cannot_aim_the_admin_at_itself() {
    let env = TestEnv::new("selfadmin").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (admin, admin_password, admin_arn) = pg_admin_of_test(&env).await;

    // createSecret would flip `<admin>_clone` to the admin itself.
    let mut value = env.user_secret(&format!("{admin}_clone"), "anything");
    value["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("flip", &value).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert_eq!(err.kind(), "Refused", "{err}");

    // A pending version written by hand that names the admin: setSecret refuses it.
    let arn = env.create_secret("direct", &value).await;
    let token = env.start_rotation(&arn).await;
    let mut pending = env.user_secret(&admin, "attacker-chosen-password-1A!");
    pending["masterarn"] = json!(admin_arn);
    put_pending(&env, &arn, &token, &pending).await;
    let err = env.step(&rotator, &arn, &token, Step::Set).await.unwrap_err();
    assert_eq!(err.kind(), "Refused", "{err}");

    // A secret naming the admin as its user: the clone would be a copy of the admin.
    let mut value = env.user_secret(&admin, "wrong");
    value["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("copy", &value).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert_eq!(err.kind(), "Refused", "{err}");

    assert!(env.can_login(&admin, &admin_password).await, "the admin's password was changed");
    assert!(!env.can_login(&admin, "attacker-chosen-password-1A!").await);
    assert!(!pg_role_exists(&env, &format!("{admin}_clone")).await, "a copy of the admin was created");
}

#[tokio::test]
async fn an_alternating_secret_must_prove_its_own_login() {
    let env = TestEnv::new("unproven").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (_, _, admin_arn) = pg_admin_of_test(&env).await;
    // A victim whose password the attacker does not know, and who can read something.
    let victim = env.unique("victim");
    let victim_password = random_token();
    env.create_role(&victim, &victim_password).await;
    env.pg_superuser()
        .await
        .batch_execute(&format!("GRANT pg_read_all_data TO {}", escape_identifier(&victim)))
        .await
        .unwrap();

    let mut value = env.user_secret(&victim, "a-guess");
    value["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("victim", &value).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert_eq!(err.kind(), "Refused", "{err}");
    assert!(err.to_string().contains("AWSCURRENT does not log in"), "{err}");
    assert!(!pg_role_exists(&env, &format!("{victim}_clone")).await, "a clone of the victim was created");
    assert!(env.can_login(&victim, &victim_password).await);
}

#[tokio::test]
async fn an_existing_user_is_not_taken_over_without_proof() {
    let env = TestEnv::new("takeover").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let (_, _, admin_arn) = pg_admin_of_test(&env).await;
    // The victim `v`, and the attacker's own, unrelated role that happens to be `v_clone`.
    let victim = env.unique("v");
    let victim_password = random_token();
    env.create_role(&victim, &victim_password).await;
    let own = format!("{victim}_clone");
    let own_password = random_token();
    env.create_role(&own, &own_password).await;

    let mut value = env.user_secret(&own, &own_password);
    value["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("own", &value).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert_eq!(err.kind(), "Refused", "{err}");
    assert!(err.to_string().contains("exists and none of the secret's versions logs in"), "{err}");
    assert!(env.can_login(&victim, &victim_password).await, "the victim's password was changed");
}

#[tokio::test]
async fn older_passwords_never_reach_another_host() {
    let env = TestEnv::new("foreign").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let user = env.unique("app");
    let password = random_token();
    env.create_role(&user, &password).await;
    let arn = env.create_secret("app", &env.user_secret(&user, &password)).await;
    env.rotate(&rotator, &arn).await;
    let (_, valid) = env.login_of(&arn, "AWSCURRENT").await;

    // The writer points AWSCURRENT at a server of theirs: AWSPREVIOUS now holds `valid`.
    let fake = FakePostgres::start(Ask::Md5);
    let hostile = json!({"engine": "postgres", "host": "127.0.0.1", "port": fake.port, "ssl": false,
                          "username": user, "password": "whatever", "dbname": "postgres"});
    put_current(&env, &arn, &hostile).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert_eq!(err.kind(), "NoWorkingCredentials", "{err}");

    let received = fake.passwords.lock().unwrap().clone();
    for old in [&password, &valid] {
        assert!(!received.contains(&FakePostgres::md5_answer(&user, old)), "a real password reached the fake server");
    }
    assert_eq!(*fake.logins.lock().unwrap(), 2, "only AWSCURRENT and AWSPENDING name that server");
    assert!(env.can_login(&user, &valid).await, "the real password must be unchanged");
}

#[tokio::test]
async fn a_cleartext_password_request_without_tls_is_refused() {
    let env = TestEnv::new("cleartext").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let fake = FakePostgres::start(Ask::Cleartext);
    let value = json!({"engine": "postgres", "host": "127.0.0.1", "port": fake.port, "ssl": false,
                        "username": "app", "password": "the-current-password", "dbname": "postgres"});
    let arn = env.create_secret("app", &value).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert!(err.to_string().contains("cleartext"), "{err}");
    assert!(*fake.logins.lock().unwrap() >= 1, "keyturn never reached the fake server");
    assert!(fake.passwords.lock().unwrap().is_empty(), "a password was sent in cleartext");
}

/// SHOW GRANTS lines of `user`@`%`.
async fn mariadb_grants(env: &TestEnv, user: &str) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    let sql = format!("SHOW GRANTS FOR {}@'%'", literal(user));
    env.mariadb_admin().await.query(sql).await.unwrap()
}

#[tokio::test]
async fn copied_grants_cannot_smuggle_statements() {
    use mysql_async::prelude::Queryable;
    let env = TestEnv::new("smuggle").await;
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let evil = env.unique("evil");
    env.create_mariadb_account(&evil, &random_token(), "").await;
    let user = env.unique("app");
    let password = random_token();
    // Text an account's owner may choose (here a second authentication method's string)
    // that looks like the end of a grant followed by another statement.
    let hostile = format!("x WITH GRANT OPTION; GRANT ALL ON *.* TO {}@`%` WITH GRANT OPTION; #", identifier(&evil));
    let hash = native_password_hash(&password.clone().into());
    let db = format!("{user}`db'; DROP DATABASE mysql; --");
    let role = format!("{user}_r'o\"l`e");
    let mut a = env.mariadb_admin().await;
    for sql in [
        format!(
            "CREATE USER {}@'%' IDENTIFIED VIA mysql_native_password USING {} OR unix_socket AS {}",
            literal(&user),
            literal(&hash),
            literal(&hostile)
        ),
        format!("CREATE DATABASE {}", identifier(&db)),
        format!("GRANT SELECT ON {}.* TO {}@'%'", identifier(&db), literal(&user)),
        format!("CREATE ROLE {}", identifier(&role)),
        format!("GRANT {} TO {}@'%'", identifier(&role), literal(&user)),
        format!("SET DEFAULT ROLE {} FOR {}@'%'", identifier(&role), literal(&user)),
    ] {
        a.query_drop(sql).await.expect("set up the original");
    }
    let admin_arn = env.create_secret("admin", &env.mariadb_admin_secret()).await;
    let mut value = env.mariadb_secret(&user, &password);
    value["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("app", &value).await;
    env.rotate(&rotator, &arn).await;

    let evil_grants = mariadb_grants(&env, &evil).await;
    assert!(
        evil_grants.iter().all(|g| !g.contains("ALL PRIVILEGES") && !g.contains("GRANT OPTION")),
        "the smuggled GRANT ran: {evil_grants:?}"
    );
    let clone = format!("{user}_clone");
    let clone_grants = mariadb_grants(&env, &clone).await.join("\n");
    assert!(!clone_grants.contains("WITH GRANT OPTION"), "{clone_grants}");
    assert!(clone_grants.contains(&format!("GRANT SELECT ON {}.*", identifier(&db))), "{clone_grants}");
    assert!(clone_grants.contains(&format!("GRANT {} TO", identifier(&role))), "{clone_grants}");
    assert!(clone_grants.contains(&format!("SET DEFAULT ROLE {} FOR", identifier(&role))), "{clone_grants}");
    let (u, p) = env.login_of(&arn, "AWSCURRENT").await;
    assert_eq!(u, clone);
    assert!(env.can_login_mariadb(&u, &p).await);
}

#[tokio::test]
async fn mariadb_names_with_quotes_backslashes_and_unicode_rotate() {
    let env = TestEnv::new("mnames").await;
    let admin_arn = env.create_secret("admin", &env.mariadb_admin_secret()).await;
    let prefix = env.unique("n");
    let names = [
        format!("{prefix} it's `me`"),
        format!("{prefix}\\back\\slash \"dq\""),
        format!("{prefix}ünïcødé ✓"),
        // The longest names MariaDB holds: 80 characters, the clone's included.
        format!("{prefix}{}", "x".repeat(80 - 6 - prefix.chars().count())),
    ];
    for (i, name) in names.iter().enumerate() {
        for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
            let user = format!("{name}{}", if strategy == Strategy::SingleUser { "s" } else { "" });
            let password = random_token();
            env.create_mariadb_account(&user, &password, "").await;
            let mut value = env.mariadb_secret(&user, &password);
            value["masterarn"] = json!(admin_arn);
            let arn = env.create_secret(&format!("n{i}{}", strategy.as_str()), &value).await;
            let rotator = env.rotator(strategy);
            for round in 0..2 {
                env.rotate(&rotator, &arn).await;
                let (u, p) = env.login_of(&arn, "AWSCURRENT").await;
                assert!(env.can_login_mariadb(&u, &p).await, "{user:?} {strategy:?} round {round}");
                if strategy == Strategy::AlternatingUsers {
                    let clone = format!("{user}_clone");
                    assert_eq!(&u, if round == 0 { &clone } else { &user }, "{user:?}");
                }
            }
        }
    }
}

#[tokio::test]
async fn mariadb_single_user_with_several_host_parts_is_refused() {
    use mysql_async::prelude::Queryable;
    let env = TestEnv::new("mhosts").await;
    let rotator = env.rotator(Strategy::SingleUser);
    let user = env.unique("app");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let hash = native_password_hash(&password.clone().into());
    let mut a = env.mariadb_admin().await;
    a.query_drop(format!("CREATE USER {}@'10.9.%' IDENTIFIED BY PASSWORD {}", literal(&user), literal(&hash)))
        .await
        .unwrap();
    // The user can see its own accounts.
    a.query_drop(format!("GRANT SELECT ON mysql.user TO {}@'%'", literal(&user))).await.unwrap();
    let arn = env.create_secret("app", &env.mariadb_secret(&user, &password)).await;
    let err = env.rotation_error(&rotator, &arn).await;
    assert!(err.to_string().contains("has 2 accounts"), "{err}");
    assert!(env.can_login_mariadb(&user, &password).await, "the password changed");
}

/// A login of the test's own to PostgreSQL, in `db`.
async fn pg_login(env: &TestEnv, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
    env.pg_login_to(db, user, password).await.expect("login")
}

/// Runs setSecret for a pending version written by hand; returns the step's result.
async fn set_with_pending(
    env: &TestEnv,
    value: &Value,
    pending_user: &str,
    pending_password: &str,
) -> Result<keyturn::rotation::Outcome, keyturn::rotation::RotationError> {
    let rotator = env.rotator(Strategy::AlternatingUsers);
    let arn = env.create_secret(&format!("own-{}", &random_token()[..8]), value).await;
    let token = env.start_rotation(&arn).await;
    let mut pending = value.clone();
    pending["username"] = json!(pending_user);
    pending["password"] = json!(pending_password);
    put_pending(env, &arn, &token, &pending).await;
    env.step(&rotator, &arn, &token, Step::Set).await
}

#[tokio::test]
async fn a_database_the_writer_owns_cannot_change_what_the_admin_reads() {
    use postgres_protocol::escape::escape_literal;
    let env = TestEnv::new("searchpath").await;
    let (admin, _, createrole_admin) = pg_admin_of_test(&env).await;
    let superuser_admin = env.create_secret("superuser", &env.superuser_secret()).await;
    // The writer's own account may create databases; in theirs, views named like the
    // catalogs claim the writer is a member of the admin role and, when a superuser reads
    // them, a superuser.
    let att = env.unique("att");
    let att_password = random_token();
    env.create_role(&att, &att_password).await;
    env.pg_superuser().await.batch_execute(&format!("ALTER ROLE {} CREATEDB", escape_identifier(&att))).await.unwrap();
    // From PostgreSQL 16 an admin grants only roles it holds WITH ADMIN OPTION (the writer's
    // user was made by the harness's admin, not this one), and gives CREATEDB only if it has it.
    let sql = format!(
        "ALTER ROLE {a} CREATEDB; GRANT {u} TO {a} WITH ADMIN OPTION",
        a = escape_identifier(&admin),
        u = escape_identifier(&att)
    );
    env.pg_superuser().await.batch_execute(&sql).await.unwrap();
    let db = env.unique("attdb");
    let own = pg_login(&env, &att, &att_password, "postgres").await;
    own.batch_execute(&format!("CREATE DATABASE {}", escape_identifier(&db))).await.unwrap();
    pg_login(&env, &att, &att_password, &db)
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA evil;
             CREATE VIEW evil.pg_roles AS SELECT r.rolname, r.oid,
               r.rolsuper OR (r.rolname = {me} AND (SELECT s.rolsuper FROM pg_catalog.pg_roles s
                                                   WHERE s.rolname = current_user)) AS rolsuper,
               r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolreplication, r.rolbypassrls, r.rolconnlimit,
               r.rolvaliduntil FROM pg_catalog.pg_roles r;
             CREATE VIEW evil.pg_auth_members AS SELECT roleid, member, admin_option FROM pg_catalog.pg_auth_members
               UNION ALL SELECT (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {admin}),
                                (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {me}), true;
             GRANT USAGE ON SCHEMA evil TO PUBLIC; GRANT SELECT ON ALL TABLES IN SCHEMA evil TO PUBLIC;
             ALTER DATABASE {db} SET search_path = evil, pg_catalog;",
            admin = escape_literal(&admin),
            me = escape_literal(&att),
            db = escape_identifier(&db),
        ))
        .await
        .unwrap();

    let clone = format!("{att}_clone");
    for admin_arn in [createrole_admin, superuser_admin] {
        let mut value = env.user_secret(&att, &att_password);
        value["dbname"] = json!(db);
        value["masterarn"] = json!(admin_arn);
        set_with_pending(&env, &value, &clone, "attacker-chosen-password-2B!").await.expect("the writer's own clone");
        let session = pg_login(&env, &clone, "attacker-chosen-password-2B!", "postgres").await;
        let row = session
            .query_one(
                "SELECT rolsuper, pg_catalog.pg_has_role(session_user, $1::text, 'MEMBER') AS admin_member \
                 FROM pg_catalog.pg_roles WHERE rolname = session_user",
                &[&admin],
            )
            .await
            .unwrap();
        assert!(!row.get::<_, bool>("admin_member"), "the clone became a member of the admin role");
        assert!(!row.get::<_, bool>("rolsuper"), "the clone became a superuser");
    }
}

#[tokio::test]
async fn a_chain_of_clone_suffixes_copies_no_one_else() {
    let env = TestEnv::new("chain").await;
    let (_, _, admin_arn) = pg_admin_of_test(&env).await;
    let victim = env.unique("ops");
    env.create_role(&victim, &random_token()).await;
    // The writer owns `ops_clone_clone`, which says nothing about `ops`.
    let chain = format!("{victim}_clone_clone");
    let chain_password = random_token();
    env.create_role(&chain, &chain_password).await;
    let mut value = env.user_secret(&chain, &chain_password);
    value["masterarn"] = json!(admin_arn);
    let err =
        set_with_pending(&env, &value, &format!("{victim}_clone"), "attacker-chosen-password-3C!").await.unwrap_err();
    assert_eq!(err.kind(), "Refused", "{err}");
    assert!(!pg_role_exists(&env, &format!("{victim}_clone")).await, "a copy of the victim was created");
}

#[tokio::test]
async fn a_login_proven_on_another_port_proves_nothing() {
    let env = TestEnv::new("port").await;
    let (_, _, admin_arn) = pg_admin_of_test(&env).await;
    let victim = env.unique("victim");
    env.create_role(&victim, &random_token()).await;
    // A server on the database's host that lets anyone in.
    let fake = FakePostgres::start(Ask::Trust);
    let mut value = env.user_secret(&victim, "not-the-password");
    value["port"] = json!(fake.port);
    value["ssl"] = json!(false);
    value["masterarn"] = json!(admin_arn);
    let err =
        set_with_pending(&env, &value, &format!("{victim}_clone"), "attacker-chosen-password-4D!").await.unwrap_err();
    assert!(err.to_string().contains("the user secret for localhost:"), "{err}");
    assert!(!pg_role_exists(&env, &format!("{victim}_clone")).await, "a copy of the victim was created");
}

#[tokio::test]
async fn an_anonymous_account_proves_no_name() {
    use mysql_async::prelude::Queryable;
    let env = TestEnv::new("anon").await;
    // ''@'%' lets any name log in with its password (older installs shipped one).
    let anonymous_password = random_token();
    let hash = native_password_hash(&anonymous_password.clone().into());
    let mut a = env.mariadb_admin().await;
    a.query_drop(format!("CREATE USER ''@'%' IDENTIFIED BY PASSWORD {}", literal(&hash))).await.unwrap();
    let ghost = env.unique("ghost");
    let arn = env.create_secret("ghost", &env.mariadb_secret(&ghost, &anonymous_password)).await;
    let err = env.rotation_error(&env.rotator(Strategy::SingleUser), &arn).await;
    let still = env.mariadb_session("someone", &anonymous_password).await.is_ok();
    a.query_drop("DROP USER ''@'%'").await.unwrap();
    assert_eq!(err.kind(), "NoWorkingCredentials", "{err}");
    assert!(still, "the anonymous account's password was changed");
}
