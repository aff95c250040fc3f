//! The dynamic credentials API attacked: what a caller of the API, a caller matching no
//! role, a direct invoker and a database user holding a lease can do, against real
//! PostgreSQL and moto (the same deployment shape as `lease_api.rs`). Each test plays one
//! attack and asserts the outcome the attack must not change.

use std::time::{Duration, Instant};

use keyturn::app::lease::Issuer;
use keyturn::lease::api::ApiRequest;
use keyturn::lease::service::{ReapLimits, ReapReport};
use keyturn::lease::store::LeaseStore;
use keyturn::lease::{kind::database, Credential, Lease, LeaseState};
use keyturn_tests::lease::{call, deploy, deploy_in, issue_ci, reap_limits, Deployment, Engine, CI, STRANGER};
use keyturn_tests::{apigw, TestEnv};
use postgres_protocol::escape::escape_identifier;
use serde_json::{json, Value};

async fn setup(test: &str, extra: &str) -> Deployment {
    deploy(test, Engine::Postgres, extra).await
}

async fn role_exists(env: &TestEnv, user: &str) -> bool {
    env.pg_superuser().await.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user]).await.unwrap().is_some()
}

/// Waits until `n` of keyturn's sessions (application_name `keyturn`) wait on a lock.
async fn wait_for_keyturn_lock_waiters(env: &TestEnv, n: i64) {
    let admin = env.pg_superuser().await;
    let until = Instant::now() + Duration::from_secs(4);
    loop {
        let row = admin
            .query_one(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'keyturn' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap();
        if row.get::<_, i64>("n") >= n {
            return;
        }
        assert!(Instant::now() < until, "{n} keyturn sessions never waited on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A lease holder connects to another database of the server (every database grants
/// CONNECT to PUBLIC unless its owner revoked it: `postgres` and `template1` on a stock
/// server) and records default privileges for itself there, which needs no privilege at
/// all. `DROP OWNED` and `REASSIGN OWNED` act on the current database only, so `DROP
/// ROLE` refused the user for as long as that entry existed: the lease stayed `revoking`
/// for ever, its slot of `max_leases` taken, the user left behind.
#[tokio::test]
async fn a_default_privilege_in_another_database_does_not_block_revocation() {
    let s = setup("atkdefacl", "max_leases = 1").await;
    let (user, password, lease) = issue_ci(&s.service, 600).await;
    let other = s.env.unique("otherdb");
    s.env.pg_superuser().await.batch_execute(&format!("CREATE DATABASE {}", escape_identifier(&other))).await.unwrap();

    let session = s.env.pg_login_to(&other, &user, &password).await.expect("login");
    session
        .batch_execute(&format!(
            "SET ROLE NONE; ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON TABLES TO PUBLIC",
            escape_identifier(&user)
        ))
        .await
        .expect("any role may set default privileges for itself");

    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    assert!(!role_exists(&s.env, &user).await, "the user is dropped");
    let stored = s.service.store().get(&lease).await.unwrap().unwrap();
    assert_eq!(stored.state.as_str(), "revoked", "{stored:?}");
    assert_eq!(s.service.store().count_live("ci").await.unwrap(), 0, "the slot of max_leases is free again");
    issue_ci(&s.service, 60).await;
}

/// Another database user (here the attacker's second lease) holds a lock on a table the
/// first lease's user owns, so that user's revocation fails at the server's statement
/// timeout. That one failure must stay that lease's: the admin session the function keeps
/// across invocations must not be left inside an aborted transaction, where every later
/// statement (other callers' issues, revocations, the sweep) fails until the container
/// is recycled, and other leases' open sessions outlive their revocation.
#[tokio::test]
async fn a_revocation_blocked_by_a_lock_leaves_the_admin_session_usable() {
    let s = setup("atklock", "").await;
    let (a_user, a_password, a_lease) = issue_ci(&s.service, 600).await;
    let (b_user, b_password, _) = issue_ci(&s.service, 600).await;
    let (c_user, c_password, c_lease) = issue_ci(&s.service, 600).await;

    // A, as itself rather than as the group, makes a table in the group's schema and lets
    // everyone read it; B locks it in a transaction it leaves open.
    let owned = format!("{}.{}", escape_identifier(&s.group), escape_identifier(&format!("{a_user}_t")));
    let a = s.env.pg_login(&a_user, &a_password).await.unwrap();
    a.batch_execute(&format!("SET ROLE NONE; CREATE TABLE {owned} (x int); GRANT SELECT ON {owned} TO PUBLIC"))
        .await
        .unwrap();
    let b = s.env.pg_login(&b_user, &b_password).await.unwrap();
    b.batch_execute(&format!("BEGIN; LOCK TABLE {owned} IN ACCESS SHARE MODE")).await.unwrap();
    let c = s.env.pg_login(&c_user, &c_password).await.unwrap();

    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{a_lease}"), None, CI).await;
    assert_eq!((status, body["retryable"].as_bool()), (503, Some(true)), "blocked, and worth retrying: {body}");

    // The holder of C revokes it, and another caller gets credentials, in the same
    // container.
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{c_lease}"), None, CI).await;
    assert_eq!(status, 204, "C's revocation is not A's failure: {body}");
    assert!(c.simple_query("SELECT 1").await.is_err(), "C's open session is ended");
    assert!(!role_exists(&s.env, &c_user).await);
    issue_ci(&s.service, 60).await;

    // Once the lock is gone, A's revocation goes through.
    b.batch_execute("ROLLBACK").await.unwrap();
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{a_lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    assert!(!role_exists(&s.env, &a_user).await);
}

/// The reaper and the holder revoke the same lease at once (two containers, two admin
/// sessions): both delete the user, and whichever comes second finds it gone. That is
/// success, not a 500 for the holder nor a failure the reaper records.
#[tokio::test]
async fn concurrent_revocations_of_one_lease_both_succeed() {
    let s = setup("atkrace", "").await;
    let (user, password, lease) = issue_ci(&s.service, 60).await;
    let owned = format!("{}.{}", escape_identifier(&s.group), escape_identifier(&format!("{user}_t")));
    let session = s.env.pg_login(&user, &password).await.unwrap();
    session.batch_execute(&format!("SET ROLE NONE; CREATE TABLE {owned} (x int)")).await.unwrap();
    drop(session);

    // A lock held by the test makes each revocation wait at REASSIGN OWNED, so that both
    // are inside their delete when the first completes.
    let holder = s.env.pg_superuser().await;
    holder.batch_execute(&format!("BEGIN; LOCK TABLE {owned} IN ACCESS EXCLUSIVE MODE")).await.unwrap();
    let reaper = s.env.lease_service(&s.vars, 120);
    let reaping = tokio::spawn(async move { reaper.reap(reap_limits()).await });
    wait_for_keyturn_lock_waiters(&s.env, 1).await;
    let api = s.env.lease_service(&s.vars, 0);
    let path = format!("/v1/leases/{lease}");
    let deleting = tokio::spawn(async move { call(&api, "DELETE", &path, None, CI).await });
    wait_for_keyturn_lock_waiters(&s.env, 2).await;
    holder.batch_execute("ROLLBACK").await.unwrap();

    let report = reaping.await.unwrap().unwrap();
    let (status, body) = deleting.await.unwrap();
    // Whichever record landed last, the lease ends revoked (a failure recorded after the
    // success would leave it `revoking` until the next run).
    let stored = s.service.store().get(&lease).await.unwrap().unwrap();
    assert_eq!(status, 204, "{body} {stored:?}");
    assert_eq!((report.revoked + report.skipped, report.failed), (1, 0), "{report:?} {stored:?}");
    assert!(report.sweep_errors.is_empty(), "{report:?}");
    assert!(!role_exists(&s.env, &user).await);
    assert_eq!(stored.state.as_str(), "revoked", "{stored:?}");
}

/// A caller that matches no role asks for roles that exist and roles that do not: the
/// answers must be the same, or it lists the deployment's role names by trying.
#[tokio::test]
async fn a_caller_matching_no_role_cannot_tell_which_roles_exist() {
    let s = setup("atkenum", "").await;
    let (status_real, real) = call(&s.service, "POST", "/v1/credentials/ci", None, STRANGER).await;
    let (status_none, none) = call(&s.service, "POST", "/v1/credentials/no-such-role", None, STRANGER).await;
    assert_eq!(status_real, status_none, "{real} / {none}");
    assert_eq!(real["code"], none["code"]);
    assert_eq!(
        real["message"].as_str().unwrap().replace("\"ci\"", "\"R\""),
        none["message"].as_str().unwrap().replace("\"no-such-role\"", "\"R\"")
    );
    // A caller that may request role ci learns nothing more about other names either.
    let (status, body) = call(&s.service, "POST", "/v1/credentials/no-such-role", None, CI).await;
    assert_eq!(status, status_none, "{body}");
}

/// Events that did not come through the HTTP API's IAM authorizer, as a direct invoker
/// or another integration would send them: none is served as anybody, none changes
/// anything, each answers a 4xx.
#[tokio::test]
async fn events_of_other_shapes_are_refused() {
    let s = setup("atkshape", "").await;
    let sample = apigw::request("POST", "/v1/credentials/ci", None, CI);
    let mut v1 = sample.clone();
    v1["version"] = json!("1.0");
    let mut no_iam = sample.clone();
    no_iam["requestContext"]["authorizer"] = json!({"lambda": {"userArn": CI}});
    let mut jwt = sample.clone();
    jwt["requestContext"]["authorizer"] = json!({"jwt": {"claims": {"sub": CI}}, "iam": null});
    let mut url_none = sample.clone();
    url_none["requestContext"].as_object_mut().unwrap().remove("authorizer");
    url_none["requestContext"]["domainName"] = json!("abc.lambda-url.us-east-1.on.aws");
    let mut empty_arn = sample.clone();
    empty_arn["requestContext"]["authorizer"]["iam"]["userArn"] = json!("");
    let mut arn_elsewhere = sample.clone();
    arn_elsewhere["requestContext"]["authorizer"]["iam"].as_object_mut().unwrap().remove("userArn");
    arn_elsewhere["requestContext"]["identity"] = json!({"userArn": CI});
    let rest_v1 = json!({
        "resource": "/v1/credentials/{role}", "path": "/v1/credentials/ci", "httpMethod": "POST",
        "requestContext": {"identity": {"userArn": CI}, "httpMethod": "POST", "stage": "prod"},
        "body": null, "isBase64Encoded": false
    });
    let alb = json!({
        "requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/y"}},
        "httpMethod": "POST", "path": "/v1/credentials/ci", "headers": {}, "body": "", "isBase64Encoded": false
    });
    let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
    for (name, event) in [
        ("payload 1.0", v1),
        ("a Lambda authorizer's context", no_iam),
        ("a JWT authorizer's context", jwt),
        ("a function URL without auth", url_none),
        ("an empty userArn", empty_arn),
        ("a userArn outside the IAM authorizer's context", arn_elsewhere),
        ("a REST API event", rest_v1),
        ("an ALB event", alb),
        ("an EventBridge event", scheduled),
        ("null", Value::Null),
    ] {
        let refused = ApiRequest::from_event(event).expect_err(name);
        assert!((400..500).contains(&refused.status), "{name}: {}", refused.status);
        let out = refused.into_event();
        assert!(out["body"].as_str().unwrap().contains("\"code\""), "{name}: {out}");
    }
    assert_eq!(s.service.store().count_live("ci").await.unwrap(), 0);
    let rows = s
        .env
        .pg_superuser()
        .await
        .query("SELECT 1 FROM pg_roles WHERE starts_with(rolname::text, $1)", &[&s.prefix])
        .await
        .unwrap();
    assert!(rows.is_empty());
}

/// MariaDB: role `ci` whose group holds every privilege on an application database
/// (`ALL PRIVILEGES ON app.*`, EVENT included), as applications' roles often do, on the
/// server whose event scheduler is ON. Returns the setup, the application database and
/// its table. Granted by the server's superuser: ALL on a database includes DELETE
/// HISTORY, which RDS does not give its master user.
async fn mariadb_setup(test: &str) -> (TestEnv, Issuer, String, String) {
    use keyturn::backend::mysql::grants::identifier;
    use mysql_async::prelude::Queryable;
    let d = deploy_in(TestEnv::new(test).await.with_event_scheduler(), Engine::Mariadb, "").await;
    d.env
        .mariadb_root()
        .await
        .query_drop(format!("GRANT ALL PRIVILEGES ON {}.* TO {}", identifier(&d.group), identifier(&d.group)))
        .await
        .unwrap();
    (d.env, d.service, d.group, d.table)
}

/// A MariaDB lease holder keeps a session open across its revocation, on a server where
/// keyturn's admin is what RDS gives a master user: `KILL` of another user's session is
/// refused, and `mysql.rds_kill` ends it. The revocation succeeds only with the session
/// cut off: its next statement fails.
#[tokio::test]
async fn a_mariadb_lease_holder_keeps_no_session_past_revocation() {
    use mysql_async::prelude::Queryable;
    let d = deploy("atkmkeep", Engine::Mariadb, "").await;
    let (user, password, lease) = issue_ci(&d.service, 600).await;
    let mut session = d.env.mariadb_session(&user, &password).await.unwrap();
    session.query_drop(format!("SELECT id FROM {}", d.table)).await.expect("the lease works");

    let (status, body) = call(&d.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    let after = session.query_drop(format!("SELECT id FROM {}", d.table)).await;
    assert!(after.is_err(), "the session opened under the lease still reads after its revocation");
    assert!(d.env.mariadb_sessions_of(&user).await.is_empty());
    assert!(!d.env.mariadb_user_exists(&user).await);
}

/// The same through the server's expiry event, with nothing of keyturn running after the
/// issue: the event runs as the RDS-like admin, so it too must end the session through
/// `mysql.rds_kill`.
#[tokio::test]
async fn a_mariadb_lease_holder_keeps_no_session_past_its_expiry_event() {
    use mysql_async::prelude::Queryable;
    let d = deploy_in(TestEnv::new("atkmexpkeep").await.with_event_scheduler(), Engine::Mariadb, "").await;
    let (user, password, _lease) = issue_ci(&d.service, 2).await;
    let mut session = d.env.mariadb_session(&user, &password).await.unwrap();
    session.query_drop(format!("SELECT id FROM {}", d.table)).await.expect("the lease works");
    d.env.mariadb_expiry_event(&user).await.expect("the server enforces the expiry");

    let deadline = Instant::now() + Duration::from_secs(12);
    while session.query_drop(format!("SELECT id FROM {}", d.table)).await.is_ok() {
        assert!(Instant::now() < deadline, "the session opened under the lease outlived its expiry by 10 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!d.env.mariadb_user_exists(&user).await);
    assert!(d.env.mariadb_sessions_of(&user).await.is_empty());
}

/// A MariaDB lease user whose group may create events in its application database tries
/// to cancel or postpone the event that drops it at its expiry (kept in the `keyturn`
/// schema for that reason), and to plant one of its own there.
#[tokio::test]
async fn a_mariadb_user_cannot_alter_or_drop_its_expiry_event() {
    use keyturn::backend::mysql::expiry::{event_name, EVENT_SCHEMA};
    use mysql_async::prelude::Queryable;
    let (env, service, _group, _table) = mariadb_setup("atkmevent").await;
    let (user, password, lease) = issue_ci(&service, 600).await;
    let event = format!("`{EVENT_SCHEMA}`.`{}`", event_name(&keyturn::backend::Username::parse(&user).unwrap()));
    let before = env.mariadb_expiry_event(&user).await.expect("the server enforces the expiry");
    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    for sql in [
        format!("DROP EVENT {event}"),
        format!("ALTER EVENT {event} ON SCHEDULE AT NOW() + INTERVAL 1 YEAR"),
        format!("ALTER EVENT {event} DISABLE"),
        format!("ALTER EVENT {event} RENAME TO `{EVENT_SCHEMA}`.`mine`"),
        format!("CREATE EVENT `{EVENT_SCHEMA}`.`mine` ON SCHEDULE AT NOW() + INTERVAL 1 HOUR DO SELECT 1"),
        "SET ROLE NONE".to_owned(),
        format!("DROP EVENT {event}"),
    ] {
        if sql == "SET ROLE NONE" {
            session.query_drop(&sql).await.unwrap();
            continue;
        }
        let refused = session.query_drop(&sql).await;
        assert!(refused.is_err(), "{sql} was allowed");
    }
    assert_eq!(env.mariadb_expiry_event(&user).await, Some(before), "the event is as keyturn made it");
    let (status, body) = call(&service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    assert!(!env.mariadb_user_exists(&user).await);
}

/// A MariaDB lease user whose group may create events (`ALL PRIVILEGES ON app.*`
/// includes EVENT) leaves code behind that runs as the group after its lease is revoked:
/// an event created `DEFINER = CURRENT_ROLE` belongs to the group, not to the user, so
/// neither dropping the user nor killing its sessions stops it (an event defined as the
/// user itself would not run at all: a definer's default role is not active in events).
/// keyturn cannot tell which role-defined objects a lease made; docs/security.md says to keep
/// EVENT (and TRIGGER, CREATE ROUTINE, CREATE VIEW) out of groups whose leases must end
/// everything they started. This test pins the limit so that a fix shows up: invert it then.
#[tokio::test]
async fn a_mariadb_group_with_event_lets_a_lease_leave_code_running_after_revocation() {
    use mysql_async::prelude::Queryable;
    let (env, service, group, table) = mariadb_setup("atkmloop").await;
    let (user, password, lease) = issue_ci(&service, 600).await;
    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    let db = keyturn::backend::mysql::grants::identifier(&group);
    session
        .query_drop(format!(
            "CREATE DEFINER = CURRENT_ROLE EVENT {db}.`keep_going` ON SCHEDULE AT NOW() DO BEGIN \
               DECLARE i INT DEFAULT 0; \
               WHILE i < 300 DO INSERT INTO {table} VALUES (99); DO SLEEP(0.1); SET i = i + 1; END WHILE; \
             END"
        ))
        .await
        .expect("the group may create events in its database");
    let count = || async {
        let n: Option<i64> =
            env.mariadb_admin().await.query_first(format!("SELECT COUNT(*) FROM {table} WHERE id = 99")).await.unwrap();
        n.unwrap_or(0)
    };
    let until = Instant::now() + Duration::from_secs(5);
    while count().await == 0 {
        assert!(Instant::now() < until, "the user's event never wrote");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, body) = call(&service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_revocation = count().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = count().await;
    let threads: Vec<String> = env
        .mariadb_admin()
        .await
        .exec("SELECT CAST(ID AS CHAR) FROM information_schema.PROCESSLIST WHERE USER = ?", (user.as_str(),))
        .await
        .unwrap();
    assert!(!env.mariadb_user_exists(&user).await);
    assert!(threads.is_empty(), "no session or thread runs as the user: {threads:?}");
    assert!(later > after_revocation, "the group's event still writes after the lease is revoked");
}

/// A PostgreSQL lease user tries to outlive its lease from inside: push its own expiry,
/// rename itself (out of keyturn's form, so neither revocation nor the sweep finds it),
/// give itself attributes, make a role of keyturn's form or another login. All refused
/// (its group has no CREATEROLE); changing its own password, which it may, stops nothing:
/// revocation logs in as the admin.
#[tokio::test]
async fn a_postgres_lease_user_cannot_extend_rename_or_multiply_itself() {
    let s = setup("atkpgself", "").await;
    let (user, password, lease) = issue_ci(&s.service, 600).await;
    let me = escape_identifier(&user);
    let session = s.env.pg_login(&user, &password).await.unwrap();
    for sql in [
        format!("ALTER ROLE {me} VALID UNTIL 'infinity'"),
        format!("ALTER ROLE {me} RENAME TO {}", escape_identifier(&format!("{user}x"))),
        format!("ALTER ROLE {me} CREATEROLE"),
        format!("ALTER ROLE {me} CONNECTION LIMIT 100"),
        format!("CREATE ROLE {} LOGIN", escape_identifier(&format!("{}ci_0123456789abcdefghij", s.prefix))),
        format!("GRANT {me} TO {}", escape_identifier(&s.group)),
        format!("SET ROLE NONE; ALTER ROLE {me} VALID UNTIL 'infinity'"),
    ] {
        assert!(session.batch_execute(&sql).await.is_err(), "{sql} was allowed");
    }
    let verifier = postgres_protocol::password::scram_sha_256(b"mine now");
    session
        .batch_execute(&format!(
            "SET ROLE NONE; ALTER ROLE {me} PASSWORD {}",
            postgres_protocol::escape::escape_literal(&verifier)
        ))
        .await
        .expect("a role may change its own password");
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    assert!(!role_exists(&s.env, &user).await);
    assert!(session.simple_query("SELECT 1").await.is_err());
}

/// A caller asks for a one-second lease while the database is slow to create its user
/// (here a superuser holds a lock that the user's `ALTER ROLE ... SET role` waits for). The
/// reaper finds the lease expired before the user exists, deletes nobody and marks it
/// revoked, which frees its slot of `max_leases`; then the user is created. The issuer
/// must not answer 201 with a password that works for a revoked lease, and the user must
/// not stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_racing_the_reaper_hands_out_no_password_of_a_revoked_lease() {
    let s = setup("atkissuerace", "max_leases = 1").await;
    let lock = s.env.pg_superuser().await;
    lock.batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_db_role_setting IN EXCLUSIVE MODE").await.unwrap();
    let api = s.env.lease_service(&s.vars, 0);
    let issuing =
        tokio::spawn(async move { call(&api, "POST", "/v1/credentials/ci", Some(r#"{"ttl_seconds": 1}"#), CI).await });
    // This deployment's user (its prefix is its own) waits on the lock, its lease written.
    // (Watched from another session: one inside a transaction sees one snapshot of it.)
    let watch = s.env.pg_superuser().await;
    let until = Instant::now() + Duration::from_secs(4);
    loop {
        let row = watch
            .query_one(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'keyturn' \
                 AND wait_event_type = 'Lock' AND strpos(query, $1) > 0",
                &[&s.prefix],
            )
            .await
            .unwrap();
        if row.get::<_, i64>("n") == 1 {
            break;
        }
        assert!(Instant::now() < until, "the user's creation never waited on the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let live = s.service.store().list_live_by_holder(CI, 10).await.unwrap();
    let [lease] = live.as_slice() else { panic!("one lease being issued: {live:?}") };
    // The lease expires while its user waits to be created (the reaper's clock is 5 s
    // ahead rather than the test sleeping); the reaper revokes it.
    let report = s.env.lease_service(&s.vars, 5).reap(reap_limits()).await.unwrap();
    assert_eq!(report.revoked, 1, "the reaper revoked the expired lease before its user existed: {report:?}");
    lock.batch_execute("COMMIT").await.unwrap();

    let (status, body) = issuing.await.unwrap();
    let lease = s.service.store().get(&lease.lease_id).await.unwrap().unwrap();
    assert_eq!(lease.state.as_str(), "revoked", "{lease:?}");
    assert_eq!(status, 409, "no credentials for a revoked lease: {body}");
    assert!(body.get("password").is_none(), "{body}");
    assert!(!role_exists(&s.env, &lease.username).await, "the user made after the revocation is dropped again");
}

/// Two roles share one admin secret, with different groups. A user of the second role is
/// left behind without a live lease (its revocation was lost) and owns a table it filled.
/// The reaper's sweep drops it and must hand the table to that role's own group, not to the
/// first role's (whose users would then read the other role's data); a user with no lease
/// on record goes by the role its name carries.
#[tokio::test]
async fn the_orphan_sweep_gives_an_orphans_objects_to_its_own_roles_group() {
    let env = TestEnv::new("atkorphangroup").await;
    let admin = env.create_secret("admin", &env.admin_secret()).await;
    let (first, _) = env.pg_group_with_table("grpa").await;
    let (second, _) = env.pg_group_with_table("grpb").await;
    let prefix = format!("t{}_", &keyturn_tests::random_token()[..6]);
    let role = |name: &str, group: &str| {
        format!(
            "[[role]]\nname = \"{name}\"\nkind = \"database\"\nadmin_secret = \"{admin}\"\ngroups = [\"{group}\"]\n\
             default_ttl = \"15m\"\nmax_ttl = \"1h\"\nallowed_principals = [\"arn:aws:iam::123456789012:role/ci-runner\"]\n"
        )
    };
    let roles = format!("username_prefix = \"{prefix}\"\n\n{}\n{}", role("aa", &first), role("bb", &second));
    let vars = env.lease_env(&roles).await;
    let service = env.lease_service(&vars, 0);

    let (status, answer) = call(&service, "POST", "/v1/credentials/bb", None, CI).await;
    assert_eq!(status, 201, "{answer}");
    let (user, password) = (answer["username"].as_str().unwrap(), answer["password"].as_str().unwrap());
    let owned = format!("{}.{}", escape_identifier(&second), escape_identifier(&format!("{user}_t")));
    let session = env.pg_login(user, password).await.unwrap();
    session.batch_execute(&format!("SET ROLE NONE; CREATE TABLE {owned} (secret text)")).await.unwrap();
    drop(session);
    // Its revocation was lost: the lease reads revoked, the user is still there.
    let lease = service.store().get(answer["lease_id"].as_str().unwrap()).await.unwrap().unwrap();
    let mut revoked = lease.clone();
    revoked.state = keyturn::lease::LeaseState::Revoked;
    revoked.version += 1;
    service.store().update(&revoked, keyturn::lease::store::Expected::of(&lease)).await.unwrap();
    // And one of role bb's form with no lease on record at all (made by hand).
    let unknown = format!("{prefix}bb_0123456789abcdefghij");
    let unknown_table = format!("{}.{}", escape_identifier(&second), escape_identifier(&format!("{unknown}_t")));
    env.create_role(&unknown, "by-hand").await;
    let grant = format!("GRANT {} TO {}", escape_identifier(&second), escape_identifier(&unknown));
    env.pg_admin_session().await.batch_execute(&grant).await.unwrap();
    let session = env.pg_login(&unknown, "by-hand").await.unwrap();
    session.batch_execute(&format!("CREATE TABLE {unknown_table} (secret text)")).await.unwrap();
    drop(session);

    let report = service.reap(reap_limits()).await.unwrap();
    assert!(report.sweep_errors.is_empty(), "{report:?}");
    let mut dropped = report.orphans_dropped.clone();
    dropped.sort();
    let mut expected = vec![user.to_owned(), unknown.clone()];
    expected.sort();
    assert_eq!(dropped, expected);
    for table in [&owned, &unknown_table] {
        let owner: String = env
            .pg_superuser()
            .await
            .query_one("SELECT relowner::regrole::text AS owner FROM pg_class WHERE oid = to_regclass($1)", &[table])
            .await
            .unwrap_or_else(|e| panic!("{table} is kept: {e}"))
            .get("owner");
        assert_eq!(owner, second, "{table} belongs to role bb's group, not role aa's ({first})");
    }
}

/// The PostgreSQL counterparts: a lease holder keeps three sessions busy across its
/// revocation, one inside a `SECURITY DEFINER` function its group owns, one after `SET
/// ROLE` to the group, one in a plain long `pg_sleep`. `pg_stat_activity.usename` is the
/// login role whatever the session's current role, so the revocation finds and ends all
/// three; none runs another statement.
#[tokio::test]
async fn a_postgres_session_running_as_another_role_does_not_survive_revocation() {
    let s = setup("atkpgdefiner", "").await;
    let (user, password, lease) = issue_ci(&s.service, 600).await;
    let group = escape_identifier(&s.group);
    let setup_session = s.env.pg_login(&user, &password).await.unwrap();
    setup_session
        .batch_execute(&format!(
            "CREATE FUNCTION {group}.hide(s float8) RETURNS void LANGUAGE sql SECURITY DEFINER AS 'SELECT pg_sleep(s)'"
        ))
        .await
        .expect("the group may create functions in its schema");
    drop(setup_session);

    let mut busy = Vec::new();
    for sql in [
        format!("SELECT {group}.hide(8)"),
        format!("SET ROLE NONE; SET ROLE {group}; SELECT pg_sleep(8)"),
        "SELECT pg_sleep(8)".to_owned(),
    ] {
        let session = s.env.pg_login(&user, &password).await.unwrap();
        let pid: i32 = session.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let table = s.table.clone();
        busy.push((
            pid,
            tokio::spawn(async move {
                let call = session.batch_execute(&sql).await;
                let after = session.batch_execute(&format!("SELECT id FROM {table}")).await;
                (call, after)
            }),
        ));
    }
    // Inside, each session's current role is the group (or still the user); its login is
    // the user's.
    let superuser = s.env.pg_superuser().await;
    let until = Instant::now() + Duration::from_secs(5);
    for (pid, _) in &busy {
        loop {
            let row = superuser
                .query_opt(
                    "SELECT usename::text AS login FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    &[pid],
                )
                .await
                .unwrap();
            if let Some(row) = row {
                assert_eq!(row.get::<_, String>("login"), user, "pg_stat_activity names the login role");
                break;
            }
            assert!(Instant::now() < until, "session {pid} never got busy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    for (pid, task) in busy {
        let (call_result, after) = task.await.unwrap();
        assert!(call_result.is_err(), "session {pid} was not cut off");
        assert!(after.is_err(), "session {pid} ran a statement after the revocation");
    }
    assert!(!role_exists(&s.env, &user).await);
}

/// A writer of one admin secret copies another admin secret's host, port, database and
/// username into it, with a password of their own, and a role names it. A container that
/// kept an admin session for the real secret must not serve that role on it: the forged
/// secret gets what a cold container gives it, the refused login.
async fn a_forged_admin_secret_rides_no_kept_session(test: &str, engine: Engine) {
    let env = TestEnv::new(test).await;
    let mut forged = match engine {
        Engine::Postgres => env.admin_secret(),
        Engine::Mariadb => env.mariadb_admin_secret(),
    };
    forged["password"] = json!("not the admin's password");
    let forged = env.create_secret("forged", &forged).await;
    let copycat = format!(
        r#"
[[role]]
name = "copycat"
kind = "database"
admin_secret = "{forged}"
groups = ["{}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#,
        env.unique("grp")
    );
    let s = deploy_in(env, engine, &copycat).await;
    issue_ci(&s.service, 600).await;

    let path = "/v1/credentials/copycat";
    let (warm, warm_body) = call(&s.service, "POST", path, None, CI).await;
    let cold_service = s.env.lease_service(&s.vars, 0);
    let (cold, cold_body) = call(&cold_service, "POST", path, None, CI).await;
    assert_ne!(warm, 201, "the forged admin secret was served on the real admin's session: {warm_body}");
    assert_eq!((warm, warm_body["code"].clone()), (cold, cold_body["code"].clone()), "{warm_body} / {cold_body}");
    issue_ci(&s.service, 600).await;
}

#[tokio::test]
async fn a_forged_postgres_admin_secret_rides_no_kept_session() {
    a_forged_admin_secret_rides_no_kept_session("atkpgforge", Engine::Postgres).await;
}

#[tokio::test]
async fn a_forged_mariadb_admin_secret_rides_no_kept_session() {
    a_forged_admin_secret_rides_no_kept_session("atkmforge", Engine::Mariadb).await;
}

/// The connection limit a role's users get when the roles file names none.
const DEFAULT_CONNECTION_LIMIT: usize = 10;

/// A PostgreSQL lease holder opens sessions until the server refuses one: without a limit
/// of its own it could take every connection the server has, the RDS-like admin's
/// (which has no reserved slot) included, and so block its own revocation. It gets the
/// role's limit, cannot raise it, and its revocation still ends every session it holds.
#[tokio::test]
async fn a_postgres_lease_holder_cannot_take_every_connection() {
    let s = setup("atkpgconns", "").await;
    let (user, password, lease) = issue_ci(&s.service, 600).await;
    let mut sessions = Vec::new();
    // One more than the limit, no further: a server without the limit is shared by the
    // tests running beside this one.
    let refused = loop {
        match s.env.pg_login(&user, &password).await {
            Ok(session) => sessions.push(session),
            Err(e) => break e,
        }
        assert!(sessions.len() <= DEFAULT_CONNECTION_LIMIT, "the lease holder opened {} sessions", sessions.len());
    };
    assert_eq!(sessions.len(), DEFAULT_CONNECTION_LIMIT);
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{refused}");

    // Not even as itself (NOCREATEROLE): only a role's creator or a superuser may.
    let me = escape_identifier(&user);
    let raised = sessions[0].batch_execute(&format!("SET ROLE NONE; ALTER ROLE {me} CONNECTION LIMIT -1")).await;
    let refusal = raised.expect_err("a lease user raised its own connection limit");
    assert_eq!(refusal.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{refusal}");

    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    for session in &sessions {
        assert!(session.simple_query("SELECT 1").await.is_err(), "a session outlived the revocation");
    }
    assert!(!role_exists(&s.env, &user).await);
}

/// A role's own `connection_limit` is what its users get.
#[tokio::test]
async fn a_roles_connection_limit_is_its_users_limit() {
    let s = setup("pgconnlimit", "connection_limit = 2").await;
    let (user, password, _) = issue_ci(&s.service, 600).await;
    let (_a, _b) = (s.env.pg_login(&user, &password).await.unwrap(), s.env.pg_login(&user, &password).await.unwrap());
    let third = s.env.pg_login(&user, &password).await.map(|_| ()).expect_err("a third session");
    assert_eq!(third.code(), Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS), "{third}");
    let superuser = s.env.pg_superuser().await;
    let row = superuser.query_one("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", &[&user]).await.unwrap();
    assert_eq!(row.get::<_, i32>("rolconnlimit"), 2);
}

/// The same on MariaDB (`MAX_USER_CONNECTIONS`), where keyturn's admin ends sessions with
/// `mysql.rds_kill` as on RDS: the holder of every session it may open is revoked whole.
#[tokio::test]
async fn a_mariadb_lease_holder_cannot_take_every_connection() {
    use mysql_async::prelude::Queryable;
    let d = deploy("atkmconns", Engine::Mariadb, "").await;
    let (user, password, lease) = issue_ci(&d.service, 600).await;
    let mut sessions = Vec::new();
    let refused = loop {
        match d.env.mariadb_session(&user, &password).await {
            Ok(session) => sessions.push(session),
            Err(e) => break e,
        }
        assert!(sessions.len() <= DEFAULT_CONNECTION_LIMIT, "the lease holder opened {} sessions", sessions.len());
    };
    assert_eq!(sessions.len(), DEFAULT_CONNECTION_LIMIT);
    // 1226: the user has exceeded its max_user_connections.
    assert!(matches!(&refused, mysql_async::Error::Server(e) if e.code == 1226), "{refused:?}");
    let raised = sessions[0].query_drop("ALTER USER CURRENT_USER() WITH MAX_USER_CONNECTIONS 0").await;
    assert!(raised.is_err(), "a lease user raised its own connection limit");

    let (status, body) = call(&d.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    for session in &mut sessions {
        assert!(session.query_drop("SELECT 1").await.is_err(), "a session outlived the revocation");
    }
    assert!(d.env.mariadb_sessions_of(&user).await.is_empty());
    assert!(!d.env.mariadb_user_exists(&user).await);
}

/// Role `stuck` on a database at `port` (the harness PostgreSQL's admin, another port), as
/// roles-file text to add after role `ci`; its admin secret's ARN and the text.
async fn role_at_port(env: &TestEnv, name: &str, port: u16) -> (String, String) {
    let mut secret = env.admin_secret();
    secret["port"] = json!(port);
    let arn = env.create_secret(name, &secret).await;
    let role = format!(
        r#"
[[role]]
name = "{name}"
kind = "database"
admin_secret = "{arn}"
groups = ["{}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#,
        env.unique("grp")
    );
    (arn, role)
}

/// One role's database accepts connections and never answers (a black-holed endpoint, a
/// frozen host). Its callers wait out the login timeout; nobody else may: the issuer serves
/// the healthy role meanwhile, and a reaper run revokes the healthy database's due leases
/// at once, whatever the silent one's do.
#[tokio::test]
async fn a_silent_database_holds_up_no_other() {
    let silent = keyturn_tests::stall::Silent::start();
    let env = TestEnv::new("slowpg").await;
    let (stuck_arn, stuck_role) = role_at_port(&env, "stuck", silent.port).await;
    let s = deploy_in(env, Engine::Postgres, &stuck_role).await;

    // A cold issuer: a caller of `stuck` waits on its login; a caller of `ci` does not.
    let issuer = s.env.lease_service(&s.vars, 0);
    let healthy = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let (status, body) = call(&issuer, "POST", "/v1/credentials/ci", Some(r#"{"ttl_seconds": 60}"#), CI).await;
        (status, body, started.elapsed())
    };
    let ((stuck_status, stuck_body), (status, body, waited)) =
        tokio::join!(call(&issuer, "POST", "/v1/credentials/stuck", None, CI), healthy);
    assert_eq!(status, 201, "{body}");
    assert!(waited < Duration::from_secs(2), "the healthy role waited {waited:?} for the silent database");
    assert_eq!(stuck_status, 503, "{stuck_body}");

    // Due leases on both databases, the silent one's first.
    let mut healthy_leases = vec![body["lease_id"].as_str().unwrap().to_owned()];
    for _ in 0..3 {
        healthy_leases.push(issue_ci(&s.service, 60).await.2);
    }
    put_due_leases(&s, "stuck", &stuck_arn, 2).await;

    let reaper = s.env.lease_service(&s.vars, 3600);
    let limits = ReapLimits { batch: 100, concurrency: 16, deadline: Instant::now() + Duration::from_secs(30) };
    let (report, took) = reap_watching(&reaper, limits, &healthy_leases, Duration::from_secs(30)).await;
    assert_eq!(report.revoked, healthy_leases.len(), "{report:?}");
    assert!(report.failed >= 2, "the silent database's revocations fail, to be retried: {report:?}");
    assert!(took < Duration::from_secs(3), "the healthy database's leases were revoked only after {took:?}");
}

/// Writes `n` leases of role `role` on `admin_arn`'s database that expired a minute ago,
/// as the issuer would have (their users were never made): due for the next reaper run.
async fn put_due_leases(s: &Deployment, role: &str, admin_arn: &str, n: usize) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for i in 0..n {
        let lease_id = format!("stuck{i}{}", &random_lowercase()[..14]);
        let lease = Lease {
            username: format!("{}{role}_{lease_id}", s.prefix),
            role: role.into(),
            credential: Credential::Database(database::Credential {
                admin_secret: admin_arn.to_owned(),
                group: s.group.clone(),
            }),
            holder: CI.into(),
            issued_at: now - 120,
            ..Lease::example(&lease_id, now - 60)
        };
        s.service.store().put_new(&lease, None).await.unwrap();
    }
}

/// Runs `reaper` once while watching `watched`: its report, and how long until every
/// watched lease read revoked (or `cap`, if they never did).
async fn reap_watching(
    reaper: &Issuer,
    limits: ReapLimits,
    watched: &[String],
    cap: Duration,
) -> (ReapReport, Duration) {
    let store = reaper.store();
    let started = Instant::now();
    let watch = async {
        loop {
            let mut revoked = 0;
            for id in watched {
                let lease = store.get(id).await.unwrap().unwrap();
                revoked += usize::from(lease.state == LeaseState::Revoked);
            }
            if revoked == watched.len() || started.elapsed() > cap {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (report, took) = tokio::join!(reaper.reap(limits), watch);
    (report.unwrap(), took)
}

/// 20 random characters of `[a-z0-9]`.
fn random_lowercase() -> String {
    keyturn_tests::random_token().replace('-', "")[..20].to_owned()
}

/// The admin session a warm container keeps is cut off without a word (an idle NAT entry
/// dropped while the container was frozen): the next revocation must notice and log in
/// again, not wait on the dead connection until its deadline and fail.
#[tokio::test]
async fn a_kept_admin_session_the_network_dropped_is_replaced() {
    let env = TestEnv::new("frozenpg").await;
    let proxy = keyturn_tests::stall::FreezeProxy::start(env.pg.port);
    let (_, via_role) = role_at_port(&env, "via", proxy.port).await;
    let s = deploy_in(env, Engine::Postgres, &via_role).await;
    let (status, body) = call(&s.service, "POST", "/v1/credentials/via", None, CI).await;
    assert_eq!(status, 201, "{body}");
    let (user, lease) = (body["username"].as_str().unwrap().to_owned(), body["lease_id"].as_str().unwrap().to_owned());

    proxy.freeze_open();
    // Idle for longer than a session is trusted without a check (5 s).
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let started = Instant::now();
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    let took = started.elapsed();
    assert_eq!(status, 204, "{body}");
    assert!(took < Duration::from_secs(4), "the revocation waited {took:?} on the dead session");
    assert!(!role_exists(&s.env, &user).await);

    // Dropped right after it answered, so no check runs: the operation on it times out,
    // and that drops it, so the retry logs in again.
    let (status, body) = call(&s.service, "POST", "/v1/credentials/via", None, CI).await;
    assert_eq!(status, 201, "{body}");
    let (user, lease) = (body["username"].as_str().unwrap().to_owned(), body["lease_id"].as_str().unwrap().to_owned());
    proxy.freeze_open();
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!((status, body["retryable"].as_bool()), (503, Some(true)), "{body}");
    let started = Instant::now();
    let (status, body) = call(&s.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "the retry ran on the session that timed out: {body}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(!role_exists(&s.env, &user).await);
}

/// A documented limit, pinned: a MariaDB lease holder whose group may pass its privileges
/// on (`WITH GRANT OPTION` on its application database, as an application owner's role
/// often has) lifts its own connection limit: a database-level `GRANT ... WITH
/// MAX_USER_CONNECTIONS 0` needs only GRANT OPTION on that database (not CREATE USER, as
/// `ALTER USER` does), and MariaDB rewrites the account's limits with it (0: none). The roles
/// file reference (docs/dynamic-credentials.md) says to keep grant options out of groups;
/// revocation still ends every session.
#[tokio::test]
async fn a_mariadb_group_with_grant_option_lets_a_lease_lift_its_connection_limit() {
    use keyturn::backend::mysql::grants::identifier;
    use mysql_async::prelude::Queryable;
    let d = deploy("revmgrantopt", Engine::Mariadb, "connection_limit = 2").await;
    let schema = identifier(&d.group);
    d.env
        .mariadb_root()
        .await
        .query_drop(format!("GRANT ALL PRIVILEGES ON {schema}.* TO {} WITH GRANT OPTION", identifier(&d.group)))
        .await
        .unwrap();
    let (user, password, lease) = issue_ci(&d.service, 600).await;
    let mut sessions = vec![d.env.mariadb_session(&user, &password).await.unwrap()];
    let lifted =
        sessions[0].query_drop(format!("GRANT SELECT ON {schema}.* TO '{user}'@'%' WITH MAX_USER_CONNECTIONS 0")).await;
    while sessions.len() < 5 {
        match d.env.mariadb_session(&user, &password).await {
            Ok(session) => sessions.push(session),
            Err(_) => break,
        }
    }
    let opened = sessions.len();
    assert!(lifted.is_ok() && opened == 5, "the limit was lifted ({lifted:?}) and 5 sessions opened, not {opened}");
    let (status, body) = call(&d.service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    for session in &mut sessions {
        assert!(session.query_drop("SELECT 1").await.is_err(), "every session is ended");
    }
}

/// Role `name` on a MariaDB at `port` (the harness MariaDB's admin, another port), as
/// roles-file text to add; its admin secret's ARN and the text.
async fn mariadb_role_at_port(env: &TestEnv, name: &str, port: u16) -> (String, String) {
    let mut secret = env.mariadb_admin_secret();
    secret["port"] = json!(port);
    let arn = env.create_secret(name, &secret).await;
    let role = format!(
        r#"
[[role]]
name = "{name}"
kind = "database"
admin_secret = "{arn}"
groups = ["{}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#,
        env.unique("grp")
    );
    (arn, role)
}

/// The slow database's story with more due leases than the reaper runs at once (16 by
/// default; a database that went dark holds every lease of its roles, all due at the
/// next run, ahead of the healthy ones that expired later). Were each revocation on the
/// silent database to wait out a login (5 s) of its own (on MariaDB one after another
/// behind the endpoint's one admin slot, on PostgreSQL in waves of `concurrency`), the
/// healthy database's due leases would wait behind them all: here 8 silent leases at
/// concurrency 4 took 15 s on MariaDB and 10 s on PostgreSQL. A failed login is shared
/// for one login timeout, so the slow database costs the others one login's wait at most.
async fn a_silent_database_with_many_due_leases_holds_up_no_other(test: &str, engine: Engine) {
    let silent = keyturn_tests::stall::Silent::start();
    let env = TestEnv::new(test).await;
    let (stuck_arn, stuck_role) = match engine {
        Engine::Postgres => role_at_port(&env, "stuck", silent.port).await,
        Engine::Mariadb => mariadb_role_at_port(&env, "stuck", silent.port).await,
    };
    let s = deploy_in(env, engine, &stuck_role).await;
    let mut healthy_leases = Vec::new();
    for _ in 0..3 {
        healthy_leases.push(issue_ci(&s.service, 60).await.2);
    }
    put_due_leases(&s, "stuck", &stuck_arn, 8).await;

    let reaper = s.env.lease_service(&s.vars, 3600);
    let limits = ReapLimits { batch: 100, concurrency: 4, deadline: Instant::now() + Duration::from_secs(60) };
    let (report, took) = reap_watching(&reaper, limits, &healthy_leases, Duration::from_secs(60)).await;
    assert_eq!(report.revoked, healthy_leases.len(), "{report:?}");
    assert!(report.failed >= 8, "the silent database's revocations fail, to be retried: {report:?}");
    assert!(took < Duration::from_secs(8), "the healthy database's leases were revoked only after {took:?}");
}

#[tokio::test]
async fn a_silent_mariadb_with_many_due_leases_holds_up_no_other() {
    a_silent_database_with_many_due_leases_holds_up_no_other("revslowm", Engine::Mariadb).await;
}

#[tokio::test]
async fn a_silent_postgres_with_many_due_leases_holds_up_no_other() {
    a_silent_database_with_many_due_leases_holds_up_no_other("revslowpg", Engine::Postgres).await;
}
