//! Short-lived MariaDB users ([`DynamicUsers`]) against a real server: a new user logs in
//! and reads through its group role, a new password replaces the old, and deleting it ends
//! its open session, refuses its login and succeeds again when it is already gone. The
//! server (event scheduler ON, zone not UTC) drops the user at its expiry by itself;
//! renewal moves that event and deletion drops it. The admin session is kept across calls,
//! and replaced when the server killed it, by an admin holding only what the README lists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyturn::backend::mysql::grants::identifier;
use keyturn::backend::mysql::literal;
use keyturn::backend::{BackendError, Credentials, DeleteUser, DynamicUsers, ListUsers, NewUser, UpdateUser, Username};
use keyturn_tests::{random_token, TestEnv};
use mysql_async::prelude::Queryable;

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
    let (group, table) = env.mariadb_group_with_table("grp").await;
    let user = env.unique("kt_u it's");
    let password = random_token();
    env.mariadb_backend()
        .new_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), new_user(&user, &group, &password))
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
    env.mariadb_backend().update_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), update).await.unwrap();
    assert!(env.can_login_mariadb(&user, &renewed).await);
    assert!(!env.can_login_mariadb(&user, &password).await);
    let ghost = UpdateUser {
        username: Username::parse(&env.unique("ghost")).unwrap(),
        password: Some(renewed.into()),
        expires_at: None,
    };
    let err = env
        .mariadb_backend()
        .update_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), ghost)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::NoSuchUser { .. }), "{err}");
}

#[tokio::test]
async fn deleting_a_mariadb_user_ends_its_session_and_is_idempotent() {
    let env = TestEnv::new("mdyndel").await;
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let user = env.unique("kt_u");
    let password = random_token();
    env.mariadb_backend()
        .new_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), new_user(&user, &group, &password))
        .await
        .unwrap();
    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    session.query_drop("SELECT 1").await.unwrap();

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    let outcome = env
        .mariadb_backend()
        .delete_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), request.clone())
        .await
        .unwrap();
    assert!(outcome.existed);
    assert_eq!(outcome.sessions_ended, 1);
    assert!(session.query_drop("SELECT 1").await.is_err(), "the open session must be ended");
    assert!(!env.can_login_mariadb(&user, &password).await, "the login must be refused");
    let again = env
        .mariadb_backend()
        .delete_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), request)
        .await
        .unwrap();
    assert!(!again.existed, "deleting a user that is gone succeeds");
}

#[tokio::test]
async fn mariadb_users_are_listed_by_a_literal_prefix() {
    let env = TestEnv::new("mdynlist").await;
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let prefix = format!("{}_k%t_", env.unique("p"));
    let mut made = Vec::new();
    for i in 0..3 {
        let user = format!("{prefix}{i}");
        env.mariadb_backend()
            .new_user(
                &env.mariadb_endpoint(),
                &env.mariadb_admin_credentials(),
                new_user(&user, &group, &random_token()),
            )
            .await
            .unwrap();
        made.push(user);
    }
    env.create_mariadb_account(&format!("{}0", prefix.replace('%', "x")), &random_token(), "").await;
    let listed = env
        .mariadb_backend()
        .list_users(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), ListUsers { prefix })
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|u| u.to_string()).collect::<Vec<_>>(), made);
}

/// `at` rounded up to a whole second since the epoch, as the expiry event holds it.
fn epoch_seconds(at: SystemTime) -> i64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap();
    (since.as_secs() + u64::from(since.subsec_nanos() > 0)) as i64
}

#[tokio::test]
async fn the_server_drops_a_mariadb_user_and_ends_its_session_at_its_expiry() {
    let env = TestEnv::new("mdynexp").await;
    let (group, table) = env.mariadb_group_with_table("grp").await;
    let user = env.unique("kt_u");
    let password = random_token();
    let expires_at = SystemTime::now() + Duration::from_secs(2);
    let request = NewUser { expires_at, ..new_user(&user, &group, &password) };
    let outcome = env
        .mariadb_backend()
        .new_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), request)
        .await
        .unwrap();
    assert!(outcome.server_expiry, "the scheduler is ON: the server enforces the expiry");
    let mut open = env.mariadb_session(&user, &password).await.expect("the new user logs in before its expiry");
    open.query_drop(format!("SELECT id FROM {table}")).await.unwrap();

    // Nothing of keyturn runs from here on: only the server's event can drop the user.
    let deadline = expires_at + Duration::from_secs(8);
    loop {
        let gone = !env.mariadb_user_exists(&user).await && !env.can_login_mariadb(&user, &password).await;
        if gone && open.query_drop(format!("SELECT id FROM {table}")).await.is_err() {
            break;
        }
        assert!(SystemTime::now() < deadline, "the user or its session outlived the expiry by 8 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(SystemTime::now() >= expires_at, "dropped before its expiry");
    assert_eq!(env.mariadb_expiry_event(&user).await, None, "a one-shot event removes itself");

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    let outcome =
        env.mariadb_backend().delete_user(&env.mariadb_endpoint(), &env.mariadb_admin_credentials(), request).await;
    assert!(!outcome.unwrap().existed, "deleting a user the server already dropped succeeds");
}

#[tokio::test]
async fn renewing_a_mariadb_user_moves_its_expiry_event_and_deleting_it_drops_the_event() {
    let env = TestEnv::new("mdynmove").await;
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let (backend, endpoint, admin) = (env.mariadb_backend(), env.mariadb_endpoint(), env.mariadb_admin_credentials());
    let user = env.unique("kt_u");
    let request = new_user(&user, &group, &random_token());
    let first = request.expires_at;
    backend.new_user(&endpoint, &admin, request).await.unwrap();
    let event = env.mariadb_expiry_event(&user).await.expect("new_user made an expiry event");
    assert_eq!(event.execute_at, epoch_seconds(first), "the event runs at the expiry");
    assert_eq!(event.zone, "+00:00", "written in UTC, whatever the server's zone");
    assert_eq!(event.definer, format!("{}@%", admin.username), "the event runs as the admin");

    let renewed = first + Duration::from_secs(3600);
    let update = UpdateUser { username: Username::parse(&user).unwrap(), password: None, expires_at: Some(renewed) };
    backend.update_user(&endpoint, &admin, update).await.unwrap();
    let event = env.mariadb_expiry_event(&user).await.expect("the event is still there");
    assert_eq!(event.execute_at, epoch_seconds(renewed), "renewal moves the event");

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    assert!(backend.delete_user(&endpoint, &admin, request).await.unwrap().existed);
    assert_eq!(env.mariadb_expiry_event(&user).await, None, "deleting the user drops its event");
    assert!(!env.mariadb_user_exists(&user).await);
}

/// The connections `user` has open on the server, by id.
async fn connections_of(env: &TestEnv, user: &str) -> Vec<String> {
    env.mariadb_admin()
        .await
        .exec("SELECT CAST(ID AS CHAR) AS id FROM information_schema.PROCESSLIST WHERE USER = ? ORDER BY ID", (user,))
        .await
        .unwrap()
}

/// An admin of its own (its connections are its test's alone) holding only what the
/// README lists for dynamic users, with or without the EVENT privilege expiry needs.
async fn least_privileged_admin(env: &TestEnv, group: &str, event: bool) -> Credentials {
    let name = env.unique("kt_admin");
    let password = random_token();
    env.create_mariadb_account(&name, &password, "").await;
    let account = format!("{}@'%'", literal(&name));
    let mut grants = vec![
        format!("GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {account}"),
        format!("GRANT SELECT ON mysql.user TO {account}"),
        format!("GRANT UPDATE ON mysql.* TO {account}"),
        format!("GRANT {} TO {account} WITH ADMIN OPTION", identifier(group)),
    ];
    if event {
        grants.push(format!("GRANT CREATE, EVENT ON `keyturn`.* TO {account}"));
    }
    let mut root = env.mariadb_admin().await;
    for sql in grants {
        root.query_drop(sql).await.unwrap();
    }
    Credentials { username: Username::parse(&name).unwrap(), password: password.into() }
}

#[tokio::test]
async fn an_admin_that_cannot_make_the_expiry_event_leaves_no_user_behind() {
    let env = TestEnv::new("mdynnoev").await;
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, false).await;
    let user = env.unique("kt_u");
    let err = env
        .mariadb_backend()
        .new_user(&env.mariadb_endpoint(), &admin, new_user(&user, &group, &random_token()))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("event") && message.contains("Access denied"), "{message}");
    assert!(!env.mariadb_user_exists(&user).await, "the user made before the failure is dropped again");
}

#[tokio::test]
async fn the_admin_session_is_kept_across_calls_and_replaced_once_killed() {
    let env = TestEnv::new("mdynkeep").await;
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, true).await;
    let name = admin.username.to_string();
    let mut root = env.mariadb_admin().await;
    let (backend, endpoint) = (env.mariadb_backend(), env.mariadb_endpoint());

    let first = env.unique("kt_u1");
    let outcome = backend.new_user(&endpoint, &admin, new_user(&first, &group, &random_token())).await.unwrap();
    assert!(outcome.server_expiry);
    let kept = connections_of(&env, &name).await;
    assert_eq!(kept.len(), 1, "the admin session stays open after the call");
    let prefix = ListUsers { prefix: env.unique("kt_u") };
    assert_eq!(backend.list_users(&endpoint, &admin, prefix.clone()).await.unwrap().len(), 1);
    let renew = UpdateUser {
        username: Username::parse(&first).unwrap(),
        password: Some(random_token().into()),
        expires_at: Some(SystemTime::now() + Duration::from_secs(900)),
    };
    backend.update_user(&endpoint, &admin, renew).await.unwrap();
    assert_eq!(connections_of(&env, &name).await, kept, "the same session serves every call");

    root.query_drop(format!("KILL CONNECTION {}", kept[0])).await.unwrap();
    let second = env.unique("kt_u2");
    backend.new_user(&endpoint, &admin, new_user(&second, &group, &random_token())).await.expect("a new session");
    let replaced = connections_of(&env, &name).await;
    assert_eq!(replaced.len(), 1, "one session per endpoint and admin");
    assert_ne!(replaced, kept, "the killed session was replaced");
    assert_eq!(backend.list_users(&endpoint, &admin, prefix).await.unwrap().len(), 2);
    for user in [first, second] {
        let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
        assert!(backend.delete_user(&endpoint, &admin, request).await.unwrap().existed);
        assert_eq!(env.mariadb_expiry_event(&user).await, None);
    }
    assert_eq!(connections_of(&env, &name).await, replaced);
}
