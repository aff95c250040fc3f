//! MariaDB lease holders hide a session from revocation inside a `SQL SECURITY DEFINER`
//! routine, where the PROCESSLIST (and `KILL … USER`) name the routine's definer instead
//! of the login user: through the API, the reaper and the server's expiry event, with an
//! admin holding what RDS gives a master user, on two MariaDB servers: performance_schema
//! ON on the harness's one whose event scheduler is ON, OFF on one of this module's own
//! set up as the harness's default one ([`keyturn_tests::Harness::mariadb_of_its_own`]).
//! A session hidden on the server whose performance_schema is OFF makes every revocation
//! there fail (retryably) while it hides, so the tests that hide one there take turns, and
//! no other module's test shares their server.

use std::time::{Duration, Instant};

use keyturn::lease::store::LeaseStore;
use keyturn_tests::lease::{call, deploy_in, issue_ci, reap_limits, Deployment, Engine, CI};
use keyturn_tests::TestEnv;

/// Taken by the tests that hide a session on the server whose performance_schema is OFF.
static HIDING_WITHOUT_PERFORMANCE_SCHEMA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A MariaDB deployment on either server: `performance_schema` ON (the harness's server
/// whose event scheduler is ON) or OFF (this module's own, as MariaDB and RDS ship it); with
/// `all_privileges`, its group holds every privilege on its database (`ALL PRIVILEGES ON
/// app.*`, CREATE ROUTINE included, as applications' roles often do; granted by the
/// superuser: ALL includes DELETE HISTORY, which RDS does not give its master user), else
/// only SELECT on its table.
async fn mariadb_setup_with(test: &str, all_privileges: bool, performance_schema: bool) -> Deployment {
    use keyturn::backend::mysql::grants::identifier;
    use mysql_async::prelude::Queryable;
    let env = TestEnv::new(test).await;
    let env = if performance_schema { env.with_event_scheduler() } else { env.with_mariadb_of_its_own(module_path!()) };
    let d = deploy_in(env, Engine::Mariadb, "").await;
    if !all_privileges {
        return d;
    }
    d.env
        .mariadb_root()
        .await
        .query_drop(format!("GRANT ALL PRIVILEGES ON {}.* TO {}", identifier(&d.group), identifier(&d.group)))
        .await
        .unwrap();
    d
}

/// The name the PROCESSLIST shows for session `id` (as the superuser sees it).
async fn mariadb_listed_as(env: &TestEnv, id: u64) -> Option<String> {
    use mysql_async::prelude::Queryable;
    env.mariadb_root()
        .await
        .exec_first("SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))
        .await
        .unwrap()
}

/// Waits until session `id` is listed under another name than `user`: it runs as a definer.
async fn wait_until_listed_as_definer(env: &TestEnv, id: u64, user: &str) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        match mariadb_listed_as(env, id).await {
            Some(listed) if listed != user => return listed,
            _ => {}
        }
        assert!(Instant::now() < until, "session {id} never ran as a definer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How a MariaDB lease holder's session gets inside a `SQL SECURITY DEFINER` routine.
#[derive(Clone, Copy)]
enum Hideout {
    /// The group may create routines in its database (`ALL PRIVILEGES ON app.*`): the
    /// holder writes a `DEFINER = CURRENT_ROLE` procedure that sleeps, and calls it.
    OwnRoutine,
    /// No CREATE ROUTINE: the group may EXECUTE an admin's ordinary `SQL SECURITY DEFINER`
    /// procedure that updates a row, and may lock that row; a second lease of the same
    /// caller holds the lock, so the first lease's session waits inside the procedure.
    AdminRoutineOnALock,
}

/// Plays one attack of [`Hideout`] on one server and asserts the outcome. The session
/// enters the routine, the holder's lease is revoked through the API while it is inside,
/// and the routine returns. Where performance_schema is ON, keyturn sees the session's
/// login, the revocation answers 204, and the session is cut off inside the routine.
/// Where it is OFF, the server does not say who logged in to a session running as a
/// definer: the revocation must not answer success; it answers a retryable 503, the lease
/// stays `revoking`, and the reaper's retry, once the routine has returned, ends the
/// session. Either way, once a revocation reported success the session runs nothing more.
async fn a_session_inside_a_definer_routine(test: &str, hideout: Hideout, performance_schema: bool) {
    use keyturn::backend::mysql::grants::identifier;
    use mysql_async::prelude::Queryable;
    let _turn = match performance_schema {
        true => None,
        false => Some(HIDING_WITHOUT_PERFORMANCE_SCHEMA.lock().await),
    };
    let d = match hideout {
        Hideout::OwnRoutine => mariadb_setup_with(test, true, performance_schema).await,
        Hideout::AdminRoutineOnALock => mariadb_setup_with(test, false, performance_schema).await,
    };
    let (env, service, group, table) = (&d.env, &d.service, &d.group, &d.table);
    let db = identifier(group);
    let (user, password, lease) = issue_ci(service, 600).await;
    let mut locker = None;
    let call_sql = match hideout {
        Hideout::OwnRoutine => {
            let mut setup = env.mariadb_session(&user, &password).await.unwrap();
            setup
                .query_drop(format!(
                    "CREATE DEFINER = CURRENT_ROLE PROCEDURE {db}.`hide`(s DOUBLE) SQL SECURITY DEFINER \
                     BEGIN DO SLEEP(s); END"
                ))
                .await
                .expect("the group may create routines in its database");
            format!("CALL {db}.`hide`(10)")
        }
        Hideout::AdminRoutineOnALock => {
            let mut admin = env.mariadb_admin().await;
            for sql in [
                format!(
                    "CREATE DEFINER = CURRENT_USER PROCEDURE {db}.`bump`() SQL SECURITY DEFINER \
                     UPDATE {table} SET id = id WHERE id = 7"
                ),
                format!("GRANT EXECUTE ON PROCEDURE {db}.`bump` TO {db}"),
                format!("GRANT SELECT, UPDATE ON {table} TO {db}"),
            ] {
                admin.query_drop(sql).await.expect("the admin's procedure and grants");
            }
            let (other_user, other_password, _) = issue_ci(service, 600).await;
            let mut other = env.mariadb_session(&other_user, &other_password).await.unwrap();
            other.query_drop("BEGIN").await.unwrap();
            other.query_drop(format!("SELECT id FROM {table} WHERE id = 7 FOR UPDATE")).await.unwrap();
            locker = Some(other);
            format!("CALL {db}.`bump`()")
        }
    };

    let mut session = env.mariadb_session(&user, &password).await.unwrap();
    session.query_drop(format!("SELECT id FROM {table}")).await.expect("the lease works");
    let id: u64 = session.query_first("SELECT CONNECTION_ID()").await.unwrap().unwrap();
    let inside = tokio::spawn(async move {
        let call = session.query_drop(call_sql).await;
        (call, session)
    });
    let listed = wait_until_listed_as_definer(env, id, &user).await;
    eprintln!("inside the routine, session {id} of {user:?} is listed as {listed:?}");

    let path = format!("/v1/leases/{lease}");
    let (status, body) = call(service, "DELETE", &path, None, CI).await;
    assert!(!env.mariadb_user_exists(&user).await, "the user is dropped either way");
    if performance_schema {
        assert_eq!(status, 204, "{body}");
        let (call_result, mut session) = inside.await.unwrap();
        assert!(call_result.is_err(), "the session was cut off inside the routine");
        let after = session.query_drop(format!("SELECT id FROM {table}")).await;
        assert!(after.is_err(), "the session read after its revocation answered 204");
    } else {
        assert_eq!((status, body["retryable"].as_bool()), (503, Some(true)), "{body}");
        let stored = service.store().get(&lease).await.unwrap().unwrap();
        assert_eq!(stored.state.as_str(), "revoking", "{stored:?}");
        if let Some(mut other) = locker.take() {
            other.query_drop("ROLLBACK").await.unwrap();
        }
        let (call_result, mut session) = inside.await.unwrap();
        call_result.expect("the routine ran to its end: nothing could end the session yet");
        // The reaper, a retry later, finds the session under its login name again.
        let reaper = env.lease_service(&d.vars, 120);
        let report = reaper.reap(reap_limits()).await.unwrap();
        assert_eq!((report.revoked, report.failed), (1, 0), "{report:?}");
        let stored = service.store().get(&lease).await.unwrap().unwrap();
        assert_eq!(stored.state.as_str(), "revoked", "{stored:?}");
        let after = session.query_drop(format!("SELECT id FROM {table}")).await;
        assert!(after.is_err(), "the session read after the reaper's revocation succeeded");
    }
    assert!(env.mariadb_sessions_of(&user).await.is_empty());
}

/// A MariaDB lease holder whose group may create routines hides a session from the
/// revocation inside its own `DEFINER = CURRENT_ROLE` procedure, listed under the group's
/// name; with performance_schema ON, keyturn finds it by its login name and ends it.
#[tokio::test]
async fn a_mariadb_session_inside_its_own_definer_routine_does_not_survive_revocation() {
    a_session_inside_a_definer_routine("atkmdefown", Hideout::OwnRoutine, true).await;
}

/// The same where performance_schema is OFF (MariaDB's default): the revocation
/// fails, retryably, while the session is inside the routine, and the reaper ends it.
#[tokio::test]
async fn without_performance_schema_a_session_inside_its_own_definer_routine_fails_the_revocation() {
    a_session_inside_a_definer_routine("atkmdefownoff", Hideout::OwnRoutine, false).await;
}

/// A MariaDB lease holder without CREATE ROUTINE parks a session inside an admin's `SQL
/// SECURITY DEFINER` procedure, waiting on a row lock its second lease holds, listed under
/// the admin's name; with performance_schema ON, keyturn ends it there.
#[tokio::test]
async fn a_mariadb_session_waiting_inside_an_admin_definer_routine_does_not_survive_revocation() {
    a_session_inside_a_definer_routine("atkmdeflock", Hideout::AdminRoutineOnALock, true).await;
}

/// The same where performance_schema is OFF: the revocation fails, retryably, while the
/// session waits inside the procedure, and the reaper ends it once it is out.
#[tokio::test]
async fn without_performance_schema_a_session_waiting_inside_an_admin_definer_routine_fails_the_revocation() {
    a_session_inside_a_definer_routine("atkmdeflockoff", Hideout::AdminRoutineOnALock, false).await;
}

/// The expiry event, with nothing of keyturn running: a MariaDB lease holder calls its own
/// `DEFINER = CURRENT_ROLE` procedure across its expiry, hoping that the event's
/// `mysql.rds_kill` loop, which lists sessions by the PROCESSLIST's `USER` (the group's
/// name while the routine runs), misses it. The event also ends the sessions
/// performance_schema lists under the user's login name: the session is cut off inside.
#[tokio::test]
async fn a_mariadb_session_inside_a_definer_routine_does_not_survive_the_expiry_event() {
    use mysql_async::prelude::Queryable;
    let Deployment { env, service, group, table, .. } = mariadb_setup_with("atkmdefexp", true, true).await;
    let (user, password, _lease) = issue_ci(&service, 3).await;
    let db = keyturn::backend::mysql::grants::identifier(&group);
    let mut hidden = env.mariadb_session(&user, &password).await.unwrap();
    hidden
        .query_drop(format!(
            "CREATE DEFINER = CURRENT_ROLE PROCEDURE {db}.`hide`(s DOUBLE) SQL SECURITY DEFINER BEGIN DO SLEEP(s); END"
        ))
        .await
        .expect("the group may create routines in its database");
    env.mariadb_expiry_event(&user).await.expect("the server enforces the expiry");
    let call = hidden.query_drop(format!("CALL {db}.`hide`(10)")).await;
    assert!(!env.mariadb_user_exists(&user).await, "the event has run: the account is gone");
    assert!(call.is_err(), "the event cut the session off inside the routine");
    let after = hidden.query_drop(format!("SELECT id FROM {table}")).await;
    assert!(after.is_err(), "the session outlived the expiry event and still reads");
}
