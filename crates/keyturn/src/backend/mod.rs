//! Credential backends: one small interface per credential kind, with a request and a
//! response type per operation. Rotation and leases orchestrate on top of these and hold
//! no engine-specific code.
//!
//! [`DatabaseBackend`] is the rotation interface (PostgreSQL in `postgres`, MySQL and
//! MariaDB in `mysql`, both chosen per secret by [`Databases`]): verify a login, change a
//! password, create or update a user like a template. [`DynamicUsers`] is the interface of
//! short-lived users, shaped like Vault's dbplugin v5: a user with an expiry, renewed or
//! re-keyed by one update, deleted with every access it had (succeeding when it is already
//! gone), listed by prefix; both engines implement it, and [`Databases`] dispatches it.

pub mod aws;
#[cfg(feature = "database")]
pub mod mysql;
#[cfg(feature = "database")]
pub mod postgres;
pub mod secret;
#[cfg(feature = "database")]
pub mod tls;

use std::future::Future;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

pub use secret::{AdminSecret, Credentials, DatabaseSecret, Endpoint, Engine, Family, TlsMode, Username};

/// Connect and statement timeouts of every database session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub statement: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(5), statement: Duration::from_secs(5) }
    }
}

impl Timeouts {
    /// How long the client waits for any one statement: the server's own limit plus a
    /// margin, so the server's error (which says more) normally comes first, and a server
    /// that stops answering still cannot hold a rotation past it.
    pub fn client_deadline(&self) -> Duration {
        self.statement + Duration::from_secs(1)
    }

    /// Runs one statement's future under [`Timeouts::client_deadline`].
    pub async fn bound<T>(
        &self,
        operation: &'static str,
        statement: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let deadline = self.client_deadline();
        match tokio::time::timeout(deadline, statement).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout { operation, seconds: deadline.as_secs() }),
        }
    }
}

/// Which cached admin session of [`DynamicUsers`]: a session is reused only for the very
/// credential that opened it. Keyed by endpoint and admin name alone, a writer of one admin
/// secret could copy another admin secret's host, port, database and username with any
/// password, and be served on the session a warm container opened with the real password.
#[cfg(feature = "database")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct AdminKey {
    /// Where and as whom: the endpoint (host lowercased, port, database, TLS) and the
    /// admin's name. A session opened with a newer password for the same place replaces
    /// the older one's.
    pub place: (String, u16, Option<String>, bool, String),
    /// SHA-256 over the place and the password: which credential opened the session. It
    /// stays in memory, like the password it is made from.
    pub credential: [u8; 32],
}

#[cfg(feature = "database")]
pub(crate) fn admin_key(endpoint: &Endpoint, admin: &Credentials) -> AdminKey {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    let place = (
        endpoint.host.to_ascii_lowercase(),
        endpoint.port,
        endpoint.dbname.clone(),
        endpoint.tls == TlsMode::VerifyFull,
        admin.username.to_string(),
    );
    let mut digest = Sha256::new();
    // Each part with its length first, so no two different credentials hash the same bytes.
    let dbname = place.2.as_deref().map_or(String::from("-"), |db| format!("+{db}"));
    let tls = if place.3 { "tls" } else { "plain" };
    let port = place.1.to_string();
    for part in
        [place.0.as_str(), port.as_str(), dbname.as_str(), tls, place.4.as_str(), admin.password.expose_secret()]
    {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    AdminKey { place, credential: digest.finalize().into() }
}

/// Change the logged-in user's own password (single-user rotation).
#[derive(Debug)]
pub struct SetOwnPassword<'a> {
    /// The credentials to log in with; their user gets the new password.
    pub login: &'a Credentials,
    pub new_password: &'a SecretString,
}

/// Create `username` if absent, shaped like `template` (memberships or grants, attributes,
/// TLS requirement), re-synchronise that shape if present, and set its password.
/// When `username` is `template` itself only the password is set.
#[derive(Debug)]
pub struct UpsertUser<'a> {
    pub username: &'a Username,
    pub template: &'a Username,
    pub password: &'a SecretString,
    /// Only create: an existing `username` is left untouched and reported as
    /// [`BackendError::UserExists`]. Set when nothing has proven that the caller owns an
    /// existing user of that name.
    pub create_only: bool,
}

/// What [`DatabaseBackend::upsert_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpsertOutcome {
    pub created: bool,
}

/// Dynamic credentials: create a user that expires (`NewUser`), change its password or
/// expiry (`UpdateUser`: renewal and rotation are one operation), remove every access it
/// has and then the user (`DeleteUser`, which succeeds when the user is already gone), and
/// list users by prefix for the reaper's orphan sweep (`ListUsers`). Shaped like Vault's
/// dbplugin v5: one owned request type per operation, expiry as a field.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    /// Group roles the user joins; with exactly one, its sessions act as that role, so
    /// whatever it creates belongs to the group and never blocks its deletion.
    pub groups: Vec<String>,
    pub password: SecretString,
    /// When the server itself stops accepting the login (PostgreSQL `VALID UNTIL`).
    pub expires_at: SystemTime,
    /// The most sessions the user may hold at once (PostgreSQL `CONNECTION LIMIT`, MySQL
    /// and MariaDB `MAX_USER_CONNECTIONS`): a user without one could take every connection
    /// of the server, the admin's that revoke it included. At least 1.
    pub connection_limit: u32,
}

/// Change a dynamic user's password, expiry or both.
#[derive(Debug, Clone)]
pub struct UpdateUser {
    pub username: Username,
    pub password: Option<SecretString>,
    pub expires_at: Option<SystemTime>,
}

/// Remove a user: no new logins, its sessions ended, what it owns given to `reassign_to`
/// (or dropped), its privileges revoked, then the user dropped. Succeeds when the user
/// does not exist.
#[derive(Debug, Clone)]
pub struct DeleteUser {
    pub username: Username,
    pub reassign_to: Option<String>,
}

/// Users whose name starts with `prefix` (taken literally: no pattern characters).
#[derive(Debug, Clone)]
pub struct ListUsers {
    pub prefix: String,
}

/// What [`DynamicUsers::new_user`] set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewUserOutcome {
    /// The database itself refuses the login after `expires_at` (PostgreSQL's
    /// `VALID UNTIL`, a MariaDB event that drops the user); `false` when only keyturn's
    /// reaper enforces expiry.
    pub server_expiry: bool,
}

/// What [`DynamicUsers::delete_user`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// The user existed (and is now gone).
    pub existed: bool,
    /// Sessions that were open and were ended.
    pub sessions_ended: u64,
}

/// A database engine's short-lived users (see [`NewUser`]); all as an admin.
pub trait DynamicUsers: Send + Sync {
    fn new_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: NewUser,
    ) -> impl Future<Output = Result<NewUserOutcome, BackendError>> + Send;

    fn update_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpdateUser,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    fn delete_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: DeleteUser,
    ) -> impl Future<Output = Result<DeleteOutcome, BackendError>> + Send;

    fn list_users(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: ListUsers,
    ) -> impl Future<Output = Result<Vec<Username>, BackendError>> + Send;
}

/// A database engine's user management.
pub trait DatabaseBackend: Send + Sync {
    /// Whether this backend handles `engine`.
    fn serves(&self, engine: Engine) -> bool;

    /// Whether `engine` accepts `username` (length, characters), before anything changes;
    /// the error says what is wrong.
    fn check_username(&self, engine: Engine, username: &Username) -> Result<(), String>;

    /// Logs in and runs a trivial query. `Err(LoginRefused)` when the server refuses the
    /// credentials; any other error means the answer is unknown.
    fn verify(&self, endpoint: &Endpoint, login: &Credentials)
        -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Logs in as `req.login` and changes that user's own password.
    fn set_own_password(
        &self,
        endpoint: &Endpoint,
        req: SetOwnPassword<'_>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Logs in as `admin` and creates or updates a user (see [`UpsertUser`]).
    fn upsert_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpsertUser<'_>,
    ) -> impl Future<Output = Result<UpsertOutcome, BackendError>> + Send;
}

/// A backend failure. Messages name the user or host concerned, never a password.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("the server refused the login of {username:?}")]
    LoginRefused { username: String },
    #[error("cannot connect to {host}:{port}: {message}")]
    Unreachable { host: String, port: u16, message: String },
    #[error("TLS with {host}:{port} failed: {message}")]
    Tls { host: String, port: u16, message: String },
    #[error("{operation} timed out after {seconds} s")]
    Timeout { operation: &'static str, seconds: u64 },
    #[error("user {username:?} does not exist")]
    NoSuchUser { username: String },
    #[error("user {username:?} already exists")]
    UserExists { username: String },
    #[error(
        "the server at {host}:{port} asked for the password in cleartext over a connection without TLS; \
         keyturn does not send it (use TLS)"
    )]
    CleartextRefused { host: String, port: u16 },
    /// The server's host-based access rules refuse this connection before any password is
    /// checked (PostgreSQL: SQLSTATE 28000 "no pg_hba.conf entry ..."), so trying other
    /// passwords is pointless. RDS for PostgreSQL 15 and later answers so to any connection
    /// without TLS (`rds.force_ssl = 1`).
    #[error(
        "the server at {host}:{port} does not accept user {username:?} on a connection {} (by its \
         pg_hba.conf): {}",
        if *.tls { "over TLS" } else { "without TLS" },
        if *.tls {
            "it does not allow this host or user"
        } else {
            "it requires TLS or does not allow this host or user; the secret says \"ssl\": false, and RDS for \
             PostgreSQL 15 and later requires TLS (rds.force_ssl)"
        }
    )]
    ConnectionNotAllowed { host: String, port: u16, username: String, tls: bool },
    #[error("{operation} failed: {message}")]
    Database { operation: &'static str, message: String, retryable: bool },
    #[error("engine {0} is not handled by this function")]
    UnsupportedEngine(&'static str),
}

impl BackendError {
    /// Whether trying again unchanged may succeed (unreachable server, timeout, a
    /// server-side transient error). Refused logins and TLS failures are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Unreachable { .. } | BackendError::Timeout { .. } => true,
            BackendError::Database { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// A short, stable name for the kind of failure, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::LoginRefused { .. } => "LoginRefused",
            BackendError::Unreachable { .. } => "Unreachable",
            BackendError::Tls { .. } => "Tls",
            BackendError::Timeout { .. } => "Timeout",
            BackendError::NoSuchUser { .. } => "NoSuchUser",
            BackendError::UserExists { .. } => "UserExists",
            BackendError::CleartextRefused { .. } => "CleartextRefused",
            BackendError::ConnectionNotAllowed { .. } => "ConnectionNotAllowed",
            BackendError::Database { .. } => "Database",
            BackendError::UnsupportedEngine(_) => "UnsupportedEngine",
        }
    }
}

/// Every database engine rotate-database serves, chosen per secret by its `engine` key.
#[cfg(feature = "database")]
#[derive(Clone)]
pub struct Databases {
    pub postgres: postgres::PostgresBackend,
    pub mysql: mysql::MysqlBackend,
}

#[cfg(feature = "database")]
impl Databases {
    /// Both engines' backends, trusting the system's roots, Amazon RDS's CA bundle and
    /// `extra_ca_files`: the one place a function sets up database TLS.
    pub fn new(extra_ca_files: &[std::path::PathBuf], timeouts: Timeouts) -> Result<Self, tls::TlsSetupError> {
        Ok(Self {
            postgres: postgres::PostgresBackend::new(tls::client_config(extra_ca_files)?, timeouts),
            mysql: mysql::MysqlBackend::new(extra_ca_files, timeouts)?,
        })
    }
}

/// Calls the same method on the backend of the engine's family.
#[cfg(feature = "database")]
macro_rules! dispatch {
    ($self:ident, $engine:expr, $backend:ident => $call:expr) => {
        match $engine.family() {
            Family::Postgres => {
                let $backend = &$self.postgres;
                $call
            }
            Family::Mysql => {
                let $backend = &$self.mysql;
                $call
            }
        }
    };
}

#[cfg(feature = "database")]
impl DatabaseBackend for Databases {
    // Each call is boxed where the engine is picked at run time: the drivers' futures are
    // deep, and nested unboxed in the services and handlers above, their layout runs past
    // the compiler's default recursion limit. One allocation per call is nothing beside
    // its round trip.
    fn serves(&self, _engine: Engine) -> bool {
        true
    }

    fn check_username(&self, engine: Engine, username: &Username) -> Result<(), String> {
        dispatch!(self, engine, b => b.check_username(engine, username))
    }

    fn verify(
        &self,
        endpoint: &Endpoint,
        login: &Credentials,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.verify(endpoint, login).await) })
    }

    fn set_own_password(
        &self,
        endpoint: &Endpoint,
        req: SetOwnPassword<'_>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.set_own_password(endpoint, req).await) })
    }

    fn upsert_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpsertUser<'_>,
    ) -> impl Future<Output = Result<UpsertOutcome, BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.upsert_user(endpoint, admin, req).await) })
    }
}

#[cfg(feature = "database")]
impl DynamicUsers for Databases {
    // Each call is boxed where the engine is picked at run time: the drivers' futures are
    // deep, and nested unboxed in the services and handlers above, their layout runs past
    // the compiler's default recursion limit. One allocation per call is nothing beside
    // its round trip.
    fn new_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: NewUser,
    ) -> impl Future<Output = Result<NewUserOutcome, BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.new_user(endpoint, admin, req).await) })
    }

    fn update_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpdateUser,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.update_user(endpoint, admin, req).await) })
    }

    fn delete_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: DeleteUser,
    ) -> impl Future<Output = Result<DeleteOutcome, BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.delete_user(endpoint, admin, req).await) })
    }

    fn list_users(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: ListUsers,
    ) -> impl Future<Output = Result<Vec<Username>, BackendError>> + Send {
        Box::pin(async move { dispatch!(self, endpoint.engine, b => b.list_users(endpoint, admin, req).await) })
    }
}

#[cfg(all(test, feature = "database"))]
mod tests {
    use super::*;

    #[test]
    fn an_admin_session_is_keyed_by_the_whole_credential() {
        let endpoint = Endpoint {
            engine: Engine::Postgres,
            host: "DB".into(),
            port: 5432,
            dbname: None,
            tls: TlsMode::VerifyFull,
        };
        let login = |password: &str| Credentials {
            username: Username::parse("admin").unwrap(),
            password: SecretString::from(password.to_owned()),
        };
        let (real, forged) = (admin_key(&endpoint, &login("real")), admin_key(&endpoint, &login("forged")));
        assert!(real.place == forged.place && real.credential != forged.credential, "same admin, another password");
        assert!(real == admin_key(&Endpoint { host: "db".into(), ..endpoint.clone() }, &login("real")));
        let other_db = Endpoint { dbname: Some("postgres".into()), ..endpoint.clone() };
        assert!(admin_key(&other_db, &login("real")).credential != real.credential);
    }
}
