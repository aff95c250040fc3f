//! The database clients people use, logging in with what keyturn hands out: a credential
//! issued through the lease service (refused once its lease is revoked) and a credential
//! rotated by Secrets Manager rotation, on PostgreSQL and MariaDB. Each client verifies the
//! server's certificate against the harness CA and its name (`localhost`), runs a query
//! through the group's grants, and asks the server, in the same session, whether that
//! session is encrypted: a client that fell back to plaintext fails the test. With a
//! valid password, a name the certificate does not hold and a CA that did not sign it must
//! both fail before any login. Last, what pg8000 (scramp) makes of a verifier with fewer
//! than 4096 SCRAM iterations, and that the other PostgreSQL clients accept it.
//!
//! Command-line clients (psql, mariadb) run from Debian's packages; Python drivers through
//! `tests/clients/login.py` in the project's .venv; Node.js drivers through
//! `tests/clients/login.mjs` with `tests/clients/node_modules` (both installed by
//! `scripts/setup`); the Rust drivers in process. A password never goes on a command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keyturn::backend::mysql::grants::identifier;
use keyturn::backend::mysql::literal;
use keyturn::backend::{DynamicUsers, NewUser, Timeouts, TlsMode, Username};
use keyturn::rotation::database::Strategy;
use keyturn::rotation::store::AWSCURRENT;
use keyturn_tests::lease::{call, deploy, Engine, CI};
use keyturn_tests::{project_root, random_token, TestEnv};
use mysql_async::prelude::Queryable;
use postgres_protocol::escape::escape_identifier;
use serde_json::Value;

/// In the client's own session, after [`PG_AS_LOGIN`]: the TLS version PostgreSQL reports
/// for it, no row if plain.
const PG_TLS: &str = "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl";
/// An issued user's sessions act as its group (`ALTER ROLE .. SET role`), and pg_stat_ssl
/// shows a session's TLS to that session's own role only: back to the login role first.
const PG_AS_LOGIN: &str = "SET ROLE NONE";
/// In the client's own session: its cipher as MariaDB reports it, empty if plain.
const MARIADB_TLS: &str = "SHOW SESSION STATUS LIKE 'Ssl_cipher'";
/// What the group's table holds (see `pg_group_with_table`, `mariadb_group_with_table`).
const GROUP_VALUE: &str = "7";
/// Any one client's whole run; each also bounds its connection by itself (10 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Psql,
    Psycopg,
    Pg8000,
    Asyncpg,
    NodePg,
    TokioPostgres,
    SqlxPostgres,
    MariadbCli,
    Pymysql,
    Mysql2,
    MysqlAsync,
    SqlxMysql,
}

use Client::*;

const POSTGRES_CLIENTS: [Client; 7] = [Psql, Psycopg, Pg8000, Asyncpg, NodePg, TokioPostgres, SqlxPostgres];
const MARIADB_CLIENTS: [Client; 5] = [MariadbCli, Pymysql, Mysql2, MysqlAsync, SqlxMysql];

/// Where and as whom a client logs in, and what it runs.
#[derive(Clone)]
struct Login {
    host: String,
    port: u16,
    user: String,
    password: String,
    /// Empty: none (MariaDB).
    database: String,
    ca_file: PathBuf,
    query: String,
}

impl Login {
    /// The login a credential's JSON names (an issued lease's answer, a secret's value),
    /// trusting the harness CA.
    fn from_json(env: &TestEnv, credential: &Value, database: &str, query: &str) -> Login {
        let text =
            |key: &str| credential[key].as_str().unwrap_or_else(|| panic!("no {key} in the credential")).to_owned();
        Login {
            host: text("host"),
            port: credential["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port in the credential"),
            user: text("username"),
            password: text("password"),
            database: database.to_owned(),
            ca_file: env.h.ca_file.clone(),
            query: query.to_owned(),
        }
    }
}

/// What came of one client's login.
#[derive(Debug)]
enum Outcome {
    /// Logged in: the query's first value, and the session's TLS (version or cipher) as
    /// the server reported it, `none` for a plaintext session.
    LoggedIn { value: String, tls: String },
    /// The server refused the credentials (PostgreSQL 28P01, MariaDB 1045).
    Refused(String),
    /// Anything else: TLS, network, the driver; its error.
    Failed(String),
}

impl Outcome {
    fn text(&self) -> &str {
        match self {
            Outcome::LoggedIn { value, .. } => value,
            Outcome::Refused(error) | Outcome::Failed(error) => error,
        }
    }
}

async fn login(client: Client, login: Login) -> Outcome {
    let run = async move {
        match client {
            TokioPostgres => tokio_postgres_login(&login).await,
            SqlxPostgres => sqlx_postgres_login(&login).await,
            MysqlAsync => mysql_async_login(&login).await,
            SqlxMysql => sqlx_mysql_login(&login).await,
            external => tokio::task::spawn_blocking(move || run_external(external, &login))
                .await
                .unwrap_or_else(|e| Outcome::Failed(format!("the client's thread: {e}"))),
        }
    };
    tokio::time::timeout(CLIENT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Outcome::Failed(format!("no answer within {} s", CLIENT_TIMEOUT.as_secs())))
}

/// Every client of `clients` logging in at once with `login`.
async fn login_all(clients: &[Client], login: &Login) -> Vec<(Client, Outcome)> {
    let started = std::time::Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|&c| {
            let login = login.clone();
            (c, tokio::spawn(async move { (self::login(c, login).await, started.elapsed()) }))
        })
        .collect();
    let mut outcomes = Vec::new();
    for (client, task) in tasks {
        let (outcome, took) = task.await.expect("a client's task");
        // What a client reports may end up in an application's logs.
        assert!(!outcome.text().contains(&login.password), "{client:?} shows the password in {outcome:?}");
        eprintln!("{client:?} as {}@{} ({:.1} s): {outcome:?}", login.user, login.host, took.as_secs_f64());
        outcomes.push((client, outcome));
    }
    eprintln!("{} clients as {}@{}: {:.1} s", clients.len(), login.user, login.host, started.elapsed().as_secs_f64());
    outcomes
}

/// Panics naming every client whose outcome `ok` rejects, with what it got.
fn expect_each(what: &str, outcomes: &[(Client, Outcome)], ok: impl Fn(Client, &Outcome) -> bool) {
    let wrong: Vec<String> =
        outcomes.iter().filter(|(c, o)| !ok(*c, o)).map(|(c, o)| format!("  {c:?}: {o:?}")).collect();
    assert!(wrong.is_empty(), "{what}, but:\n{}", wrong.join("\n"));
}

/// Each client logged in, read the group's table and its session was encrypted.
fn expect_logged_in_over_tls(what: &str, outcomes: &[(Client, Outcome)]) {
    expect_each(
        &format!("{what}: every client must log in over TLS and read the group's table"),
        outcomes,
        |_, o| matches!(o, Outcome::LoggedIn { value, tls } if value == GROUP_VALUE && !tls.is_empty() && tls != "none"),
    );
}

fn expect_refused(what: &str, outcomes: &[(Client, Outcome)]) {
    expect_each(&format!("{what}: the server must refuse every client's login"), outcomes, |_, o| {
        matches!(o, Outcome::Refused(_))
    });
}

/// Each client gave up at the TLS handshake, before authenticating: its error names the
/// certificate (in each driver's words).
fn expect_tls_refused(what: &str, outcomes: &[(Client, Outcome)]) {
    expect_each(&format!("{what}: every client must refuse the server's certificate"), outcomes, |_, o| {
        let Outcome::Failed(error) = o else { return false };
        let error = error.to_lowercase();
        // libpq names OpenSSL's failure after "SSL error:", not always the certificate.
        ["certificate", "altnames", "ssl error"].iter().any(|word| error.contains(word))
    });
}

// ---- external clients ----

fn run_external(client: Client, login: &Login) -> Outcome {
    let root = project_root();
    let mut command = match client {
        Psql => psql(login),
        MariadbCli => mariadb_cli(login),
        Psycopg | Pg8000 | Asyncpg | Pymysql => {
            let mut c = Command::new(keyturn_tests::moto::venv().join("bin/python"));
            c.arg(root.join("tests/clients/login.py")).arg(script_driver(client)).args(script_args(login));
            c.env("KEYTURN_CLIENT_PASSWORD", &login.password);
            c
        }
        NodePg | Mysql2 => {
            let mut c = Command::new("node");
            c.arg(root.join("tests/clients/login.mjs")).arg(script_driver(client)).args(script_args(login));
            c.env("KEYTURN_CLIENT_PASSWORD", &login.password);
            c
        }
        rust => unreachable!("{rust:?} runs in process"),
    };
    let output = match command.stdin(Stdio::null()).output() {
        Ok(output) => output,
        Err(e) => return Outcome::Failed(format!("cannot run {client:?} (run scripts/setup): {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if stdout.contains(&login.password) || stderr.contains(&login.password) {
        return Outcome::Failed(format!("{client:?} printed the password"));
    }
    match client {
        Psql | MariadbCli => cli_outcome(client, output.status.success(), &stdout, stderr),
        _ => script_outcome(output.status.code(), &stdout, stderr),
    }
}

fn script_driver(client: Client) -> &'static str {
    match client {
        Psycopg => "psycopg",
        Pg8000 => "pg8000",
        Asyncpg => "asyncpg",
        Pymysql => "pymysql",
        NodePg => "pg",
        Mysql2 => "mysql2",
        other => unreachable!("{other:?} is not a script's driver"),
    }
}

/// HOST PORT USER DATABASE CA_FILE QUERY, as both scripts take them; the password goes in
/// the environment.
fn script_args(login: &Login) -> Vec<String> {
    vec![
        login.host.clone(),
        login.port.to_string(),
        login.user.clone(),
        login.database.clone(),
        login.ca_file.to_str().expect("a UTF-8 CA path").to_owned(),
        login.query.clone(),
    ]
}

/// The scripts' contract: 0 and `ok driver=.. value=.. tls=..`, 3 refused, else failed.
fn script_outcome(code: Option<i32>, stdout: &str, stderr: String) -> Outcome {
    match code {
        Some(0) => {
            let line = stdout.lines().find(|l| l.starts_with("ok ")).unwrap_or_default();
            let field = |name: &str| {
                line.split(' ').find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(str::to_owned)
            };
            match (field("value"), field("tls")) {
                (Some(value), Some(tls)) => Outcome::LoggedIn { value, tls },
                _ => Outcome::Failed(format!("exit 0 without an ok line: {stdout:?}")),
            }
        }
        Some(3) => Outcome::Refused(stderr),
        code => Outcome::Failed(format!("exit {code:?}: {stderr}")),
    }
}

/// A libpq connection string value, quoted as libpq reads it.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// psql in one session: the query, then the session's TLS version (no line if plain).
fn psql(login: &Login) -> Command {
    let conninfo = [
        ("host", login.host.as_str()),
        ("port", &login.port.to_string()),
        ("user", &login.user),
        ("dbname", &login.database),
        ("sslmode", "verify-full"),
        ("sslrootcert", login.ca_file.to_str().expect("a UTF-8 CA path")),
        ("connect_timeout", "10"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", conninfo_value(v)))
    .collect::<Vec<_>>()
    .join(" ");
    let mut c = Command::new("psql");
    c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &conninfo])
        .args(["-c", &login.query, "-c", PG_AS_LOGIN, "-c", PG_TLS])
        .env("PGPASSWORD", &login.password);
    c
}

/// mariadb over TCP in one session: the query, then the session's cipher.
fn mariadb_cli(login: &Login) -> Command {
    let mut c = Command::new("mariadb");
    // --no-defaults first: no option file of the machine may change what is tested.
    c.arg("--no-defaults")
        .args(["--protocol=TCP", "--batch", "--skip-column-names", "--connect-timeout=10"])
        .arg(format!("--host={}", login.host))
        .arg(format!("--port={}", login.port))
        .arg(format!("--user={}", login.user))
        .arg(format!("--ssl-ca={}", login.ca_file.display()))
        .arg("--ssl-verify-server-cert")
        .arg(format!("--execute={}; {MARIADB_TLS}", login.query))
        // The client reads MYSQL_PWD as the password.
        .env("MYSQL_PWD", &login.password);
    if !login.database.is_empty() {
        c.arg(format!("--database={}", login.database));
    }
    c
}

/// psql and mariadb print the query's value, then the TLS line; a refused login only in
/// the server's words.
fn cli_outcome(client: Client, success: bool, stdout: &str, stderr: String) -> Outcome {
    if !success {
        let refused = match client {
            Psql => stderr.contains("password authentication failed"),
            _ => stderr.contains("ERROR 1045"),
        };
        return if refused { Outcome::Refused(stderr) } else { Outcome::Failed(stderr) };
    }
    let mut lines = stdout.lines();
    let value = lines.next().unwrap_or_default().to_owned();
    let tls = match (client, lines.next()) {
        (Psql, Some(version)) => version.to_owned(),
        (MariadbCli, Some(status)) => status.split('\t').nth(1).unwrap_or_default().to_owned(),
        _ => String::new(),
    };
    let tls = if tls.is_empty() { "none".to_owned() } else { tls };
    Outcome::LoggedIn { value, tls }
}

// ---- Rust drivers, in process ----

/// An error and its sources, one after another.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A rustls configuration trusting the CA file alone.
fn rustls_config(ca_file: &Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// tokio-postgres with tokio-postgres-rustls: TLS required, and rustls checks the chain
/// and the host name.
async fn tokio_postgres_login(login: &Login) -> Outcome {
    use tokio_postgres::error::SqlState;
    use tokio_postgres::SimpleQueryMessage;
    let tls = match rustls_config(&login.ca_file) {
        Ok(config) => tokio_postgres_rustls::MakeRustlsConnect::new(config),
        Err(e) => return Outcome::Failed(e),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&login.host)
        .port(login.port)
        .user(&login.user)
        .password(&login.password)
        .dbname(&login.database)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    let client = match config.connect(tls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) if e.code() == Some(&SqlState::INVALID_PASSWORD) => return Outcome::Refused(chain(&e)),
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    // The simple query protocol answers in text, whatever the column's type.
    let first = |messages: Vec<SimpleQueryMessage>| {
        messages.into_iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_owned()),
            _ => None,
        })
    };
    let value = match client.simple_query(&login.query).await {
        Ok(messages) => first(messages).unwrap_or_default(),
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    if let Err(e) = client.simple_query(PG_AS_LOGIN).await {
        return Outcome::Failed(chain(&e));
    }
    match client.simple_query(PG_TLS).await {
        Ok(messages) => Outcome::LoggedIn { value, tls: first(messages).unwrap_or_else(|| "none".into()) },
        Err(e) => Outcome::Failed(chain(&e)),
    }
}

/// sqlx's PostgreSQL driver with `sslmode=verify-full` and the CA as its root. The query
/// is the test's own, its identifiers quoted: safe as SQL.
async fn sqlx_postgres_login(login: &Login) -> Outcome {
    use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
    use sqlx::{AssertSqlSafe, Connection};
    let options = PgConnectOptions::new()
        .host(&login.host)
        .port(login.port)
        .username(&login.user)
        .password(&login.password)
        .database(&login.database)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(&login.ca_file);
    let mut conn = match PgConnection::connect_with(&options).await {
        Ok(conn) => conn,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => {
            return Outcome::Refused(e.to_string())
        }
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    let value = match sqlx::query_scalar::<_, i32>(AssertSqlSafe(login.query.as_str())).fetch_one(&mut conn).await {
        Ok(value) => value.to_string(),
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    if let Err(e) = sqlx::query(PG_AS_LOGIN).execute(&mut conn).await {
        return Outcome::Failed(chain(&e));
    }
    let outcome = match sqlx::query_scalar::<_, String>(PG_TLS).fetch_optional(&mut conn).await {
        Ok(tls) => Outcome::LoggedIn { value, tls: tls.unwrap_or_else(|| "none".into()) },
        Err(e) => Outcome::Failed(chain(&e)),
    };
    conn.close().await.ok();
    outcome
}

/// mysql_async with the CA as its root (it verifies the host name unless told not to).
async fn mysql_async_login(login: &Login) -> Outcome {
    let ssl = mysql_async::SslOpts::default().with_root_certs(vec![login.ca_file.clone().into()]);
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(login.host.clone())
        .tcp_port(login.port)
        .user(Some(login.user.clone()))
        .pass(Some(login.password.clone()))
        .db_name((!login.database.is_empty()).then(|| login.database.clone()))
        .prefer_socket(false)
        .ssl_opts(Some(ssl));
    let mut conn = match mysql_async::Conn::new(opts).await {
        Ok(conn) => conn,
        Err(mysql_async::Error::Server(e)) if e.code == 1045 => return Outcome::Refused(e.to_string()),
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    let value = match conn.query_first::<i32, _>(login.query.as_str()).await {
        Ok(value) => value.map(|v| v.to_string()).unwrap_or_default(),
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    let outcome = match conn.query_first::<(String, String), _>(MARIADB_TLS).await {
        Ok(status) => Outcome::LoggedIn { value, tls: status.map(|(_, cipher)| cipher).unwrap_or_default() },
        Err(e) => Outcome::Failed(chain(&e)),
    };
    conn.disconnect().await.ok();
    outcome
}

/// sqlx's MySQL driver with `ssl-mode=VERIFY_IDENTITY` and the CA.
async fn sqlx_mysql_login(login: &Login) -> Outcome {
    use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
    use sqlx::{AssertSqlSafe, Connection, Row};
    let mut options = MySqlConnectOptions::new()
        .host(&login.host)
        .port(login.port)
        .username(&login.user)
        .password(&login.password)
        .ssl_mode(MySqlSslMode::VerifyIdentity)
        .ssl_ca(&login.ca_file);
    if !login.database.is_empty() {
        options = options.database(&login.database);
    }
    let mut conn = match MySqlConnection::connect_with(&options).await {
        Ok(conn) => conn,
        Err(sqlx::Error::Database(e))
            if e.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number) == Some(1045) =>
        {
            return Outcome::Refused(e.to_string())
        }
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    let value = match sqlx::query_scalar::<_, i32>(AssertSqlSafe(login.query.as_str())).fetch_one(&mut conn).await {
        Ok(value) => value.to_string(),
        Err(e) => return Outcome::Failed(chain(&e)),
    };
    // SHOW STATUS as text: not every server prepares it.
    let outcome = match sqlx::raw_sql(MARIADB_TLS).fetch_optional(&mut conn).await {
        Ok(row) => {
            Outcome::LoggedIn { value, tls: row.and_then(|r| r.try_get::<String, _>(1).ok()).unwrap_or_default() }
        }
        Err(e) => Outcome::Failed(chain(&e)),
    };
    conn.close().await.ok();
    outcome
}

// ---- the tests ----

const ISSUE: &str = "/v1/credentials/ci";

/// Issues a lease of the deployment's role `ci` as its CI caller: (lease id, credential).
async fn issue(service: &keyturn::app::lease::Issuer) -> (String, Value) {
    let (status, body) = call(service, "POST", ISSUE, Some(r#"{"ttl_seconds": 600}"#), CI).await;
    assert_eq!(status, 201, "{body}");
    (body["lease_id"].as_str().expect("a lease id").to_owned(), body)
}

async fn revoke(service: &keyturn::app::lease::Issuer, lease: &str) {
    let (status, body) = call(service, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
}

/// A CA the server's certificate does not chain to, named as the harness CA (only its key,
/// so the signature, tells them apart).
fn stranger_ca(env: &TestEnv) -> PathBuf {
    let dir = env.h.work.join(env.unique("stranger-ca"));
    std::fs::create_dir_all(&dir).expect("create the stranger CA's directory");
    keyturn_tests::pki::generate(&dir, "keyturn test", &["localhost"]).ca_bundle
}

/// With `login`'s valid password, each client must refuse a server name its certificate
/// does not hold (127.0.0.1, where it says `localhost`) and a CA that did not sign it.
async fn expect_verified_tls(env: &TestEnv, clients: &[Client], login: &Login) {
    let by_address = Login { host: "127.0.0.1".into(), ..login.clone() };
    let other_ca = Login { ca_file: stranger_ca(env), ..login.clone() };
    let (outcomes, with_other_ca) = tokio::join!(login_all(clients, &by_address), login_all(clients, &other_ca));
    // mysql2 gives Node's TLS neither a server name nor a host for an IP address, so Node
    // checks the certificate against `localhost`: docs/testing.md's Database clients section says so.
    let (mysql2, others): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(c, _)| *c == Mysql2);
    expect_each("connecting as 127.0.0.1, mysql2 checks the name localhost instead", &mysql2, |_, o| {
        matches!(o, Outcome::LoggedIn { .. })
    });
    expect_tls_refused("connecting as 127.0.0.1", &others);
    expect_tls_refused("trusting another CA", &with_other_ca);
}

#[tokio::test]
async fn postgres_clients_log_in_with_an_issued_user_until_its_lease_is_revoked() {
    let s = deploy("clients_pg_lease", Engine::Postgres, "").await;
    let (lease, credential) = issue(&s.service).await;
    let login = Login::from_json(&s.env, &credential, "postgres", &format!("SELECT id FROM {}", s.table));
    assert_eq!(login.host, "localhost", "the credential names the host its certificate holds");
    expect_logged_in_over_tls("an issued PostgreSQL user", &login_all(&POSTGRES_CLIENTS, &login).await);
    revoke(&s.service, &lease).await;
    expect_refused("its lease revoked", &login_all(&POSTGRES_CLIENTS, &login).await);
}

#[tokio::test]
async fn mariadb_clients_log_in_with_an_issued_user_until_its_lease_is_revoked() {
    let s = deploy("clients_maria_lease", Engine::Mariadb, "").await;
    let (lease, credential) = issue(&s.service).await;
    let login = Login::from_json(&s.env, &credential, "", &format!("SELECT id FROM {}", s.table));
    assert_eq!(login.host, "localhost", "the credential names the host its certificate holds");
    expect_logged_in_over_tls("an issued MariaDB user", &login_all(&MARIADB_CLIENTS, &login).await);
    revoke(&s.service, &lease).await;
    expect_refused("its lease revoked", &login_all(&MARIADB_CLIENTS, &login).await);
}

#[tokio::test]
async fn postgres_clients_log_in_with_a_rotated_password_over_verified_tls_only() {
    let env = TestEnv::new("clients_pg_rot").await;
    let (group, table) = env.pg_group_with_table("grp").await;
    let user = env.unique("app");
    let first = random_token();
    env.create_role(&user, &first).await;
    let grant = format!("GRANT {} TO {}", escape_identifier(&group), escape_identifier(&user));
    env.pg_admin_session().await.batch_execute(&grant).await.expect("grant the group");
    let arn = env.create_secret("app", &env.user_secret(&user, &first)).await;
    env.rotate(&env.rotator(Strategy::SingleUser), &arn).await;

    let rotated = env.value(&arn, AWSCURRENT).await;
    let login = Login::from_json(&env, &rotated, "postgres", &format!("SELECT id FROM {table}"));
    assert_ne!(login.password, first, "the rotation changed the password");
    expect_logged_in_over_tls("a rotated PostgreSQL user", &login_all(&POSTGRES_CLIENTS, &login).await);
    expect_verified_tls(&env, &POSTGRES_CLIENTS, &login).await;
}

#[tokio::test]
async fn mariadb_clients_log_in_with_a_rotated_password_over_verified_tls_only() {
    let env = TestEnv::new("clients_maria_rot").await;
    let (group, table) = env.mariadb_group_with_table("grp").await;
    let user = env.unique("app");
    let first = random_token();
    env.create_mariadb_account(&user, &first, "").await;
    let mut admin = env.mariadb_admin().await;
    for sql in [
        format!("GRANT {} TO {}@'%'", identifier(&group), literal(&user)),
        format!("SET DEFAULT ROLE {} FOR {}@'%'", identifier(&group), literal(&user)),
    ] {
        admin.query_drop(sql).await.expect("grant the group");
    }
    let arn = env.create_secret("app", &env.mariadb_secret(&user, &first)).await;
    env.rotate(&env.rotator(Strategy::SingleUser), &arn).await;

    let rotated = env.value(&arn, AWSCURRENT).await;
    let login = Login::from_json(&env, &rotated, "", &format!("SELECT id FROM {table}"));
    assert_ne!(login.password, first, "the rotation changed the password");
    expect_logged_in_over_tls("a rotated MariaDB user", &login_all(&MARIADB_CLIENTS, &login).await);
    expect_verified_tls(&env, &MARIADB_CLIENTS, &login).await;
}

/// What docs/deploying.md's `KEYTURN_SCRAM_ITERATIONS` row says: below 4096 iterations pg8000's SCRAM
/// library (scramp) refuses the server's challenge before sending a proof, while the other
/// clients log in.
#[tokio::test]
async fn pg8000_refuses_a_verifier_of_16_iterations_that_the_other_clients_accept() {
    let env = TestEnv::new("clients_scram16").await;
    let (group, table) = env.pg_group_with_table("grp").await;
    let user = env.unique("kt_low");
    let password = random_token();
    let request = NewUser {
        username: Username::parse(&user).expect("a username"),
        groups: vec![group],
        password: password.clone().into(),
        expires_at: SystemTime::now() + Duration::from_secs(600),
        connection_limit: keyturn::lease::kind::database::DEFAULT_CONNECTION_LIMIT,
    };
    env.pg_backend(Timeouts::default())
        .with_generated_password_iterations(16)
        .new_user(&env.pg_endpoint(TlsMode::VerifyFull), &env.pg_admin_credentials(), request)
        .await
        .expect("a user with a 16-iteration verifier");
    let login = Login {
        host: "localhost".into(),
        port: env.pg.port,
        user,
        password,
        database: "postgres".into(),
        ca_file: env.h.ca_file.clone(),
        query: format!("SELECT id FROM {table}"),
    };
    let outcomes = login_all(&POSTGRES_CLIENTS, &login).await;
    expect_each("16 iterations: pg8000 must fail with scramp's error, every other client log in", &outcomes, |c, o| {
        match (c, o) {
            (Pg8000, Outcome::Failed(error)) => {
                error.contains("scramp.utils.ScramException: The value must not be < 4096")
            }
            (Pg8000, _) => false,
            (_, Outcome::LoggedIn { value, tls }) => value == GROUP_VALUE && tls != "none",
            _ => false,
        }
    });
}
