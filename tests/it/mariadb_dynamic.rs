//! Short-lived MariaDB users ([`DynamicUsers`]) against a real server, with keyturn's admin
//! holding what Amazon RDS gives a master user (no CONNECTION ADMIN: it ends other users'
//! sessions with `mysql.rds_kill`): a new user logs in and reads through its group role, a
//! new password replaces the old, and deleting it ends its open session, refuses its login
//! and succeeds again when it is already gone; an admin that cannot end or see the
//! sessions fails the deletion instead. On the server whose event scheduler is ON (zone not
//! UTC) the server drops the user and ends its sessions at its expiry by itself; renewal
//! moves that event and deletion drops it. The admin session is kept across calls, and
//! replaced when the server killed it, by an admin holding only what docs/database-admins.md lists.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyturn::backend::mysql::grants::identifier;
use keyturn::backend::mysql::{literal, native_password_hash};
use keyturn::backend::{BackendError, Credentials, DeleteUser, DynamicUsers, ListUsers, NewUser, UpdateUser, Username};
use keyturn_tests::{random_token, TestEnv};
use mysql_async::prelude::Queryable;

fn new_user(name: &str, group: &str, password: &str) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        groups: vec![group.to_owned()],
        password: password.to_owned().into(),
        expires_at: SystemTime::now() + Duration::from_secs(600),
        connection_limit: keyturn::lease::kind::database::DEFAULT_CONNECTION_LIMIT,
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
    let env = TestEnv::new("mdynexp").await.with_event_scheduler();
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
    let env = TestEnv::new("mdynmove").await.with_event_scheduler();
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

/// What a least-privileged admin of dynamic users may be given (docs/database-admins.md's list).
#[derive(Clone, Copy)]
struct AdminGrants {
    /// EVENT and CREATE on the `keyturn` schema, for expiry events.
    event: bool,
    /// PROCESS, to see other users' sessions.
    process: bool,
    /// EXECUTE on `mysql.rds_kill`, to end them.
    rds_kill: bool,
}

const ALL_GRANTS: AdminGrants = AdminGrants { event: true, process: true, rds_kill: true };

/// An admin of its own (its connections are its test's alone) holding only what
/// docs/database-admins.md lists for dynamic users on RDS, less what `grants` leaves out. Made by the RDS
/// master user, as an operator on RDS would.
async fn least_privileged_admin(env: &TestEnv, group: &str, grants: AdminGrants) -> Credentials {
    let name = env.unique("kt_admin");
    let password = random_token();
    env.create_mariadb_account(&name, &password, "").await;
    let account = format!("{}@'%'", literal(&name));
    let mut statements = vec![
        format!("GRANT CREATE USER ON *.* TO {account}"),
        format!("GRANT SELECT ON mysql.user TO {account}"),
        format!("GRANT UPDATE ON mysql.* TO {account}"),
        format!("GRANT {} TO {account} WITH ADMIN OPTION", identifier(group)),
        format!("GRANT SELECT ON performance_schema.threads TO {account}"),
    ];
    if grants.process {
        statements.push(format!("GRANT PROCESS ON *.* TO {account}"));
    }
    if grants.rds_kill {
        statements.push(format!("GRANT EXECUTE ON PROCEDURE mysql.rds_kill TO {account}"));
    }
    if grants.event {
        statements.push(format!("GRANT CREATE, EVENT ON `keyturn`.* TO {account}"));
    }
    let mut master = env.mariadb_admin().await;
    for sql in statements {
        master.query_drop(sql).await.unwrap();
    }
    Credentials { username: Username::parse(&name).unwrap(), password: password.into() }
}

#[tokio::test]
async fn an_admin_that_cannot_make_the_expiry_event_leaves_no_user_behind() {
    let env = TestEnv::new("mdynnoev").await.with_event_scheduler();
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, AdminGrants { event: false, ..ALL_GRANTS }).await;
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
    let env = TestEnv::new("mdynkeep").await.with_event_scheduler();
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, ALL_GRANTS).await;
    let name = admin.username.to_string();
    let mut root = env.mariadb_root().await;
    let (backend, endpoint) = (env.mariadb_backend(), env.mariadb_endpoint());

    let first = env.unique("kt_u1");
    let outcome = backend.new_user(&endpoint, &admin, new_user(&first, &group, &random_token())).await.unwrap();
    assert!(outcome.server_expiry);
    let kept = env.mariadb_sessions_of(&name).await;
    assert_eq!(kept.len(), 1, "the admin session stays open after the call");
    let prefix = ListUsers { prefix: env.unique("kt_u") };
    assert_eq!(backend.list_users(&endpoint, &admin, prefix.clone()).await.unwrap().len(), 1);
    let renew = UpdateUser {
        username: Username::parse(&first).unwrap(),
        password: Some(random_token().into()),
        expires_at: Some(SystemTime::now() + Duration::from_secs(900)),
    };
    backend.update_user(&endpoint, &admin, renew).await.unwrap();
    assert_eq!(env.mariadb_sessions_of(&name).await, kept, "the same session serves every call");

    root.query_drop(format!("KILL CONNECTION {}", kept[0])).await.unwrap();
    let second = env.unique("kt_u2");
    backend.new_user(&endpoint, &admin, new_user(&second, &group, &random_token())).await.expect("a new session");
    let replaced = env.mariadb_sessions_of(&name).await;
    assert_eq!(replaced.len(), 1, "one session per endpoint and admin");
    assert_ne!(replaced, kept, "the killed session was replaced");
    assert_eq!(backend.list_users(&endpoint, &admin, prefix).await.unwrap().len(), 2);
    for user in [first, second] {
        let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
        assert!(backend.delete_user(&endpoint, &admin, request).await.unwrap().existed);
        assert_eq!(env.mariadb_expiry_event(&user).await, None);
    }
    assert_eq!(env.mariadb_sessions_of(&name).await, replaced);
}

/// The admin keyturn gets in these tests is what RDS gives a MariaDB master user, no more:
/// it may not end another user's session with `KILL` nor change the server's settings,
/// and ends sessions only through `mysql.rds_kill`, which spares RDS's internal account.
/// The default server runs without its event scheduler, as RDS's default parameter group.
#[tokio::test]
async fn the_harness_admin_holds_only_what_rds_gives_its_master_user() {
    let env = TestEnv::new("mdynrds").await;
    let mut admin = env.mariadb_admin().await;
    let grants: Vec<String> = admin.query("SHOW GRANTS").await.unwrap();
    let global = grants.iter().find(|g| g.contains(" ON *.* ")).expect("a global grant");
    assert!(global.ends_with("WITH GRANT OPTION"), "{global}");
    for privilege in ["PROCESS", "CREATE USER", "EVENT", "EXECUTE", "UPDATE", "SELECT"] {
        assert!(global.contains(privilege), "{privilege} missing: {global}");
    }
    for privilege in ["ALL PRIVILEGES", "SUPER", "CONNECTION ADMIN", "SET USER", "READ_ONLY ADMIN", "SHUTDOWN"] {
        assert!(!global.contains(privilege), "{privilege} held: {global}");
    }
    let scheduler: Option<String> = admin.query_first("SELECT @@event_scheduler").await.unwrap();
    assert_eq!(scheduler.as_deref(), Some("OFF"));
    let err = admin.query_drop("SET GLOBAL event_scheduler = ON").await.unwrap_err();
    assert!(err.to_string().contains("SUPER"), "{err}");

    let user = env.unique("kt_other");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let mut other = env.mariadb_session(&user, &password).await.unwrap();
    let id: Option<u64> = other.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let id = id.unwrap();
    match admin.query_drop(format!("KILL CONNECTION {id}")).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1095, "{e}"),
        other => panic!("KILL of another user's session: {other:?}"),
    }
    other.query_drop("SELECT 1").await.expect("the refused KILL left the session open");
    admin.query_drop(format!("CALL mysql.rds_kill({id})")).await.expect("rds_kill");
    assert!(other.query_drop("SELECT 1").await.is_err(), "rds_kill ended the session");

    // The internal account's sessions are spared. It cannot log in (locked, and on
    // localhost only): a login of the same name over TCP stands for it, as rds_kill goes by
    // the session's user name.
    let internal_password = random_token();
    let hash = native_password_hash(&internal_password.clone().into());
    let mut root = env.mariadb_root().await;
    root.query_drop(format!("CREATE USER 'rdsadmin'@'127.0.0.1' IDENTIFIED BY PASSWORD '{hash}'")).await.unwrap();
    let mut internal = env.mariadb_session("rdsadmin", &internal_password).await.unwrap();
    let id: Option<u64> = internal.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let refused = admin.query_drop(format!("CALL mysql.rds_kill({})", id.unwrap())).await.unwrap_err();
    assert!(refused.to_string().contains("CANNOT KILL RDSADMIN SESSION"), "{refused}");
    internal.query_drop("SELECT 1").await.expect("the internal account's session goes on");
    root.query_drop("DROP USER 'rdsadmin'@'127.0.0.1'").await.unwrap();
}

/// An admin that may neither `KILL` another user's session nor call `mysql.rds_kill`
/// cannot end a deleted user's open session: the deletion fails, retryably, naming the
/// user, rather than reporting a revocation the session outlives. Once the admin may call
/// `rds_kill`, the retry ends the session and succeeds.
#[tokio::test]
async fn an_admin_that_cannot_end_the_sessions_fails_the_deletion_until_it_can() {
    let env = TestEnv::new("mdynnokill").await;
    let (group, table) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, AdminGrants { rds_kill: false, ..ALL_GRANTS }).await;
    let (backend, endpoint) = (env.mariadb_backend(), env.mariadb_endpoint());
    let user = env.unique("kt_u");
    let password = random_token();
    backend.new_user(&endpoint, &admin, new_user(&user, &group, &password)).await.unwrap();
    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    session.query_drop(format!("SELECT id FROM {table}")).await.unwrap();

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    let err = backend.delete_user(&endpoint, &admin, request.clone()).await.unwrap_err();
    let message = err.to_string();
    assert!(err.is_retryable(), "{message}");
    assert!(message.contains(&format!("{user:?}")) && message.contains("could not be ended"), "{message}");
    assert!(!env.can_login_mariadb(&user, &password).await, "the user is dropped all the same");
    assert_eq!(env.mariadb_sessions_of(&user).await.len(), 1, "the failure reported is real");

    let account = format!("{}@'%'", literal(admin.username.as_str()));
    let grant = format!("GRANT EXECUTE ON PROCEDURE mysql.rds_kill TO {account}");
    env.mariadb_admin().await.query_drop(grant).await.unwrap();
    let outcome = backend.delete_user(&endpoint, &admin, request).await.expect("the retry ends the session");
    assert!(!outcome.existed);
    assert_eq!(outcome.sessions_ended, 1);
    assert!(session.query_drop(format!("SELECT id FROM {table}")).await.is_err(), "the session is ended");
    assert!(env.mariadb_sessions_of(&user).await.is_empty());
}

/// docs/database-admins.md's least-privileged admin, on a server whose performance_schema is ON, ends
/// a deleted user's session while it waits inside a `SQL SECURITY DEFINER` procedure
/// (listed under the procedure's definer, not the user): its `SELECT ON
/// performance_schema.threads` tells it the session's login.
#[tokio::test]
async fn the_least_privileged_admin_ends_a_session_inside_a_definer_routine() {
    let env = TestEnv::new("mdyndefiner").await.with_event_scheduler();
    let (group, table) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, ALL_GRANTS).await;
    let db = identifier(&group);
    let mut master = env.mariadb_admin().await;
    for sql in [
        format!("CREATE DEFINER = CURRENT_USER PROCEDURE {db}.`wait`(s DOUBLE) SQL SECURITY DEFINER DO SLEEP(s)"),
        format!("GRANT EXECUTE ON PROCEDURE {db}.`wait` TO {db}"),
    ] {
        master.query_drop(sql).await.unwrap();
    }
    let (backend, endpoint) = (env.mariadb_backend(), env.mariadb_endpoint());
    let user = env.unique("kt_u");
    let password = random_token();
    backend.new_user(&endpoint, &admin, new_user(&user, &group, &password)).await.unwrap();
    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    let id: u64 = session.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
    let inside = tokio::spawn(async move {
        let call = session.query_drop(format!("CALL {db}.`wait`(10)")).await;
        (call, session)
    });
    let mut root = env.mariadb_root().await;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let listed: Option<String> =
            root.exec_first("SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?", (id,)).await.unwrap();
        if listed.as_deref().is_some_and(|name| name != user) {
            break;
        }
        assert!(std::time::Instant::now() < until, "the session never ran as the definer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    let outcome = backend.delete_user(&endpoint, &admin, request).await.expect("the session is found and ended");
    assert_eq!(outcome.sessions_ended, 1);
    let (call, mut session) = inside.await.unwrap();
    assert!(call.is_err(), "the session was ended inside the procedure");
    assert!(session.query_drop(format!("SELECT id FROM {table}")).await.is_err());
    assert!(env.mariadb_sessions_of(&user).await.is_empty());
}

/// Without PROCESS an admin sees only its own sessions, so an empty list would prove
/// nothing: the deletion fails, naming what is missing, instead of succeeding blind.
#[tokio::test]
async fn an_admin_that_cannot_see_the_sessions_fails_the_deletion() {
    let env = TestEnv::new("mdynnoproc").await;
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let admin = least_privileged_admin(&env, &group, AdminGrants { process: false, ..ALL_GRANTS }).await;
    let (backend, endpoint) = (env.mariadb_backend(), env.mariadb_endpoint());
    let user = env.unique("kt_u");
    let password = random_token();
    backend.new_user(&endpoint, &admin, new_user(&user, &group, &password)).await.unwrap();
    let session = env.mariadb_session(&user, &password).await.unwrap();

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    let err = backend.delete_user(&endpoint, &admin, request).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("PROCESS") && message.contains(&format!("{user:?}")), "{message}");
    assert!(!env.can_login_mariadb(&user, &password).await, "the user is dropped all the same");
    drop(session);
}

/// MariaDB with its event scheduler OFF (RDS's default): new users get no expiry event and
/// report that only the reaper enforces their expiry; renewal and deletion work without one.
#[tokio::test]
async fn without_the_event_scheduler_a_mariadb_user_has_no_server_expiry() {
    let env = TestEnv::new("mdynoff").await;
    let scheduler: Option<String> = env.mariadb_root().await.query_first("SELECT @@event_scheduler").await.unwrap();
    assert_eq!(scheduler.as_deref(), Some("OFF"), "the default server runs as RDS's default parameter group");
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let (backend, endpoint, admin) = (env.mariadb_backend(), env.mariadb_endpoint(), env.mariadb_admin_credentials());
    let user = env.unique("kt_u");
    let password = random_token();
    let request = NewUser {
        username: Username::parse(&user).unwrap(),
        groups: vec![group],
        password: password.clone().into(),
        expires_at: SystemTime::now() + Duration::from_secs(600),
        connection_limit: keyturn::lease::kind::database::DEFAULT_CONNECTION_LIMIT,
    };
    let outcome = backend.new_user(&endpoint, &admin, request).await.unwrap();
    assert!(!outcome.server_expiry, "no scheduler, no server-side expiry");
    assert_eq!(env.mariadb_expiry_event(&user).await, None, "no event is made");
    assert!(env.can_login_mariadb(&user, &password).await);

    let renew = UpdateUser {
        username: Username::parse(&user).unwrap(),
        password: None,
        expires_at: Some(SystemTime::now() + Duration::from_secs(900)),
    };
    backend.update_user(&endpoint, &admin, renew).await.expect("renewal without an event");
    assert_eq!(env.mariadb_expiry_event(&user).await, None, "renewal makes no event either");

    let request = DeleteUser { username: Username::parse(&user).unwrap(), reassign_to: None };
    assert!(backend.delete_user(&endpoint, &admin, request).await.unwrap().existed);
    assert!(!env.mariadb_user_exists(&user).await);
}
