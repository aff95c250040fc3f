//! MySQL, Aurora MySQL and MariaDB behind [`DatabaseBackend`].
//!
//! - MariaDB writes `SET PASSWORD` and `IDENTIFIED BY` statements to its general log in
//!   cleartext, so keyturn sends it the account's `mysql_native_password` hash
//!   (`IDENTIFIED BY PASSWORD '*…'`), computed here. MySQL rewrites passwords out of its
//!   logs itself, so there `IDENTIFIED [WITH plugin] BY '…'` keeps the account's plugin.
//!   Every statement that differs by flavour (MariaDB, MySQL 8.0, 8.4) is built by a pure
//!   function of the server in [`statements`], where unit tests pin each flavour's text.
//! - A user changes its own password with the statement its server allows: `SET PASSWORD =
//!   '<hash>'` on MariaDB (whose `ALTER USER` needs CREATE USER even on oneself) and on
//!   MySQL before 5.7.6, `ALTER USER CURRENT_USER()` on later MySQL. An admin uses
//!   `CREATE USER` / `ALTER USER`.
//! - TLS is verified (public roots, the RDS bundle, extra CA files) unless the secret says
//!   `"ssl": false`; a server without TLS is refused, never used in plaintext.
//! - Alternating users: the clone is created on the original's own host part, with the
//!   original's TLS requirement and every grant `SHOW GRANTS` lists (database, table and
//!   column grants, roles, default role, partial revokes), re-synchronised at every
//!   rotation. Grant lines are parsed and rebuilt with keyturn's own quoting
//!   ([`grants`]), never copied as text, and every statement an admin session runs is
//!   sent as a prepared statement, which the server parses as exactly one statement.
//! - A deleted user's open sessions are ended (`KILL CONNECTION`, or `mysql.rds_kill` where
//!   the admin may not `KILL` others' sessions, as on RDS and Aurora) and checked gone; a
//!   session left fails the deletion ([`sessions`]).
//! - Every answer from the server is read as optional and by column name: a hostile or
//!   odd server gets an error, never a panic.
//! - Each session bounds statements on the server (`max_statement_time` /
//!   `max_execution_time`, and `lock_wait_timeout` for DDL waiting on a metadata lock) and
//!   on the client ([`Timeouts::bound`]).
//! - `mysql_clear_password` is never used: the driver refuses a server that asks for it.

pub mod expiry;
pub mod grants;
mod sessions;
mod statements;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};

use grants::{GrantKind, GrantLine};
use statements::{account, Server};
use tracing::{debug, instrument};

use crate::backend::tls::{TlsSetupError, RDS_CA_BUNDLE};
use crate::backend::{
    admin_key, AdminKey, BackendError, Credentials, DatabaseBackend, DeleteOutcome, DeleteUser, DynamicUsers, Endpoint,
    Engine, Family, ListUsers, NewUser, NewUserOutcome, SetOwnPassword, Timeouts, TlsMode, UpdateUser, UpsertOutcome,
    UpsertUser, Username,
};

/// `mysql_native_password`'s stored form: `*` and the upper-case hex of SHA1(SHA1(password)).
pub fn native_password_hash(password: &SecretString) -> String {
    let inner = Sha1::digest(password.expose_secret().as_bytes());
    let outer = Sha1::digest(inner);
    let hex: String = outer.iter().map(|b| format!("{b:02X}")).collect();
    format!("*{hex}")
}

/// A string literal for MySQL and MariaDB. Sessions run without NO_BACKSLASH_ESCAPES
/// (see `MysqlBackend::connect`), so backslash escaping is what the server reads.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An open session, what it is connected to, and what its errors name.
struct Session {
    conn: Conn,
    server: Server,
    endpoint: Endpoint,
    user: Username,
    timeouts: Timeouts,
    /// The schema of expiry events is known to exist ([`expiry`]).
    event_schema_seen: bool,
    /// This session's account was found to see every session (PROCESS, [`sessions`]).
    sees_every_session: bool,
    /// The server refused this session a `KILL` of another user's session: go straight
    /// to `mysql.rds_kill` ([`sessions`]).
    kill_denied: bool,
    /// Whether this session may read `performance_schema.threads`, once looked up
    /// ([`sessions`]).
    threads_readable: Option<bool>,
}

/// The kept admin session of one credential, shared by the callers of one process. Empty
/// until the first call, and again after a call that failed or was cancelled midway.
#[derive(Default)]
struct AdminSlot {
    session: tokio::sync::Mutex<Option<Session>>,
    /// The last login that failed retryably (no answer, no route), and when: callers that
    /// come within a login timeout of it get it at once instead of each trying (and
    /// waiting as long) in turn behind `session`'s lock.
    failed: Mutex<Option<(Instant, BackendError)>>,
}

impl AdminSlot {
    fn failed_since(&self, since: Instant) -> Option<BackendError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.as_ref().filter(|(at, _)| *at >= since).map(|(_, e)| e.clone())
    }
}

/// The MySQL-family backend: TLS roots and timeouts, built once per container.
#[derive(Clone)]
pub struct MysqlBackend {
    ssl: SslOpts,
    timeouts: Timeouts,
    /// Admin sessions of [`DynamicUsers`], kept open across warm invocations: one per
    /// admin credential ([`AdminKey`]), never shared with another. Rotation never uses
    /// them: it logs in per operation.
    admin_sessions: Arc<Mutex<HashMap<AdminKey, Arc<AdminSlot>>>>,
}

/// How long a kept admin session may take to answer a ping. A live one answers in
/// milliseconds; one the network dropped silently (an idle timeout in a NAT or in
/// Lambda's network while the container was frozen) never answers, and waiting for it
/// longer than this only delays the new login that replaces it.
const PING_DEADLINE: Duration = Duration::from_secs(1);

impl MysqlBackend {
    /// `extra_ca_files` are PEM files trusted besides the public roots and the RDS bundle.
    pub fn new(extra_ca_files: &[PathBuf], timeouts: Timeouts) -> Result<Self, TlsSetupError> {
        let mut roots = vec![RDS_CA_BUNDLE.to_vec().into()];
        for path in extra_ca_files {
            let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read { path: path.clone(), source })?;
            roots.push(pem.into());
        }
        Ok(Self { ssl: SslOpts::default().with_root_certs(roots), timeouts, admin_sessions: Arc::default() })
    }

    /// Runs `work` on the kept admin session of `admin` at `endpoint` (only ever the
    /// credential that opened it: [`AdminKey`]), opened when there is none and replaced
    /// when it does not answer a ping (closed by the server, killed, or dropped by the
    /// network). Callers with the same key take turns: `Conn` runs one
    /// statement at a time. A login refused is [`BackendError::LoginRefused`] as with any
    /// login, so the caller can read the admin secret again and retry.
    ///
    /// The session is taken out while `work` runs and put back only when it succeeded: a
    /// failure (a timeout may leave the connection mid-answer) or a cancelled call closes
    /// it, and the next call logs in again.
    async fn with_admin_session<T>(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        work: impl AsyncFnOnce(&mut Session) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let key = admin_key(endpoint, admin);
        let sessions = || self.admin_sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = sessions().entry(key.clone()).or_default().clone();
        let recently = |slot: &AdminSlot| {
            let now = Instant::now();
            slot.failed_since(now.checked_sub(self.timeouts.connect).unwrap_or(now))
        };
        // A database that just failed a login is not asked again for one login timeout:
        // callers arriving meanwhile, or waiting behind the login that failed, get its
        // failure at once, so a reaper's workers do not queue here one login after another
        // while other databases' leases wait behind them.
        if let Some(failure) = recently(&slot) {
            return Err(failure);
        }
        let mut kept = slot.session.lock().await;
        let alive = match kept.take() {
            Some(mut session) => session.answers().await.then_some(session),
            None => None,
        };
        if alive.is_none() {
            if let Some(failure) = recently(&slot) {
                return Err(failure);
            }
        }
        let mut session = match alive {
            Some(session) => session,
            None => match self.connect(endpoint, admin).await {
                Ok(session) => {
                    // A newer password for the same admin supersedes the sessions of older ones.
                    sessions().retain(|k, _| k.place != key.place || k.credential == key.credential);
                    session
                }
                Err(e) if e.is_retryable() => {
                    // The slot stays, with the failure the next callers get (above).
                    *slot.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), e.clone()));
                    return Err(e);
                }
                Err(e) => {
                    // Nothing kept for a credential that does not log in (a wrong password
                    // copied into another admin secret, say).
                    let mut sessions = sessions();
                    if sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                        sessions.remove(&key);
                    }
                    return Err(e);
                }
            },
        };
        let result = work(&mut session).await;
        if result.is_ok() {
            *kept = Some(session);
        }
        result
    }

    /// Opens a session as `login`, learns the server's flavour and version, and sets the
    /// statement and lock timeouts and a predictable `sql_mode` for quoting.
    #[instrument(skip_all, fields(host = %endpoint.host, port = endpoint.port, user = %login.username))]
    async fn connect(&self, endpoint: &Endpoint, login: &Credentials) -> Result<Session, BackendError> {
        let ssl = match endpoint.tls {
            TlsMode::VerifyFull => Some(self.ssl.clone()),
            TlsMode::Disabled => None,
        };
        let opts = OptsBuilder::default()
            .ip_or_hostname(endpoint.host.clone())
            .tcp_port(endpoint.port)
            .user(Some(login.username.as_str()))
            .pass(Some(login.password.expose_secret()))
            .db_name(endpoint.dbname.clone())
            .prefer_socket(false)
            // The default, said out loud: a server asking for the password in cleartext
            // (mysql_clear_password) is refused.
            .enable_cleartext_plugin(false)
            .ssl_opts(ssl);
        let seconds = self.timeouts.connect.as_secs();
        let conn = match tokio::time::timeout(self.timeouts.connect, Conn::new(opts)).await {
            Ok(result) => result.map_err(|e| classify(e, endpoint, &login.username, "login"))?,
            Err(_) => return Err(BackendError::Timeout { operation: "login", seconds }),
        };
        let mut session = Session {
            conn,
            server: Server { mariadb: false, version: (0, 0, 0) },
            endpoint: endpoint.clone(),
            user: login.username.clone(),
            timeouts: self.timeouts,
            event_schema_seen: false,
            sees_every_session: false,
            kill_denied: false,
            threads_readable: None,
        };
        let rows =
            session.rows("SELECT VERSION() AS version, CURRENT_USER() AS user", Vec::new(), "SELECT VERSION()").await?;
        let read = |column| {
            rows.first()
                .map(|r| text(r, column))
                .transpose()
                .map_err(|message| unexpected("SELECT VERSION()", message))
                .map(Option::flatten)
        };
        let version = read("version")?.ok_or_else(|| unexpected("SELECT VERSION()", "no version".into()))?;
        // The account the server matched must be the one asked for: an anonymous account
        // (''@'%') or a proxy would let any name "log in", proving nothing.
        let matched = read("user")?.unwrap_or_default();
        if matched.rsplit_once('@').map(|(user, _)| user) != Some(login.username.as_str()) {
            return Err(BackendError::LoginRefused { username: login.username.to_string() });
        }
        session.server = Server::parse(&version);
        // One statement, and a fixed sql_mode: whatever the server's default (ANSI, ORACLE,
        // NO_BACKSLASH_ESCAPES, ...), backslashes escape and `"` is no identifier quote, so
        // `literal` and the grant parser read and write quotes as the server does. UTC,
        // whatever the server's zone: expiry events are scheduled in the session's zone.
        let setup = statements::session_setup(session.server, self.timeouts.statement.as_secs());
        session.rows(&setup, Vec::new(), "session setup").await?;
        Ok(session)
    }
}

/// A server answer keyturn cannot use.
fn unexpected(operation: &'static str, message: String) -> BackendError {
    BackendError::Database { operation, message, retryable: false }
}

/// A text column by name: `Ok(None)` for NULL, an error for a missing column or a value
/// that is not text. Never panics, whatever the server sent.
fn text(row: &Row, column: &str) -> Result<Option<String>, String> {
    match row.get_opt::<Option<String>, &str>(column) {
        Some(Ok(value)) => Ok(value),
        Some(Err(_)) => Err(format!("column {column} is not text")),
        None => Err(format!("no column {column} in the answer")),
    }
}

/// A text column that must not be NULL.
fn required(row: &Row, column: &str) -> Result<String, String> {
    text(row, column)?.ok_or_else(|| format!("column {column} is NULL"))
}

impl Session {
    /// Runs a query under the client-side deadline; rows are read with [`text`] and
    /// [`required`] by the caller.
    async fn rows(
        &mut self,
        sql: &str,
        params: Vec<mysql_async::Value>,
        operation: &'static str,
    ) -> Result<Vec<Row>, BackendError> {
        let (timeouts, endpoint, user) = (self.timeouts, &self.endpoint, &self.user);
        let conn = &mut self.conn;
        let run = async {
            match params.is_empty() {
                true => conn.query::<Row, _>(sql).await,
                false => conn.exec::<Row, _, _>(sql, params).await,
            }
            .map_err(|e| classify(e, endpoint, user, operation))
        };
        timeouts.bound(operation, run).await
    }

    /// Runs one statement as a prepared statement (the server parses exactly one) under
    /// the client-side deadline.
    async fn run(&mut self, sql: &str, operation: &'static str) -> Result<(), BackendError> {
        let (timeouts, endpoint, user) = (self.timeouts, &self.endpoint, &self.user);
        let conn = &mut self.conn;
        let run = async { prepared(conn, sql).await.map_err(|e| classify(e, endpoint, user, operation)) };
        timeouts.bound(operation, run).await
    }

    /// [`Session::run`] for `CREATE`, `ALTER` and `DROP EVENT`, which older MariaDB
    /// releases refuse to prepare (error 1295; 10.11 prepares them): there, and only
    /// there, the statement goes as text. Text may hold several statements; these are
    /// built only from names and values quoted by [`literal`] and [`grants::identifier`],
    /// so they hold one.
    async fn run_event_statement(&mut self, sql: &str, operation: &'static str) -> Result<(), BackendError> {
        let (timeouts, endpoint, user) = (self.timeouts, &self.endpoint, &self.user);
        let conn = &mut self.conn;
        let run = async {
            match prepared(conn, sql).await {
                Err(mysql_async::Error::Server(e)) if e.code == ER_UNSUPPORTED_PS => conn.query_drop(sql).await,
                other => other,
            }
            .map_err(|e| classify(e, endpoint, user, operation))
        };
        timeouts.bound(operation, run).await
    }

    /// [`Session::run`] for a statement whose refusal the caller decides on: a server
    /// error comes back as `Ok(Err((code, message)))`, the message only where it cannot
    /// quote a statement ([`server_message`]); anything else (a lost connection, a timeout)
    /// is an error. Sent as text where the server cannot prepare it (error 1295), like
    /// [`Session::run_event_statement`]; these statements hold only numbers.
    async fn try_run(&mut self, sql: &str, operation: &'static str) -> Result<Result<(), (u16, String)>, BackendError> {
        let (timeouts, endpoint, user) = (self.timeouts, &self.endpoint, &self.user);
        let conn = &mut self.conn;
        let run = async {
            let result = match prepared(conn, sql).await {
                Err(mysql_async::Error::Server(e)) if e.code == ER_UNSUPPORTED_PS => conn.query_drop(sql).await,
                other => other,
            };
            match result {
                Ok(()) => Ok(Ok(())),
                Err(mysql_async::Error::Server(e)) => Ok(Err((e.code, server_message(&e)))),
                Err(e) => Err(classify(e, endpoint, user, operation)),
            }
        };
        timeouts.bound(operation, run).await
    }

    /// Whether the session still answers, within [`PING_DEADLINE`].
    async fn answers(&mut self) -> bool {
        matches!(tokio::time::timeout(PING_DEADLINE, self.conn.ping()).await, Ok(Ok(())))
    }
}

/// "This command is not supported in the prepared statement protocol yet".
const ER_UNSUPPORTED_PS: u16 = 1295;

/// Prepares, runs and closes one statement.
async fn prepared(conn: &mut Conn, sql: &str) -> Result<(), mysql_async::Error> {
    let statement = conn.prep(sql).await?;
    let result = conn.exec_drop(&statement, ()).await;
    // Closed at once: the statement text may hold a password (MySQL's IDENTIFIED BY).
    conn.close(statement).await.ok();
    result
}

/// Server errors whose message names only users, databases and limits, never a statement
/// (a syntax error quotes the statement, which may hold a password on MySQL).
const PLAIN_MESSAGES: [u16; 19] =
    [1044, 1045, 1094, 1095, 1133, 1142, 1143, 1205, 1213, 1227, 1290, 1305, 1370, 1396, 1040, 1053, 1819, 1969, 3024];

/// What a server error may say: its message when it cannot quote a statement, its code
/// and SQLSTATE otherwise.
fn server_message(s: &mysql_async::ServerError) -> String {
    match PLAIN_MESSAGES.contains(&s.code) {
        true => format!("{} ({})", s.message, s.code),
        false => format!("server error {} (SQLSTATE {})", s.code, s.state),
    }
}

/// Maps a driver error to what the caller can act on. A server's message is kept only
/// when it cannot quote a statement.
fn classify(e: mysql_async::Error, endpoint: &Endpoint, user: &Username, operation: &'static str) -> BackendError {
    use mysql_async::{DriverError, Error, IoError};
    let (host, port) = (endpoint.host.clone(), endpoint.port);
    match e {
        // 1045: access denied (wrong password or no such account).
        Error::Server(s) if s.code == 1045 => BackendError::LoginRefused { username: user.to_string() },
        Error::Server(s) => BackendError::Database {
            operation,
            message: server_message(&s),
            // Lock wait timeout, deadlock, too many connections, server shutting down,
            // statement timeouts (MariaDB, MySQL).
            retryable: matches!(s.code, 1205 | 1213 | 1040 | 1053 | 1969 | 3024),
        },
        Error::Io(IoError::Tls(t)) => BackendError::Tls { host, port, message: t.to_string() },
        Error::Driver(d @ DriverError::NoClientSslFlagFromServer) => {
            BackendError::Tls { host, port, message: format!("{d}: the server does not offer TLS") }
        }
        Error::Driver(DriverError::CleartextPluginDisabled) => BackendError::CleartextRefused { host, port },
        // The TLS stream reports certificate failures as I/O errors wrapping rustls's.
        Error::Io(IoError::Io(io)) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            BackendError::Tls { host, port, message: io.to_string() }
        }
        Error::Io(IoError::Io(io)) => BackendError::Unreachable { host, port, message: io.to_string() },
        // Driver errors may carry the server's packet: say which kind, not what it held.
        Error::Driver(d) => BackendError::Database { operation, message: driver_error_kind(&d), retryable: false },
        other => BackendError::Database { operation, message: other.to_string(), retryable: false },
    }
}

/// The variant name of a driver error, without its payload.
fn driver_error_kind(d: &mysql_async::DriverError) -> String {
    let debug = format!("{d:?}");
    let name: String = debug.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    format!("driver error {name}")
}

impl DatabaseBackend for MysqlBackend {
    fn serves(&self, engine: Engine) -> bool {
        engine.family() == Family::Mysql
    }

    /// Any name the server can hold: quotes, backticks, backslashes, spaces and unicode
    /// are quoted wherever they are written ([`literal`], [`grants`]).
    fn check_username(&self, engine: Engine, username: &Username) -> Result<(), String> {
        // The server ignores trailing spaces when it compares names: `admin ` is `admin`.
        if username.as_str().ends_with(' ') {
            return Err(format!("ends with a space, which {} ignores when it compares names", engine.as_str()));
        }
        let max = engine.max_username_len();
        let len = username.as_str().chars().count();
        match len > max {
            true => Err(format!("is {len} characters, over the {max}-character limit of {}", engine.as_str())),
            false => Ok(()),
        }
    }

    #[instrument(skip_all, fields(user = %login.username))]
    async fn verify(&self, endpoint: &Endpoint, login: &Credentials) -> Result<(), BackendError> {
        let session = self.connect(endpoint, login).await?;
        session.conn.disconnect().await.ok();
        Ok(())
    }

    #[instrument(skip_all, fields(user = %req.login.username))]
    async fn set_own_password(&self, endpoint: &Endpoint, req: SetOwnPassword<'_>) -> Result<(), BackendError> {
        let mut session = self.connect(endpoint, req.login).await?;
        let server = session.server;

        // A user with several host parts (app@'%' and app@'10.%') has one password per
        // part; changing only the one this session matched would lock out clients that
        // match another. Refused when the user can see it (reading mysql.user needs a
        // grant most application users lack: then the server alone knows).
        let hosts = session
            .rows(
                "SELECT Host FROM mysql.user WHERE User = ?",
                vec![req.login.username.as_str().into()],
                "listing the user's accounts",
            )
            .await;
        match hosts {
            Ok(rows) if rows.len() > 1 => {
                let hosts: Vec<String> = rows.iter().filter_map(|r| text(r, "Host").ok().flatten()).collect();
                return Err(BackendError::Database {
                    operation: "checking the user's accounts",
                    message: format!(
                        "{:?} has {} accounts ({}); single-user rotation would change only one of them: give the user one host part, or rotate with alternating users",
                        req.login.username.as_str(),
                        rows.len(),
                        hosts.join(", ")
                    ),
                    retryable: false,
                });
            }
            Ok(_) | Err(BackendError::Database { .. }) => {}
            Err(other) => return Err(other),
        }

        // MariaDB: the account's plugin decides the hash; SHOW CREATE USER works on oneself.
        let plugin = match server.mariadb {
            true => {
                let rows = session.rows("SHOW CREATE USER CURRENT_USER()", Vec::new(), "SHOW CREATE USER").await?;
                let create = match rows.first() {
                    Some(row) => {
                        row.get_opt::<Option<String>, usize>(0).and_then(Result::ok).flatten().unwrap_or_default()
                    }
                    None => String::new(),
                };
                plugin_of(&create)
            }
            false => String::new(),
        };
        let sql = statements::own_password(server, &plugin, req.new_password)?;
        session.run(&sql, "changing the password").await?;
        session.conn.disconnect().await.ok();
        Ok(())
    }

    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username, template = %req.template))]
    async fn upsert_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpsertUser<'_>,
    ) -> Result<UpsertOutcome, BackendError> {
        let mut session = self.connect(endpoint, admin).await?;
        let server = session.server;
        let invalid =
            |message: String| BackendError::Database { operation: "checking the accounts", message, retryable: false };

        // The template's accounts: keyturn rotates a user that has exactly one host part.
        let rows = session
            .rows(
                "SELECT Host, plugin, ssl_type, CAST(ssl_cipher AS CHAR) AS ssl_cipher, \
                 CAST(x509_issuer AS CHAR) AS x509_issuer, CAST(x509_subject AS CHAR) AS x509_subject \
                 FROM mysql.user WHERE User = ?",
                vec![req.template.as_str().into()],
                "reading the template account",
            )
            .await?;
        let template = match rows.as_slice() {
            [] => return Err(BackendError::NoSuchUser { username: req.template.to_string() }),
            [row] => TemplateAccount::read(row).map_err(|m| unexpected("reading the template account", m))?,
            rows => {
                let hosts: Vec<String> = rows.iter().filter_map(|r| text(r, "Host").ok().flatten()).collect();
                return Err(invalid(format!(
                    "{:?} has {} accounts ({}); keyturn rotates a user with one host part",
                    req.template.as_str(),
                    rows.len(),
                    hosts.join(", ")
                )));
            }
        };
        if !server.has_alter_user() {
            return Err(invalid(format!(
                "server version {} has no ALTER USER (MariaDB 10.2 or MySQL 5.7.6 needed for alternating users)",
                server.version_text()
            )));
        }
        let host = template.host.clone();
        let auth = server.auth_clause(&template.plugin, req.password)?;
        let target = account(req.username.as_str(), &host);
        if req.username == req.template {
            if req.create_only {
                return Err(BackendError::UserExists { username: req.username.to_string() });
            }
            session.run(&statements::alter_user_auth(&target, &auth), "ALTER USER").await?;
            session.conn.disconnect().await.ok();
            return Ok(UpsertOutcome { created: false });
        }

        // The server's own limit (MariaDB's column is wider than MySQL's 32).
        let width = session
            .rows(
                "SELECT CAST(CHARACTER_MAXIMUM_LENGTH AS CHAR) AS width FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME IN ('global_priv', 'user') AND COLUMN_NAME = 'User' \
                 ORDER BY TABLE_NAME LIMIT 1",
                Vec::new(),
                "reading the username width",
            )
            .await?;
        if let Some(width) =
            width.first().and_then(|r| text(r, "width").ok().flatten()).and_then(|w| w.parse::<usize>().ok())
        {
            let len = req.username.as_str().chars().count();
            if len > width {
                return Err(invalid(format!(
                    "{:?} is {len} characters, over this server's {width}-character limit",
                    req.username.as_str()
                )));
            }
        }
        let exists = !session
            .rows(
                "SELECT Host FROM mysql.user WHERE User = ? AND Host = ?",
                vec![req.username.as_str().into(), host.as_str().into()],
                "looking up the clone",
            )
            .await?
            .is_empty();
        if exists && req.create_only {
            return Err(BackendError::UserExists { username: req.username.to_string() });
        }
        let grant_rows = session
            .rows(&format!("SHOW GRANTS FOR {}", account(req.template.as_str(), &host)), Vec::new(), "SHOW GRANTS")
            .await?;
        let mut lines = Vec::new();
        for row in &grant_rows {
            let line = row.get_opt::<Option<String>, usize>(0).and_then(Result::ok).flatten();
            lines.push(line.ok_or_else(|| unexpected("SHOW GRANTS", "a grant line is not text".into()))?);
        }
        let grants = copied_grants(&lines, (req.template.as_str(), &host))
            .map_err(|m| unexpected("reading the template's grants", m))?;

        let mut sent = Vec::new();
        match exists {
            false => sent.push(statements::create_user(&target, &auth)),
            true => {
                sent.push(statements::alter_user_auth(&target, &auth));
                // Re-synchronise: what the original no longer has, the clone loses too
                // (resource limits the original still has come back with its grants).
                sent.push(statements::revoke_all(&target));
                sent.push(statements::reset_resource_limits(server, &target));
            }
        }
        sent.push(statements::require(&target, &template.require()));
        sent.extend(grants.iter().map(|g| match (g.kind, g.default_role()) {
            // MariaDB prints default roles as SET DEFAULT ROLE lines; MySQL does not, and
            // would want TO, not FOR.
            (GrantKind::DefaultRole, Some(role)) => statements::set_default_role(server, role, &target),
            _ => g.render_for((req.username.as_str(), &host)),
        }));
        for statement in &sent {
            session.run(statement, "creating or updating the clone").await?;
        }
        session.conn.disconnect().await.ok();
        debug!(created = !exists, grants = grants.len(), "account upserted");
        Ok(UpsertOutcome { created: !exists })
    }
}

/// Short-lived MySQL-family users on the `%` host part. MariaDB activates one role per
/// session by default, so a user with several groups has the first as its default role
/// and may `SET ROLE` to the others. MariaDB has no account expiry a user cannot outlive:
/// where its event scheduler is ON, an event drops the user at its expiry ([`expiry`]);
/// elsewhere (and on MySQL) the reaper alone enforces it. Every operation runs on the kept
/// admin session ([`MysqlBackend::with_admin_session`]).
impl DynamicUsers for MysqlBackend {
    /// The user with its connection limit (`MAX_USER_CONNECTIONS`, which the user cannot
    /// change: `ALTER USER` needs CREATE USER), its groups, its default role and, where the
    /// server enforces expiry, its expiry event. A server error after the user exists drops it again, so a failed call
    /// leaves nothing behind.
    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn new_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: NewUser,
    ) -> Result<NewUserOutcome, BackendError> {
        self.with_admin_session(endpoint, admin, async |session| {
            let server = session.server;
            if !req.groups.is_empty() && !server.has_roles() {
                return Err(unexpected(
                    "checking the server",
                    format!(
                        "server version {} has no roles (MariaDB 10.0.5 or MySQL 8.0 needed for group roles)",
                        server.version_text()
                    ),
                ));
            }
            let target = account(req.username.as_str(), "%");
            let auth = server.auth_clause("", &req.password)?;
            let server_expiry = session.server_expiry().await?;
            let sql = statements::create_dynamic_user(&target, &auth, req.connection_limit);
            session.run(&sql, "creating the user").await?;
            let shape = async {
                for group in &req.groups {
                    session.run(&statements::grant_role(group, &target), "granting a group").await?;
                }
                if let Some(first) = req.groups.first() {
                    let sql = statements::set_default_role(server, first, &target);
                    session.run(&sql, "setting the default role").await?;
                }
                if server_expiry {
                    session.create_expiry_event(&req.username, req.expires_at).await?;
                }
                Ok(())
            };
            match shape.await {
                Ok(()) => Ok(NewUserOutcome { server_expiry }),
                // A refusal leaves the session usable, so the user goes again; after a
                // timeout or a lost connection it may not be, and the reaper's orphan
                // sweep finds the user instead.
                Err(e @ BackendError::Database { .. }) => {
                    session.run(&statements::drop_user(&target), "undoing the new user").await.ok();
                    Err(e)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// The password on every host part of the user, and its expiry event moved (a user
    /// without one, made while the scheduler was off, keeps having none).
    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn update_user(&self, endpoint: &Endpoint, admin: &Credentials, req: UpdateUser) -> Result<(), BackendError> {
        if req.password.is_none() && req.expires_at.is_none() {
            return Ok(());
        }
        self.with_admin_session(endpoint, admin, async |session| {
            let hosts = session
                .rows(
                    "SELECT Host FROM mysql.user WHERE User = ?",
                    vec![req.username.as_str().into()],
                    "looking up the user",
                )
                .await?;
            if hosts.is_empty() {
                return Err(BackendError::NoSuchUser { username: req.username.to_string() });
            }
            if let Some(password) = &req.password {
                let auth = session.server.auth_clause("", password)?;
                for row in &hosts {
                    let host = required(row, "Host").map_err(|m| unexpected("looking up the user", m))?;
                    let sql = statements::alter_user_auth(&account(req.username.as_str(), &host), &auth);
                    session.run(&sql, "updating the user").await?;
                }
            }
            if let Some(at) = req.expires_at {
                let moved = session.move_expiry_event(&req.username, at).await?;
                debug!(moved, "expiry event");
            }
            Ok(())
        })
        .await
    }

    /// Every account of the user dropped first (no new logins), then its sessions ended
    /// and checked gone ([`sessions`]: a session left fails the call, retryably), then its
    /// expiry event dropped (last: until the user is gone, the event still guards it).
    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn delete_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: DeleteUser,
    ) -> Result<DeleteOutcome, BackendError> {
        self.with_admin_session(endpoint, admin, async |session| {
            let name = req.username.as_str();
            let hosts = session
                .rows("SELECT Host FROM mysql.user WHERE User = ?", vec![name.into()], "looking up the user")
                .await?;
            for row in &hosts {
                let host = required(row, "Host").map_err(|m| unexpected("looking up the user", m))?;
                session.run(&statements::drop_user(&account(name, &host)), "dropping the user").await?;
            }
            let sessions_ended = session.end_sessions(&req.username).await?;
            let event_dropped = session.drop_expiry_event(&req.username).await?;
            debug!(event_dropped, sessions_ended, "user deleted");
            Ok(DeleteOutcome { existed: !hosts.is_empty(), sessions_ended })
        })
        .await
    }

    #[instrument(skip_all, fields(admin = %admin.username, prefix = %req.prefix))]
    async fn list_users(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: ListUsers,
    ) -> Result<Vec<Username>, BackendError> {
        let rows = self
            .with_admin_session(endpoint, admin, async |session| {
                session
                    .rows(
                        "SELECT DISTINCT User AS name FROM mysql.user WHERE LEFT(User, CHAR_LENGTH(?)) = ? ORDER BY User",
                        vec![req.prefix.as_str().into(), req.prefix.as_str().into()],
                        "listing users",
                    )
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| {
                let name = required(row, "name").map_err(|m| unexpected("listing users", m))?;
                Username::parse(&name).map_err(|m| unexpected("listing users", m))
            })
            .collect()
    }
}

/// The template's row of `mysql.user`: its host part, plugin and TLS requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemplateAccount {
    host: String,
    plugin: String,
    ssl_type: String,
    cipher: String,
    issuer: String,
    subject: String,
}

impl TemplateAccount {
    fn read(row: &Row) -> Result<Self, String> {
        let optional = |column| text(row, column).map(Option::unwrap_or_default);
        Ok(Self {
            host: required(row, "Host")?,
            plugin: optional("plugin")?,
            ssl_type: optional("ssl_type")?,
            cipher: optional("ssl_cipher")?,
            issuer: optional("x509_issuer")?,
            subject: optional("x509_subject")?,
        })
    }

    /// The `REQUIRE` clause giving another account the same TLS requirement; every value
    /// quoted here.
    fn require(&self) -> String {
        match self.ssl_type.as_str() {
            "ANY" => "SSL".to_owned(),
            "X509" => "X509".to_owned(),
            "SPECIFIED" => {
                let parts: Vec<String> =
                    [("ISSUER", &self.issuer), ("SUBJECT", &self.subject), ("CIPHER", &self.cipher)]
                        .into_iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| format!("{k} {}", literal(v)))
                        .collect();
                parts.join(" AND ")
            }
            _ => "NONE".to_owned(),
        }
    }
}

/// The template's `SHOW GRANTS` lines worth copying, parsed. A line for another grantee
/// is skipped; a line that does not parse stops the copy (a clone must not silently get
/// less than the original). MariaDB keeps a default role after the role itself is revoked
/// and still lists `SET DEFAULT ROLE` for it; copying that line would fail, so a default
/// role is kept only while it is granted.
fn copied_grants(lines: &[String], template: (&str, &str)) -> Result<Vec<GrantLine>, String> {
    let mut parsed = Vec::new();
    for line in lines {
        let grant =
            GrantLine::parse(line).map_err(|problem| format!("a SHOW GRANTS line could not be read: {problem}"))?;
        if grant.is_proxy() {
            // REVOKE ALL does not take PROXY away, so it could not be kept in step; and
            // granting it needs the admin to hold that very PROXY grant.
            return Err("the original holds a PROXY grant, which keyturn does not copy to a clone".into());
        }
        if grant.grantee.0 == template.0 && grant.grantee.1 == template.1 {
            parsed.push(grant);
        }
    }
    let granted: Vec<String> = parsed.iter().flat_map(|g| g.granted_roles()).map(str::to_owned).collect();
    parsed.retain(|g| match (g.kind, g.default_role()) {
        (GrantKind::DefaultRole, Some(role)) => granted.iter().any(|r| r == role),
        _ => true,
    });
    Ok(parsed)
}

/// The authentication plugin named in a `SHOW CREATE USER` line ("" when it only shows a
/// password hash, which is mysql_native_password).
fn plugin_of(create_user: &str) -> String {
    for keyword in [" IDENTIFIED VIA ", " IDENTIFIED WITH "] {
        if let Some(at) = create_user.find(keyword) {
            let rest = &create_user[at + keyword.len()..];
            let name = rest.split_whitespace().next().unwrap_or_default();
            return name.trim_matches(|c| c == '\'' || c == '`').to_owned();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_the_server_function() {
        // SELECT PASSWORD('password') on MariaDB and MySQL 5.7.
        let hash = native_password_hash(&SecretString::from("password"));
        assert_eq!(hash, "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
    }

    #[test]
    fn literals_escape_everything_that_ends_or_bends_a_string() {
        assert_eq!(literal(r#"a'b\c"d"#), r#"'a\'b\\c"d'"#);
        assert_eq!(literal("x\0y\nz"), r"'x\0y\nz'");
    }

    #[test]
    fn grants_for_other_grantees_are_skipped_and_dead_default_roles_dropped() {
        let lines: Vec<String> = [
            "GRANT USAGE ON *.* TO `app`@`%`",
            "GRANT `reader` TO `app`@`%`",
            "SET DEFAULT ROLE `reader` FOR `app`@`%`",
            "GRANT SELECT ON `db`.* TO `other`@`%`",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(copied_grants(&lines, ("app", "%")).unwrap().len(), 3);
        let revoked = [lines[0].clone(), lines[2].clone()];
        let kept = copied_grants(&revoked, ("app", "%")).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].render_for(("c", "%")), "GRANT USAGE ON *.* TO 'c'@'%'");
        let broken = ["GRANT USAGE ON *.* TO `app`@`%`; DROP USER x".to_owned()];
        assert!(copied_grants(&broken, ("app", "%")).is_err());
    }

    #[test]
    fn server_answers_are_read_without_panics() {
        use mysql_async::consts::ColumnType;
        use mysql_async::{Column, Value};
        let columns: std::sync::Arc<[Column]> =
            vec![Column::new(ColumnType::MYSQL_TYPE_VAR_STRING).with_name(b"version")].into();
        let null = mysql_common::row::new_row(vec![Value::NULL], columns.clone());
        assert_eq!(text(&null, "version"), Ok(None));
        assert!(required(&null, "version").unwrap_err().contains("NULL"));
        assert!(text(&null, "other").unwrap_err().contains("no column other"));
        let number = mysql_common::row::new_row(vec![Value::Int(3)], columns.clone());
        assert!(text(&number, "version").is_ok() || text(&number, "version").is_err());
        let bytes = mysql_common::row::new_row(vec![Value::Bytes(vec![0xff, 0xfe])], columns);
        assert!(text(&bytes, "version").unwrap_err().contains("not text"));
    }

    #[test]
    fn plugins_are_read_from_show_create_user() {
        assert_eq!(plugin_of("CREATE USER `a`@`%` IDENTIFIED BY PASSWORD '*ABC'"), "");
        assert_eq!(plugin_of("CREATE USER `a`@`%` IDENTIFIED VIA ed25519 USING 'x'"), "ed25519");
        assert_eq!(
            plugin_of("CREATE USER 'a'@'%' IDENTIFIED WITH 'caching_sha2_password' AS 'x'"),
            "caching_sha2_password"
        );
    }

    #[test]
    fn names_the_server_would_compare_differently_are_refused() {
        let backend = MysqlBackend::new(&[], Timeouts::default()).unwrap();
        let err = backend.check_username(Engine::Mariadb, &Username::parse("admin ").unwrap()).unwrap_err();
        assert!(err.contains("ends with a space"), "{err}");
    }

    #[test]
    fn any_name_within_the_limit_is_accepted() {
        let backend = MysqlBackend::new(&[], Timeouts::default()).unwrap();
        let user = |n: &str| Username::parse(n).unwrap();
        for name in ["app_clone", "it's `me`", "dq\"", "bs\\", "with space", "ünïcødé"] {
            assert!(backend.check_username(Engine::Mariadb, &user(name)).is_ok(), "{name}");
        }
        let long = "u".repeat(33);
        assert!(backend.check_username(Engine::Mysql, &user(&long)).unwrap_err().contains("32-character"));
        assert!(backend.check_username(Engine::Mariadb, &user(&long)).is_ok());
        assert!(backend.check_username(Engine::Mariadb, &user(&"é".repeat(81))).is_err());
    }

    #[test]
    fn server_messages_that_may_quote_a_statement_are_not_repeated() {
        let endpoint =
            Endpoint { engine: Engine::Mariadb, host: "db".into(), port: 3306, dbname: None, tls: TlsMode::Disabled };
        let login = Credentials { username: Username::parse("app").unwrap(), password: SecretString::from("pw") };
        let server = |code: u16, message: &str| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: message.into(),
                state: "42000".into(),
            })
        };
        let syntax = server(1064, "You have an error in your SQL syntax near 'IDENTIFIED BY 's3cr3t'' at line 1");
        let e = classify(syntax, &endpoint, &login.username, "changing the password").to_string();
        assert!(!e.contains("s3cr3t") && e.contains("1064"), "{e}");
        let denied = server(1227, "Access denied; you need the CREATE USER privilege");
        assert!(classify(denied, &endpoint, &login.username, "x").to_string().contains("CREATE USER privilege"));
    }
}
