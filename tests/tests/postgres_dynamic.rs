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
use postgres_protocol::escape::escape_identifier;

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
        .pg_admin()
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
        .pg_admin()
        .await
        .query_one("SELECT rolvaliduntil::text AS until FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap()
        .get("until");
    assert!(until.is_some(), "VALID UNTIL is set");
    let verifier: String = env
        .pg_admin()
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
             RESET ROLE; CREATE TABLE {g}.own (x int)"
        ))
        .await
        .unwrap();

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: Some(group.clone()) };
    let outcome = backend.delete_user(&endpoint, &env.pg_admin_credentials(), request.clone()).await.unwrap();
    assert!(outcome.existed);
    assert_eq!(outcome.sessions_ended, 1);
    assert!(session.simple_query("SELECT 1").await.is_err(), "the open session must be ended");
    assert!(!env.can_login(&user, &password).await, "the login must be refused");
    let owners: Vec<String> = env
        .pg_admin()
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

    let again = backend.delete_user(&endpoint, &env.pg_admin_credentials(), request).await.unwrap();
    assert!(!again.existed, "deleting a user that is gone succeeds");
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
        env.pg_admin().await.query_one("SHOW server_version_num", &[]).await.unwrap().get("server_version_num");
    assert_eq!(shown.parse::<u32>().unwrap(), env.h.pg.version_num);
}
