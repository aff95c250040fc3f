//! Short-lived MariaDB users ([`DynamicUsers`]) against a real server: a new user logs in
//! and reads through its group role, a new password replaces the old, and deleting it ends
//! its open session, refuses its login and succeeds again when it is already gone.

use std::time::{Duration, SystemTime};

use keyturn::backend::mysql::grants::identifier;
use keyturn::backend::mysql::MysqlBackend;
use keyturn::backend::{
    BackendError, DeleteUser, DynamicUsers, Endpoint, Engine, ListUsers, NewUser, Timeouts, TlsMode, UpdateUser,
    Username,
};
use keyturn_tests::{random_token, TestEnv};
use mysql_async::prelude::Queryable;

fn backend(env: &TestEnv) -> MysqlBackend {
    MysqlBackend::new(std::slice::from_ref(&env.h.ca_file), Timeouts::default()).unwrap()
}

fn endpoint(env: &TestEnv) -> Endpoint {
    Endpoint {
        engine: Engine::Mariadb,
        host: "localhost".into(),
        port: env.h.mariadb().port,
        dbname: None,
        tls: TlsMode::VerifyFull,
    }
}

/// A role that may read a table of its own database. Returns (role, table).
async fn group_with_table(env: &TestEnv, name: &str) -> (String, String) {
    let role = env.unique(name);
    let table = format!("{}.items", identifier(&role));
    let mut a = env.mariadb_admin().await;
    for sql in [
        format!("CREATE DATABASE {}", identifier(&role)),
        format!("CREATE TABLE {table} (id INT)"),
        format!("INSERT INTO {table} VALUES (7)"),
        format!("CREATE ROLE {}", identifier(&role)),
        format!("GRANT SELECT ON {table} TO {}", identifier(&role)),
    ] {
        a.query_drop(sql).await.unwrap();
    }
    (role, table)
}

fn new_user(name: &str, group: &str, password: &str) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        groups: vec![group.to_owned()],
        password: password.to_owned().into(),
        expires_at: SystemTime::now() + Duration::from_secs(600),
    }
}

#[tokio::test]
async fn a_new_mariadb_user_reads_through_its_group_and_is_renewed_with_a_new_password() {
    let env = TestEnv::new("mdynnew").await;
    let (group, table) = group_with_table(&env, "grp").await;
    let user = env.unique("kt_u it's");
    let password = random_token();
    backend(&env)
        .new_user(&endpoint(&env), &env.mariadb_admin_credentials(), new_user(&user, &group, &password))
        .await
        .unwrap();
    let mut session = env.mariadb_session(&user, &password).await.expect("the new user logs in");
    let id: Option<i32> = session.query_first(format!("SELECT id FROM {table}")).await.unwrap();
    assert_eq!(id, Some(7), "the group role is the user's default");

    let renewed = random_token();
    let update = UpdateUser {
        username: Username::parse(&user).unwrap(),
        password: Some(renewed.clone().into()),
        expires_at: None,
    };
    backend(&env).update_user(&endpoint(&env), &env.mariadb_admin_credentials(), update).await.unwrap();
    assert!(env.can_login_mariadb(&user, &renewed).await);
    assert!(!env.can_login_mariadb(&user, &password).await);
    let ghost = UpdateUser {
        username: Username::parse(&env.unique("ghost")).unwrap(),
        password: Some(renewed.into()),
        expires_at: None,
    };
    let err = backend(&env).update_user(&endpoint(&env), &env.mariadb_admin_credentials(), ghost).await.unwrap_err();
    assert!(matches!(err, BackendError::NoSuchUser { .. }), "{err}");
}

#[tokio::test]
async fn deleting_a_mariadb_user_ends_its_session_and_is_idempotent() {
    let env = TestEnv::new("mdyndel").await;
    let (group, _) = group_with_table(&env, "grp").await;
    let user = env.unique("kt_u");
    let password = random_token();
    backend(&env)
        .new_user(&endpoint(&env), &env.mariadb_admin_credentials(), new_user(&user, &group, &password))
        .await
        .unwrap();
    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    session.query_drop("SELECT 1").await.unwrap();

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    let outcome =
        backend(&env).delete_user(&endpoint(&env), &env.mariadb_admin_credentials(), request.clone()).await.unwrap();
    assert!(outcome.existed);
    assert_eq!(outcome.sessions_ended, 1);
    assert!(session.query_drop("SELECT 1").await.is_err(), "the open session must be ended");
    assert!(!env.can_login_mariadb(&user, &password).await, "the login must be refused");
    let again = backend(&env).delete_user(&endpoint(&env), &env.mariadb_admin_credentials(), request).await.unwrap();
    assert!(!again.existed, "deleting a user that is gone succeeds");
}

#[tokio::test]
async fn mariadb_users_are_listed_by_a_literal_prefix() {
    let env = TestEnv::new("mdynlist").await;
    let (group, _) = group_with_table(&env, "grp").await;
    let prefix = format!("{}_k%t_", env.unique("p"));
    let mut made = Vec::new();
    for i in 0..3 {
        let user = format!("{prefix}{i}");
        backend(&env)
            .new_user(&endpoint(&env), &env.mariadb_admin_credentials(), new_user(&user, &group, &random_token()))
            .await
            .unwrap();
        made.push(user);
    }
    env.create_mariadb_account(&format!("{}0", prefix.replace('%', "x")), &random_token(), "").await;
    let listed = backend(&env)
        .list_users(&endpoint(&env), &env.mariadb_admin_credentials(), ListUsers { prefix })
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|u| u.to_string()).collect::<Vec<_>>(), made);
}
