//! A database that accepts the connection and then says nothing must not hang a rotation:
//! the connect timeout ends the login, and the error says so and is retryable.

use std::time::{Duration, Instant};

use keyturn::backend::mysql::MysqlBackend;
use keyturn::backend::postgres::PostgresBackend;
use keyturn::backend::{BackendError, Credentials, DatabaseBackend, Endpoint, Engine, Timeouts, TlsMode, Username};

/// A listener that accepts connections and never answers; it lives as long as the test.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

async fn assert_times_out<B: DatabaseBackend>(backend: B, engine: Engine, tls: TlsMode) {
    let (_listener, port) = silent_server();
    let endpoint = Endpoint { engine, host: "127.0.0.1".into(), port, dbname: None, tls };
    let login = Credentials { username: Username::parse("app").unwrap(), password: "pw".to_owned().into() };
    let started = Instant::now();
    let err = backend.verify(&endpoint, &login).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, BackendError::Timeout { seconds: 1, .. }), "{engine:?} {tls:?}: {err}");
    assert!(err.is_retryable());
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{engine:?}: waited {waited:?}");
}

#[tokio::test]
async fn a_silent_server_times_out_the_login() {
    let timeouts = Timeouts { connect: Duration::from_secs(1), statement: Duration::from_secs(1) };
    for tls in [TlsMode::VerifyFull, TlsMode::Disabled] {
        let tls_config = keyturn::backend::tls::client_config(&[]).unwrap();
        assert_times_out(PostgresBackend::new(tls_config, timeouts), Engine::Postgres, tls).await;
        assert_times_out(MysqlBackend::new(&[], timeouts).unwrap(), Engine::Mariadb, tls).await;
    }
}

/// A server that accepted the login and then stops answering mid-statement: the server's
/// own statement limit never sees the statement, so only the client's deadline ends the
/// wait (the statement limit plus a second).
#[tokio::test]
async fn a_server_gone_silent_mid_statement_is_cut_by_the_client_deadline() {
    use keyturn::backend::SetOwnPassword;
    use keyturn_tests::stall::StallProxy;
    use keyturn_tests::{random_token, TestEnv};
    // The proxy reads the statements, so the sessions are plaintext.
    let env = TestEnv::accepting_plaintext("silent").await;
    let timeouts = Timeouts { connect: Duration::from_secs(5), statement: Duration::from_secs(1) };
    let pg_user = env.unique("pg");
    let maria_user = env.unique("maria");
    let password = random_token();
    env.create_role(&pg_user, &password).await;
    env.create_mariadb_account(&maria_user, &password, "").await;
    let cases: [(Engine, u16, &'static [u8], &str); 2] = [
        (Engine::Postgres, env.pg.port, b"ALTER ROLE", &pg_user),
        (Engine::Mariadb, env.h.mariadb().port, b"SET PASSWORD", &maria_user),
    ];
    for (engine, upstream, trigger, user) in cases {
        let proxy = StallProxy::start(upstream, trigger);
        let endpoint = Endpoint {
            engine,
            host: "127.0.0.1".into(),
            port: proxy.port,
            dbname: engine.default_dbname().map(str::to_owned),
            tls: TlsMode::Disabled,
        };
        let login = Credentials { username: Username::parse(user).unwrap(), password: password.clone().into() };
        let new_password = random_token().into();
        let request = SetOwnPassword { login: &login, new_password: &new_password };
        let started = Instant::now();
        let result = match engine {
            Engine::Postgres => {
                let backend = PostgresBackend::new(keyturn::backend::tls::client_config(&[]).unwrap(), timeouts);
                tokio::time::timeout(Duration::from_secs(15), backend.set_own_password(&endpoint, request)).await
            }
            _ => {
                let backend = MysqlBackend::new(&[], timeouts).unwrap();
                tokio::time::timeout(Duration::from_secs(15), backend.set_own_password(&endpoint, request)).await
            }
        };
        let err = result.unwrap_or_else(|_| panic!("{engine:?}: still waiting after 15 s")).unwrap_err();
        assert!(proxy.stalled.load(std::sync::atomic::Ordering::SeqCst), "{engine:?}: the statement never left");
        assert!(matches!(err, BackendError::Timeout { .. }) && err.is_retryable(), "{engine:?}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{engine:?}: waited {:?}", started.elapsed());
    }
}

/// A MariaDB account change blocked by a lock another session holds on the account table:
/// the session's statement limit ends it, and the error is retryable.
#[tokio::test]
async fn a_mariadb_account_change_blocked_by_a_lock_times_out() {
    use keyturn::backend::SetOwnPassword;
    use keyturn_tests::{random_token, TestEnv};
    use mysql_async::prelude::Queryable;
    let env = TestEnv::new("lock").await;
    let user = env.unique("app");
    let password = random_token();
    env.create_mariadb_account(&user, &password, "").await;
    let mut blocker = env.mariadb_admin().await;
    blocker.query_drop("LOCK TABLES mysql.global_priv WRITE").await.unwrap();

    let timeouts = Timeouts { connect: Duration::from_secs(5), statement: Duration::from_secs(1) };
    let backend = MysqlBackend::new(std::slice::from_ref(&env.h.ca_file), timeouts).unwrap();
    let endpoint = keyturn::backend::Endpoint {
        engine: Engine::Mariadb,
        host: "localhost".into(),
        port: env.h.mariadb().port,
        dbname: None,
        tls: TlsMode::VerifyFull,
    };
    let login = Credentials { username: Username::parse(&user).unwrap(), password: password.clone().into() };
    let new_password = random_token().into();
    let started = Instant::now();
    let err = backend
        .set_own_password(&endpoint, SetOwnPassword { login: &login, new_password: &new_password })
        .await
        .unwrap_err();
    let waited = started.elapsed();
    blocker.query_drop("UNLOCK TABLES").await.unwrap();
    assert!(err.is_retryable(), "{err}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    assert!(env.can_login_mariadb(&user, &password).await, "the password did not change");
}
