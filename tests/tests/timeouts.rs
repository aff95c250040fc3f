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
