//! PostgreSQL (and Aurora PostgreSQL) behind [`DatabaseBackend`].
//!
//! - Passwords reach the server only as SCRAM-SHA-256 verifiers computed here, so no
//!   cleartext password can appear in server logs or `pg_stat_activity`.
//! - Identifiers and literals are escaped with `postgres-protocol`; role names with
//!   quotes, spaces or SQL in them work and inject nothing.
//! - TLS is verify-full unless the secret says `"ssl": false`; there is no fallback.
//! - Alternating users: the clone is a member of the original and starts every session
//!   as the original (`ALTER ROLE clone SET role`), so whatever either user creates is
//!   owned by the original and usable by both.

mod cleartext;
pub mod scram;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::password::scram_sha_256;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpStream;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::{Severity, SqlState};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, instrument};

use cleartext::{CleartextRequested, NoCleartextPassword};

use crate::backend::{
    admin_key, AdminKey, BackendError, Credentials, DatabaseBackend, DeleteOutcome, DeleteUser, DynamicUsers, Endpoint,
    Engine, Family, ListUsers, NewUser, NewUserOutcome, SetOwnPassword, Timeouts, TlsMode, UpdateUser, UpsertOutcome,
    UpsertUser, Username,
};
use crate::time::utc_datetime;

/// The PostgreSQL backend: TLS configuration and timeouts, built once per container.
#[derive(Clone)]
pub struct PostgresBackend {
    tls: MakeRustlsConnect,
    timeouts: Timeouts,
    /// SCRAM iterations of the passwords [`DynamicUsers::new_user`] and `update_user` set.
    generated_password_iterations: u32,
    /// Admin sessions of [`DynamicUsers`], kept open across warm invocations: one per
    /// admin credential ([`AdminKey`]), checked before use and opened again once it fails.
    admin_sessions: Arc<Mutex<HashMap<AdminKey, Arc<AdminSlot>>>>,
}

/// How long a kept admin session may take to answer its check. A live one answers in
/// milliseconds; one the network dropped silently (an idle timeout in a NAT or in
/// Lambda's network while the container was frozen) never answers, and waiting for it
/// longer only delays the new login that replaces it.
const PING_DEADLINE: Duration = Duration::from_secs(2);
/// A kept session that answered this recently (a check, or an operation that succeeded)
/// is used without a check: a busy container pays no round trip (nor, on a starved
/// scheduler, a check that times out on a live session), and a session that stops
/// answering meanwhile is dropped at its first timeout. A container thawed after minutes
/// checks first.
const CHECKED_FOR: Duration = Duration::from_secs(5);

/// The kept admin session of one credential, and the lock that makes callers arriving
/// together wait for one login instead of each opening (and then dropping) a session.
/// The lock is per credential, so a database that never answers delays only its own
/// callers, each for about one login ([`Timeouts::connect`]): those that waited for a
/// login that failed get its error, and so do those that come within one login timeout
/// of a failure for want of an answer.
#[derive(Default)]
struct AdminSlot {
    session: Mutex<Option<(Arc<Session>, Instant)>>,
    connecting: tokio::sync::Mutex<()>,
    /// The last login that failed, and when: callers that waited for it (or, when it
    /// failed retryably, came soon after it) get its error rather than each trying again
    /// (and waiting as long) in turn.
    failed: Mutex<Option<(Instant, BackendError)>>,
}

impl AdminSlot {
    fn fail(&self, e: &BackendError) {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), e.clone()));
    }

    /// The error of a login that failed after `asked`.
    fn failed_since(&self, asked: Instant) -> Option<BackendError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.as_ref().filter(|(at, _)| *at >= asked).map(|(_, e)| e.clone())
    }

    fn kept(&self) -> Option<(Arc<Session>, Instant)> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn keep(&self, session: Arc<Session>, checked: Instant) {
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some((session, checked));
    }

    /// Notes that `session` just answered, unless another has replaced it meanwhile.
    fn answered(&self, session: &Arc<Session>) {
        let mut kept = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, checked)) = kept.as_mut().filter(|(s, _)| Arc::ptr_eq(s, session)) {
            *checked = Instant::now();
        }
    }

    /// Forgets `session` unless another has replaced it meanwhile.
    fn evict(&self, session: &Arc<Session>) {
        let mut kept = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if kept.as_ref().is_some_and(|(s, _)| Arc::ptr_eq(s, session)) {
            *kept = None;
        }
    }
}

impl PostgresBackend {
    pub fn new(tls: Arc<rustls::ClientConfig>, timeouts: Timeouts) -> Self {
        Self {
            tls: MakeRustlsConnect::new((*tls).clone()),
            timeouts,
            generated_password_iterations: scram::GENERATED_PASSWORD_ITERATIONS,
            admin_sessions: Arc::default(),
        }
    }

    /// Runs `work` on the kept admin session of `admin` at `endpoint`, or on a new one. A
    /// kept session is used only for the credential that opened it, and only while it
    /// answers: one the server closed (restart, idle timeout, terminated) or that does not
    /// answer a quick query within [`PING_DEADLINE`] is replaced, and one on which `work`
    /// timed out or lost the connection is dropped, so the next call logs in again instead
    /// of waiting on a dead connection. Rotation never uses these: it logs in per operation.
    async fn with_admin_session<T>(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        work: impl AsyncFnOnce(&Session) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let (slot, session) = self.live_admin_session(endpoint, admin).await?;
        let result = {
            let _running = InFlight::start(&session);
            work(&session).await
        };
        match &result {
            Ok(_) => slot.answered(&session),
            Err(BackendError::Timeout { .. } | BackendError::Unreachable { .. }) => slot.evict(&session),
            Err(_) => {}
        }
        result
    }

    /// The kept admin session of `admin` at `endpoint` if it answers, else a new one, with
    /// the slot that keeps it. Only [`PostgresBackend::with_admin_session`] calls this.
    async fn live_admin_session(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
    ) -> Result<(Arc<AdminSlot>, Arc<Session>), BackendError> {
        let key = admin_key(endpoint, admin);
        let sessions = || self.admin_sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = sessions().entry(key.clone()).or_default().clone();
        if let Some(session) = self.answering(&slot).await {
            return Ok((slot, session));
        }
        let asked = Instant::now();
        // A database that just failed a login (no answer, no route) is not asked again for
        // one login timeout: callers arriving meanwhile get that failure at once, retryably,
        // so a reaper's workers are not held up one wave of logins after another by it
        // while other databases' leases wait behind them.
        if let Some(failure) = slot.failed_since(asked.checked_sub(self.timeouts.connect).unwrap_or(asked)) {
            if failure.is_retryable() {
                return Err(failure);
            }
        }
        // A login in progress ends within the connect timeout, and its outcome is every
        // waiter's; the bound is a safety net on top, with room for a busy scheduler.
        let bound = self.timeouts.connect * 2;
        let Ok(_connecting) = tokio::time::timeout(bound, slot.connecting.lock()).await else {
            let seconds = bound.as_secs();
            return Err(BackendError::Timeout { operation: "waiting for another login to the same database", seconds });
        };
        // Another caller may have logged in, or failed to, while this one waited.
        if let Some((session, _)) = slot.kept().filter(|(s, _)| !s.is_closed()) {
            return Ok((slot.clone(), session));
        }
        if let Some(failure) = slot.failed_since(asked) {
            return Err(failure);
        }
        match self.connect(endpoint, admin).await {
            Ok(session) => {
                let session = Arc::new(session);
                slot.keep(session.clone(), Instant::now());
                // A newer password for the same admin supersedes the sessions of older ones.
                sessions().retain(|k, _| k.place != key.place || k.credential == key.credential);
                Ok((slot.clone(), session))
            }
            Err(e) => {
                slot.fail(&e);
                // Nothing kept for a credential that does not log in (a wrong password
                // copied into another admin secret, say); a database that did not answer
                // keeps its slot, whose failure the next callers get (above).
                let mut sessions = sessions();
                if !e.is_retryable() && sessions.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot) && s.kept().is_none())
                {
                    sessions.remove(&key);
                }
                Err(e)
            }
        }
    }

    /// The slot's kept session if it still answers: checked with a quick query unless it
    /// answered within [`CHECKED_FOR`] or other operations run on it now (a check would
    /// wait behind them, and were it dead they time out and drop it); dropped from the
    /// slot otherwise.
    async fn answering(&self, slot: &AdminSlot) -> Option<Arc<Session>> {
        let (session, checked) = slot.kept()?;
        if !session.is_closed() {
            if checked.elapsed() < CHECKED_FOR || session.in_flight.load(Ordering::SeqCst) > 0 {
                return Some(session);
            }
            if let Ok(Ok(_)) = tokio::time::timeout(PING_DEADLINE, session.simple_query("")).await {
                slot.keep(session.clone(), Instant::now());
                return Some(session);
            }
        }
        slot.evict(&session);
        None
    }

    /// Another SCRAM iteration count for generated passwords (see [`scram`]).
    pub fn with_generated_password_iterations(mut self, iterations: u32) -> Self {
        self.generated_password_iterations = iterations;
        self
    }

    /// `PASSWORD '<verifier>'` for a password keyturn generated.
    fn generated_password_clause(&self, password: &SecretString) -> String {
        format!("PASSWORD {}", escape_literal(&scram::verifier(password, self.generated_password_iterations)))
    }

    /// Opens a session as `login`. The connection task ends when the client is dropped.
    #[instrument(skip_all, fields(host = %endpoint.host, port = endpoint.port, user = %login.username))]
    async fn connect(&self, endpoint: &Endpoint, login: &Credentials) -> Result<Session, BackendError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&endpoint.host)
            .port(endpoint.port)
            .user(login.username.as_str())
            .password(login.password.expose_secret())
            .application_name("keyturn")
            .connect_timeout(self.timeouts.connect)
            // Startup options override per-database and per-role settings: a database or
            // role the secret's writer owns cannot put its own objects ahead of the catalogs,
            // nor silence the warnings a rotation reads (client_min_messages = error would).
            .options(format!(
                "-c statement_timeout={} -c search_path=pg_catalog,pg_temp -c client_min_messages=warning",
                self.timeouts.statement.as_millis()
            ));
        if let Some(db) = &endpoint.dbname {
            config.dbname(db);
        }
        let connecting = async {
            match endpoint.tls {
                TlsMode::VerifyFull => {
                    config.ssl_mode(SslMode::Require);
                    let (client, connection) = config.connect(self.tls.clone()).await?;
                    Ok(Session::run(client, connection))
                }
                TlsMode::Disabled => {
                    // Without TLS the password must never be sent as it is: the stream
                    // refuses a cleartext request before the driver can answer it.
                    config.ssl_mode(SslMode::Disable);
                    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(|e| {
                        BackendError::Unreachable {
                            host: endpoint.host.clone(),
                            port: endpoint.port,
                            message: e.to_string(),
                        }
                    })?;
                    tcp.set_nodelay(true).ok();
                    let (client, connection) = config.connect_raw(NoCleartextPassword::new(tcp), NoTls).await?;
                    Ok(Session::run(client, connection))
                }
            }
        };
        // connect_timeout covers the TCP connect only; this bounds TLS and authentication too.
        let seconds = self.timeouts.connect.as_secs();
        match tokio::time::timeout(self.timeouts.connect, connecting).await {
            Ok(result) => result.map_err(|e: Connecting| match e {
                Connecting::Backend(e) => e,
                Connecting::Driver(e) => match classify(&e, endpoint, login, "login") {
                    // The driver's own connect timeout does not say how long it waited.
                    BackendError::Timeout { operation, .. } => BackendError::Timeout { operation, seconds },
                    other => other,
                },
            }),
            Err(_) => Err(BackendError::Timeout { operation: "login", seconds }),
        }
    }

    /// Runs one statement batch under the client-side deadline.
    async fn batch(
        &self,
        client: &Client,
        sql: &str,
        endpoint: &Endpoint,
        login: &Credentials,
        operation: &'static str,
    ) -> Result<(), BackendError> {
        let run = async { client.batch_execute(sql).await.map_err(|e| classify(&e, endpoint, login, operation)) };
        self.timeouts.bound(operation, run).await
    }
}

/// A session and the warnings its server sent. PostgreSQL answers some statements that did
/// nothing with a WARNING and success (from 16, a `REVOKE` of a membership another role
/// granted), so a caller that must know a change happened checks [`Session::warnings`].
struct Session {
    client: Client,
    warnings: Arc<Mutex<Vec<String>>>,
    /// Admin operations running on this session now ([`PostgresBackend::with_admin_session`]).
    in_flight: AtomicUsize,
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// How many unread warnings a session keeps.
const MAX_KEPT_WARNINGS: usize = 16;

impl Session {
    /// Drives `connection` in a task of its own, keeping the server's warnings (notices of
    /// severity WARNING: the text names roles, never a password) and dropping the rest.
    fn run<S, T>(client: Client, mut connection: tokio_postgres::Connection<S, T>) -> Session
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = warnings.clone();
        tokio::spawn(async move {
            // A notice reaches this task before the answer that follows it reaches the
            // client, so the warnings of a statement are here once it has returned.
            while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let AsyncMessage::Notice(notice) = message {
                    let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                    // A kept admin session may live for hours: its warnings are bounded.
                    // The parsed severity: `severity()` is translated by the server's lc_messages.
                    if notice.parsed_severity() == Some(Severity::Warning) && kept.len() < MAX_KEPT_WARNINGS {
                        kept.push(notice.message().to_owned());
                    }
                }
            }
        });
        Session { client, warnings, in_flight: AtomicUsize::new(0) }
    }

    /// The warnings received since the last call.
    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Counts one operation on a session for as long as it lives (also when its future is
/// dropped midway).
struct InFlight<'a>(&'a Session);

impl<'a> InFlight<'a> {
    fn start(session: &'a Session) -> Self {
        session.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(session)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A failure while connecting: the driver's, or one found before the driver ran.
enum Connecting {
    Driver(tokio_postgres::Error),
    Backend(BackendError),
}

impl From<tokio_postgres::Error> for Connecting {
    fn from(e: tokio_postgres::Error) -> Self {
        Connecting::Driver(e)
    }
}

impl From<BackendError> for Connecting {
    fn from(e: BackendError) -> Self {
        Connecting::Backend(e)
    }
}

/// Maps a driver error to what the caller can act on: a refused login moves rotation on
/// to the next candidate, anything else stops it.
fn classify(
    e: &tokio_postgres::Error,
    endpoint: &Endpoint,
    login: &Credentials,
    operation: &'static str,
) -> BackendError {
    if e.as_db_error().is_some_and(refused_by_hba) {
        return BackendError::ConnectionNotAllowed {
            host: endpoint.host.clone(),
            port: endpoint.port,
            username: login.username.to_string(),
            tls: endpoint.tls == TlsMode::VerifyFull,
        };
    }
    if let Some(code) = e.code() {
        if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return BackendError::LoginRefused { username: login.username.to_string() };
        }
    }
    let message = chain(e);
    let (host, port) = (endpoint.host.clone(), endpoint.port);
    if refused_cleartext(e) {
        return BackendError::CleartextRefused { host, port };
    }
    if message.starts_with("error performing TLS handshake") {
        BackendError::Tls { host, port, message }
    } else if message.starts_with("error connecting to server") || message.starts_with("error communicating") {
        BackendError::Unreachable { host, port, message }
    } else if message.starts_with("timeout waiting for server") {
        BackendError::Timeout { operation, seconds: 0 }
    } else {
        // Class 08 (connection), 40 (rollback), 53 (resources), 57 (operator) are transient.
        let retryable = e.code().is_some_and(|c| matches!(&c.code()[..2], "08" | "40" | "53" | "57"));
        BackendError::Database { operation, message, retryable }
    }
}

/// Whether pg_hba.conf refused the connection before any password was checked ("no
/// pg_hba.conf entry", RDS's answer to a connection without TLS under `rds.force_ssl`).
/// That is SQLSTATE 28000 raised by `ClientAuthentication`; the same code from elsewhere
/// (a role without LOGIN) is a refused login. The message is checked too, for servers
/// that do not report the routine; it is English unless `lc_messages` says otherwise.
fn refused_by_hba(e: &tokio_postgres::error::DbError) -> bool {
    *e.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        && (e.routine() == Some("ClientAuthentication") || e.message().contains("pg_hba.conf"))
}

/// Whether the connection failed because the server asked for a cleartext password.
fn refused_cleartext(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<CleartextRequested>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<CleartextRequested>()) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// `PASSWORD '<verifier>'`: the server stores the verifier as given and never sees the password.
fn password_clause(password: &SecretString) -> String {
    format!("PASSWORD {}", escape_literal(&scram_sha_256(password.expose_secret().as_bytes())))
}

fn ident(name: &Username) -> String {
    escape_identifier(name.as_str())
}

impl DatabaseBackend for PostgresBackend {
    fn serves(&self, engine: Engine) -> bool {
        engine.family() == Family::Postgres
    }

    fn check_username(&self, engine: Engine, username: &Username) -> Result<(), String> {
        let (len, max) = (username.as_str().len(), engine.max_username_len());
        match len > max {
            true => Err(format!("is {len} bytes, over the {max}-byte limit of {}", engine.as_str())),
            false => Ok(()),
        }
    }

    #[instrument(skip_all, fields(user = %login.username))]
    async fn verify(&self, endpoint: &Endpoint, login: &Credentials) -> Result<(), BackendError> {
        let client = self.connect(endpoint, login).await?;
        self.batch(&client, "SELECT 1", endpoint, login, "test query").await
    }

    #[instrument(skip_all, fields(user = %req.login.username))]
    async fn set_own_password(&self, endpoint: &Endpoint, req: SetOwnPassword<'_>) -> Result<(), BackendError> {
        let client = self.connect(endpoint, req.login).await?;
        let sql = format!("ALTER ROLE {} WITH {}", ident(&req.login.username), password_clause(req.new_password));
        self.batch(&client, &sql, endpoint, req.login, "ALTER ROLE").await
    }

    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username, template = %req.template))]
    async fn upsert_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpsertUser<'_>,
    ) -> Result<UpsertOutcome, BackendError> {
        let client = self.connect(endpoint, admin).await?;
        let err = |op| move |e: tokio_postgres::Error| classify(&e, endpoint, admin, op);
        let (user, password) = (ident(req.username), password_clause(req.password));
        if req.username == req.template {
            if req.create_only {
                return Err(BackendError::UserExists { username: req.username.to_string() });
            }
            let sql = format!("ALTER ROLE {user} WITH {password}");
            let run = async {
                match client.batch_execute(&sql).await {
                    Ok(()) => Ok(UpsertOutcome { created: false }),
                    Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                        Err(BackendError::NoSuchUser { username: req.username.to_string() })
                    }
                    Err(e) => Err(err("ALTER ROLE")(e)),
                }
            };
            return self.timeouts.bound("ALTER ROLE", run).await;
        }

        // The template and the clone as they are now, in one round trip.
        let read = async {
            client
                .query_opt(ROLES_QUERY, &[&req.template.as_str(), &req.username.as_str()])
                .await
                .map_err(err("reading the template role"))
        };
        let row = self
            .timeouts
            .bound("reading the template role", read)
            .await?
            .ok_or_else(|| BackendError::NoSuchUser { username: req.template.to_string() })?;
        let shape = RoleShape::read(&row).map_err(|message| BackendError::Database {
            operation: "reading the template role",
            message,
            retryable: false,
        })?;
        if shape.clone_exists && req.create_only {
            return Err(BackendError::UserExists { username: req.username.to_string() });
        }
        let statements = shape.statements(req.username, req.template, &password);
        // One explicit transaction, committed only when the server warned of nothing: from
        // PostgreSQL 16 a REVOKE of a membership another role granted only warns, and the
        // clone would keep what the template lost. This session is this call's own, so a
        // failure leaves nothing open behind it.
        let operation = "creating or updating the role";
        // Only what these statements bring counts (not, say, a warning sent at login).
        client.take_warnings();
        self.batch(&client, &format!("BEGIN;\n{}", statements.join(";\n")), endpoint, admin, operation).await?;
        let warnings = client.take_warnings();
        if !warnings.is_empty() {
            self.batch(&client, "ROLLBACK", endpoint, admin, operation).await?;
            return Err(BackendError::Database {
                operation,
                message: format!(
                    "the server warned \"{}\", so nothing was changed (a membership granted by another role \
                     can only be revoked by that role)",
                    warnings.join("\"; \"")
                ),
                retryable: false,
            });
        }
        self.batch(&client, "COMMIT", endpoint, admin, operation).await?;
        debug!(created = !shape.clone_exists, "role upserted");
        Ok(UpsertOutcome { created: !shape.clone_exists })
    }
}

impl DynamicUsers for PostgresBackend {
    /// One atomic batch: the role with its SCRAM verifier, `VALID UNTIL` (the server
    /// refuses the login after it even if nothing revokes it), its connection limit (which
    /// the user cannot change: `ALTER ROLE` on a role's limit needs CREATEROLE and, from
    /// PostgreSQL 16, ADMIN OPTION on it), its groups, and, with one group, sessions that
    /// act as the group.
    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn new_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: NewUser,
    ) -> Result<NewUserOutcome, BackendError> {
        let name = ident(&req.username);
        let mut sql = format!(
            "CREATE ROLE {name} WITH LOGIN CONNECTION LIMIT {} {} VALID UNTIL {}",
            req.connection_limit.max(1),
            self.generated_password_clause(&req.password),
            escape_literal(&valid_until(req.expires_at))
        );
        if !req.groups.is_empty() {
            let groups: Vec<String> = req.groups.iter().map(|g| escape_identifier(g)).collect();
            sql.push_str(&format!(" IN ROLE {}", groups.join(", ")));
        }
        if let [group] = req.groups.as_slice() {
            sql.push_str(&format!(";\nALTER ROLE {name} SET role = {}", escape_literal(group)));
        }
        self.with_admin_session(endpoint, admin, async |client| {
            self.batch(client, &sql, endpoint, admin, "creating the user").await
        })
        .await?;
        Ok(NewUserOutcome { server_expiry: true })
    }

    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn update_user(&self, endpoint: &Endpoint, admin: &Credentials, req: UpdateUser) -> Result<(), BackendError> {
        let mut clauses = Vec::new();
        if let Some(password) = &req.password {
            clauses.push(self.generated_password_clause(password));
        }
        if let Some(expires_at) = req.expires_at {
            clauses.push(format!("VALID UNTIL {}", escape_literal(&valid_until(expires_at))));
        }
        if clauses.is_empty() {
            return Ok(());
        }
        let sql = format!("ALTER ROLE {} WITH {}", ident(&req.username), clauses.join(" "));
        self.with_admin_session(endpoint, admin, async |client| {
            let run = async {
                match client.batch_execute(&sql).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                        Err(BackendError::NoSuchUser { username: req.username.to_string() })
                    }
                    Err(e) => Err(classify(&e, endpoint, admin, "updating the user")),
                }
            };
            self.timeouts.bound("updating the user", run).await
        })
        .await
    }

    /// NOLOGIN first (no new sessions), then its sessions ended, then in every other
    /// database where it owns something or holds default privileges (which `DROP OWNED`
    /// reaches only in the database it runs in, and which any user can make for itself in
    /// any database it may connect to), then here, each in one transaction: what it owns
    /// given to `reassign_to` (or dropped when that group is gone), its privileges revoked
    /// and, last, the role dropped. An admin that is not a superuser (RDS's master user)
    /// needs the privileges of the user and of the group for that, so it takes them for
    /// the transaction only ([`TakeOver`]). A user already gone is success, also when
    /// another deletion of the same user (a second reaper, a holder's revocation racing the
    /// reaper) drops it meanwhile.
    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn delete_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: DeleteUser,
    ) -> Result<DeleteOutcome, BackendError> {
        self.with_admin_session(endpoint, admin, async |client| {
            self.delete_user_on(client, endpoint, admin, &req).await
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
            .with_admin_session(endpoint, admin, async |client| {
                let run = async {
                    client
                        .query(
                            "SELECT rolname::text AS name FROM pg_catalog.pg_roles \
                             WHERE pg_catalog.starts_with(rolname::text, $1) ORDER BY rolname",
                            &[&req.prefix],
                        )
                        .await
                        .map_err(|e| classify(&e, endpoint, admin, "listing users"))
                };
                self.timeouts.bound("listing users", run).await
            })
            .await?;
        let mut users = Vec::new();
        for row in rows {
            let name: String = row.try_get("name").map_err(|e| BackendError::Database {
                operation: "listing users",
                message: format!("column name: {e}"),
                retryable: false,
            })?;
            users.push(Username::parse(&name).map_err(|message| BackendError::Database {
                operation: "listing users",
                message,
                retryable: false,
            })?);
        }
        Ok(users)
    }
}

impl PostgresBackend {
    /// [`DynamicUsers::delete_user`] on the admin session `client`.
    async fn delete_user_on(
        &self,
        client: &Session,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: &DeleteUser,
    ) -> Result<DeleteOutcome, BackendError> {
        let name = ident(&req.username);
        let err = |op| move |e: tokio_postgres::Error| classify(&e, endpoint, admin, op);
        let exists = || async {
            client
                .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&req.username.as_str()])
                .await
                .map(|row| row.is_some())
                .map_err(err("looking up the user"))
        };
        let run = async {
            let state = client
                .query_opt(DELETE_STATE_QUERY, &[&req.username.as_str(), &req.reassign_to.as_deref()])
                .await
                .map_err(err("looking up the user"))?;
            let Some(state) = state else {
                return Ok(DeleteOutcome { existed: false, sessions_ended: 0 });
            };
            let take_over =
                TakeOver::read(&state, &req.username, &admin.username, req.reassign_to.as_deref()).map_err(
                    |message| BackendError::Database { operation: "looking up the user", message, retryable: false },
                )?;
            // No BEGIN/COMMIT: a simple query of several statements is one implicit
            // transaction, rolled back whole when one fails. An explicit block would stay
            // open and aborted after a failure (the COMMIT is skipped), and the admin session
            // is kept: every later statement on it, other users' included, would fail until
            // the container is recycled.
            let deleted = async {
                client.batch_execute(&format!("ALTER ROLE {name} NOLOGIN")).await.map_err(err("ALTER ROLE NOLOGIN"))?;
                let ended = client
                    .query(
                        "SELECT pg_catalog.pg_terminate_backend(pid) AS ended FROM pg_catalog.pg_stat_activity \
                         WHERE usename = $1",
                        &[&req.username.as_str()],
                    )
                    .await
                    .map_err(err("ending the user's sessions"))?;
                let others = client
                    .query(OTHER_DATABASES_QUERY, &[&req.username.as_str()])
                    .await
                    .map_err(err("finding the user's objects in other databases"))?;
                for row in &others {
                    let db: String = row.try_get("datname").map_err(|e| BackendError::Database {
                        operation: "finding the user's objects in other databases",
                        message: format!("column datname: {e}"),
                        retryable: false,
                    })?;
                    let there = Endpoint { dbname: Some(db), ..endpoint.clone() };
                    let other = self.connect(&there, admin).await?;
                    let sql = take_over.statements(false).join(";\n");
                    self.batch(&other, &sql, &there, admin, "dropping the user's objects in another database").await?;
                }
                let sql = take_over.statements(true).join(";\n");
                client.batch_execute(&sql).await.map_err(err("dropping the user"))?;
                Ok(ended.iter().filter(|r| r.try_get::<_, bool>("ended").unwrap_or(false)).count() as u64)
            };
            match deleted.await {
                Ok(sessions_ended) => Ok(DeleteOutcome { existed: true, sessions_ended }),
                Err(e) => match exists().await {
                    Ok(false) => Ok(DeleteOutcome { existed: false, sessions_ended: 0 }),
                    _ => Err(e),
                },
            }
        };
        self.timeouts.bound("deleting the user", run).await
    }
}

/// The databases other than the session's where the role ($1) owns objects, holds
/// privileges or has default privileges: what blocks `DROP ROLE` after `DROP OWNED` here.
const OTHER_DATABASES_QUERY: &str = "\
    SELECT DISTINCT d.datname::text AS datname \
    FROM pg_catalog.pg_shdepend s JOIN pg_catalog.pg_database d ON d.oid = s.dbid \
    WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass \
      AND s.refobjid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = $1) \
      AND d.datname <> pg_catalog.current_database() \
    ORDER BY 1";

/// What [`PostgresBackend::delete_user`] needs to know first, for the user ($1) and the
/// group its objects go to ($2, may be NULL): no row when the user is gone.
const DELETE_STATE_QUERY: &str = "\
    SELECT pg_catalog.current_setting('server_version_num')::int4 AS version, \
           g.oid IS NOT NULL AS group_exists, \
           COALESCE(pg_catalog.pg_has_role(g.oid, 'USAGE') OR pg_catalog.pg_has_role(u.oid, g.oid, 'USAGE'), false) \
             AS group_reached \
    FROM pg_catalog.pg_roles u LEFT JOIN pg_catalog.pg_roles g ON g.rolname = $2 \
    WHERE u.rolname = $1";

/// How an admin that is not a superuser removes a user. `REASSIGN OWNED` and `DROP OWNED`
/// need the privileges of the user (and `REASSIGN`, of the group too): a superuser has
/// them, RDS's and Aurora's master user does not. So the admin grants itself the user (and
/// the group, when the user does not already pass the group's privileges on) inside the
/// transaction that drops the user, and revokes what it granted before it ends: nothing is
/// left on the admin, whether the transaction commits or rolls back. The admin may grant
/// them because it created both (PostgreSQL 16 gives a role's creator ADMIN OPTION on it,
/// but neither INHERIT nor SET, hence `WITH INHERIT TRUE` there; 15 lets any CREATEROLE
/// role grant any role that is not a superuser).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TakeOver {
    user: String,
    admin: String,
    /// The group that receives the user's objects, when it still exists.
    group: Option<String>,
    /// The admin grants itself the group for the transaction.
    grant_group: bool,
    /// PostgreSQL 16 or later: memberships carry INHERIT and SET options.
    membership_options: bool,
}

impl TakeOver {
    fn read(row: &tokio_postgres::Row, user: &Username, admin: &Username, group: Option<&str>) -> Result<Self, String> {
        let get = |column: &str| row.try_get::<_, bool>(column).map_err(|e| format!("column {column}: {e}"));
        let version: i32 = row.try_get("version").map_err(|e| format!("column version: {e}"))?;
        let group_exists = get("group_exists")?;
        Ok(Self {
            user: user.to_string(),
            admin: admin.to_string(),
            group: group.filter(|_| group_exists).map(str::to_owned),
            grant_group: group_exists && !get("group_reached")?,
            membership_options: version >= 160_000,
        })
    }

    /// One transaction's statements: the user's objects given to the group (or dropped),
    /// its privileges revoked, then the role dropped (`drop_role`) or, in another
    /// database, the admin's grant of it revoked.
    fn statements(&self, drop_role: bool) -> Vec<String> {
        let (user, admin) = (escape_identifier(&self.user), escape_identifier(&self.admin));
        let inherit = if self.membership_options { " WITH INHERIT TRUE" } else { "" };
        let mut statements = vec![format!("GRANT {user} TO {admin}{inherit}")];
        if let Some(group) = &self.group {
            let group = escape_identifier(group);
            if self.grant_group {
                statements.push(format!("GRANT {group} TO {admin}{inherit}"));
            }
            statements.push(format!("REASSIGN OWNED BY {user} TO {group}"));
        }
        statements.push(format!("DROP OWNED BY {user}"));
        if let (Some(group), true) = (&self.group, self.grant_group) {
            statements.push(format!("REVOKE {} FROM {admin}", escape_identifier(group)));
        }
        statements.push(match drop_role {
            // Dropping the role removes every membership in it, the admin's included.
            true => format!("DROP ROLE IF EXISTS {user}"),
            false => format!("REVOKE {user} FROM {admin}"),
        });
        statements
    }
}

/// A `VALID UNTIL` value: the time in UTC, to the second.
fn valid_until(at: std::time::SystemTime) -> String {
    format!("{}+00", utc_datetime(at))
}

/// The template role ($1) and the clone ($2): attributes, memberships with their admin
/// option (PostgreSQL 16 may list a membership once per grantor, hence `bool_or`).
const ROLES_QUERY: &str = "\
    SELECT t.rolsuper, t.rolinherit, t.rolcreaterole, t.rolcreatedb, t.rolreplication, t.rolbypassrls, \
           t.rolconnlimit, t.rolvaliduntil::text AS rolvaliduntil, \
           c.oid IS NOT NULL AS clone_exists, \
           COALESCE(c.rolsuper, false) AS clone_super, \
           COALESCE(c.rolreplication, false) AS clone_replication, \
           COALESCE(c.rolbypassrls, false) AS clone_bypassrls, \
           ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid \
                 WHERE m.member = t.oid GROUP BY r.rolname ORDER BY r.rolname) AS roles, \
           ARRAY(SELECT bool_or(m.admin_option) FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid \
                 WHERE m.member = t.oid GROUP BY r.rolname ORDER BY r.rolname) AS admin_options, \
           ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid \
                 WHERE m.member = c.oid GROUP BY r.rolname ORDER BY r.rolname) AS clone_roles, \
           ARRAY(SELECT bool_or(m.admin_option) FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles r ON r.oid = m.roleid \
                 WHERE m.member = c.oid GROUP BY r.rolname ORDER BY r.rolname) AS clone_admin_options \
    FROM pg_catalog.pg_roles t LEFT JOIN pg_catalog.pg_roles c ON c.rolname = $2 \
    WHERE t.rolname = $1";

/// What [`ROLES_QUERY`] found, read by column name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoleShape {
    superuser: bool,
    inherit: bool,
    createrole: bool,
    createdb: bool,
    replication: bool,
    bypassrls: bool,
    connection_limit: i32,
    valid_until: Option<String>,
    clone_exists: bool,
    clone_superuser: bool,
    clone_replication: bool,
    clone_bypassrls: bool,
    /// The template's memberships: role name and admin option.
    roles: Vec<(String, bool)>,
    /// The clone's memberships: role name and admin option.
    clone_roles: Vec<(String, bool)>,
}

impl RoleShape {
    fn read(row: &tokio_postgres::Row) -> Result<Self, String> {
        fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
            row: &'a tokio_postgres::Row,
            column: &str,
        ) -> Result<T, String> {
            row.try_get(column).map_err(|e| format!("column {column}: {e}"))
        }
        let pairs = |names: Vec<String>, options: Vec<bool>| -> Result<Vec<(String, bool)>, String> {
            match names.len() == options.len() {
                true => Ok(names.into_iter().zip(options).collect()),
                false => Err("memberships and admin options do not match".into()),
            }
        };
        Ok(Self {
            superuser: get(row, "rolsuper")?,
            inherit: get(row, "rolinherit")?,
            createrole: get(row, "rolcreaterole")?,
            createdb: get(row, "rolcreatedb")?,
            replication: get(row, "rolreplication")?,
            bypassrls: get(row, "rolbypassrls")?,
            connection_limit: get(row, "rolconnlimit")?,
            valid_until: get(row, "rolvaliduntil")?,
            clone_exists: get(row, "clone_exists")?,
            clone_superuser: get(row, "clone_super")?,
            clone_replication: get(row, "clone_replication")?,
            clone_bypassrls: get(row, "clone_bypassrls")?,
            roles: pairs(get(row, "roles")?, get(row, "admin_options")?)?,
            clone_roles: pairs(get(row, "clone_roles")?, get(row, "clone_admin_options")?)?,
        })
    }

    /// The statements that make `user` the template's equal: created or altered with the
    /// same attributes, the same memberships with the same admin options (what the
    /// template lost, the clone loses too), membership in the template, and sessions that
    /// act as the template.
    fn statements(&self, user: &Username, template: &Username, password: &str) -> Vec<String> {
        let name = ident(user);
        let flag = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        let mut attrs = vec![
            "LOGIN",
            flag(self.inherit, "INHERIT", "NOINHERIT"),
            flag(self.createrole, "CREATEROLE", "NOCREATEROLE"),
            flag(self.createdb, "CREATEDB", "NOCREATEDB"),
        ];
        // Only a superuser may set or clear these; they are written only when they must
        // change, so an admin without superuser rotates clones that have none of them.
        for (template_has, clone_has, yes, no) in [
            (self.superuser, self.clone_superuser, "SUPERUSER", "NOSUPERUSER"),
            (self.replication, self.clone_replication, "REPLICATION", "NOREPLICATION"),
            (self.bypassrls, self.clone_bypassrls, "BYPASSRLS", "NOBYPASSRLS"),
        ] {
            match (template_has, clone_has) {
                (true, _) => attrs.push(yes),
                (false, true) => attrs.push(no),
                (false, false) => {}
            }
        }
        let verb = if self.clone_exists { "ALTER" } else { "CREATE" };
        let mut statements = vec![format!(
            "{verb} ROLE {name} WITH {} CONNECTION LIMIT {} VALID UNTIL {} {password}",
            attrs.join(" "),
            self.connection_limit,
            escape_literal(self.valid_until.as_deref().unwrap_or("infinity"))
        )];
        statements.push(format!("GRANT {} TO {name}", ident(template)));
        for (role, admin_option) in &self.roles {
            let with_admin = if *admin_option { " WITH ADMIN OPTION" } else { "" };
            statements.push(format!("GRANT {} TO {name}{with_admin}", escape_identifier(role)));
        }
        for (role, clone_admin) in &self.clone_roles {
            if role == template.as_str() {
                continue;
            }
            match self.roles.iter().find(|(r, _)| r == role) {
                None => statements.push(format!("REVOKE {} FROM {name}", escape_identifier(role))),
                Some((_, false)) if *clone_admin => {
                    statements.push(format!("REVOKE ADMIN OPTION FOR {} FROM {name}", escape_identifier(role)))
                }
                Some(_) => {}
            }
        }
        // Sessions of the clone act as the original, so objects either creates are the original's.
        statements.push(format!("ALTER ROLE {name} SET role = {}", escape_literal(template.as_str())));
        statements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> RoleShape {
        RoleShape {
            superuser: false,
            inherit: true,
            createrole: false,
            createdb: false,
            replication: false,
            bypassrls: false,
            connection_limit: -1,
            valid_until: None,
            clone_exists: true,
            clone_superuser: false,
            clone_replication: false,
            clone_bypassrls: false,
            roles: vec![],
            clone_roles: vec![],
        }
    }

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn what_the_template_lost_the_clone_loses() {
        let mut s = shape();
        s.clone_superuser = true;
        s.clone_bypassrls = true;
        s.roles = vec![("readers".into(), false)];
        s.clone_roles = vec![("app".into(), false), ("readers".into(), true), ("writers".into(), false)];
        let sql = s.statements(&user("app_clone"), &user("app"), "PASSWORD 'v'").join(";\n");
        assert!(sql.contains("NOSUPERUSER") && sql.contains("NOBYPASSRLS") && !sql.contains("NOREPLICATION"), "{sql}");
        assert!(sql.contains("REVOKE ADMIN OPTION FOR \"readers\" FROM \"app_clone\""), "{sql}");
        assert!(sql.contains("REVOKE \"writers\" FROM \"app_clone\""), "{sql}");
        assert!(!sql.contains("REVOKE \"app\""), "membership in the template stays: {sql}");
    }

    fn take_over(group: Option<&str>, grant_group: bool, membership_options: bool) -> TakeOver {
        TakeOver {
            user: "kt_u\"1".into(),
            admin: "admin".into(),
            group: group.map(str::to_owned),
            grant_group,
            membership_options,
        }
    }

    #[test]
    fn an_admin_takes_the_user_for_the_transaction_only() {
        assert_eq!(
            take_over(Some("readers"), false, false).statements(true),
            [
                "GRANT \"kt_u\"\"1\" TO \"admin\"",
                "REASSIGN OWNED BY \"kt_u\"\"1\" TO \"readers\"",
                "DROP OWNED BY \"kt_u\"\"1\"",
                "DROP ROLE IF EXISTS \"kt_u\"\"1\"",
            ]
        );
        // In another database the role stays, so the admin's grant is revoked there.
        assert_eq!(
            take_over(None, false, false).statements(false).last().unwrap(),
            "REVOKE \"kt_u\"\"1\" FROM \"admin\""
        );
    }

    #[test]
    fn from_postgresql_16_the_grants_inherit_and_a_group_taken_is_given_back() {
        assert_eq!(
            take_over(Some("readers"), true, true).statements(true),
            [
                "GRANT \"kt_u\"\"1\" TO \"admin\" WITH INHERIT TRUE",
                "GRANT \"readers\" TO \"admin\" WITH INHERIT TRUE",
                "REASSIGN OWNED BY \"kt_u\"\"1\" TO \"readers\"",
                "DROP OWNED BY \"kt_u\"\"1\"",
                "REVOKE \"readers\" FROM \"admin\"",
                "DROP ROLE IF EXISTS \"kt_u\"\"1\"",
            ]
        );
    }

    #[test]
    fn without_a_group_what_the_user_owns_is_dropped() {
        let sql = take_over(None, false, true).statements(true).join(";\n");
        assert!(!sql.contains("REASSIGN") && sql.contains("DROP OWNED BY"), "{sql}");
    }

    #[test]
    fn valid_until_says_utc() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_989_906);
        assert_eq!(valid_until(at), "2026-11-29 22:05:06+00");
    }

    #[test]
    fn an_admin_without_superuser_never_touches_superuser_attributes() {
        let sql = shape().statements(&user("app_clone"), &user("app"), "PASSWORD 'v'").join(";\n");
        for attr in ["SUPERUSER", "REPLICATION", "BYPASSRLS"] {
            assert!(!sql.contains(attr), "{sql}");
        }
    }
}
