//! MariaDB with its event scheduler OFF: new users get no expiry event and report that
//! only the reaper enforces their expiry; renewal and deletion work without one. A test
//! binary of its own, because it turns the scheduler off for the whole server, which the
//! tests of `mariadb_dynamic.rs` share and need on.

use std::time::{Duration, SystemTime};

use keyturn::backend::{DeleteUser, DynamicUsers, NewUser, UpdateUser, Username};
use keyturn_tests::{random_token, TestEnv};
use mysql_async::prelude::Queryable;

#[tokio::test]
async fn without_the_event_scheduler_a_mariadb_user_has_no_server_expiry() {
    let env = TestEnv::new("mdynoff").await;
    env.mariadb_admin().await.query_drop("SET GLOBAL event_scheduler = OFF").await.unwrap();
    let (group, _) = env.mariadb_group_with_table("grp").await;
    let (backend, endpoint, admin) = (env.mariadb_backend(), env.mariadb_endpoint(), env.mariadb_admin_credentials());
    let user = env.unique("kt_u");
    let password = random_token();
    let request = NewUser {
        username: Username::parse(&user).unwrap(),
        groups: vec![group],
        password: password.clone().into(),
        expires_at: SystemTime::now() + Duration::from_secs(600),
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
