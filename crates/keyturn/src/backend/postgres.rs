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

use std::sync::Arc;

use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::password::scram_sha_256;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, instrument};

use super::{
    BackendError, Credentials, DatabaseBackend, DeleteUser, Endpoint, Engine, Family, SetOwnPassword, Timeouts,
    TlsMode, UpsertOutcome, UpsertUser, Username,
};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_USERNAME_BYTES: usize = 63;

/// The PostgreSQL backend: TLS configuration and timeouts, built once per container.
#[derive(Clone)]
pub struct PostgresBackend {
    tls: MakeRustlsConnect,
    timeouts: Timeouts,
}

impl PostgresBackend {
    pub fn new(tls: Arc<rustls::ClientConfig>, timeouts: Timeouts) -> Self {
        Self { tls: MakeRustlsConnect::new((*tls).clone()), timeouts }
    }

    /// Opens a session as `login`. The connection task ends when the client is dropped.
    #[instrument(skip_all, fields(host = %endpoint.host, port = endpoint.port, user = %login.username))]
    async fn connect(&self, endpoint: &Endpoint, login: &Credentials) -> Result<Client, BackendError> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&endpoint.host)
            .port(endpoint.port)
            .user(login.username.as_str())
            .password(login.password.expose_secret())
            .application_name("keyturn")
            .connect_timeout(self.timeouts.connect)
            .options(format!("-c statement_timeout={}", self.timeouts.statement.as_millis()));
        if let Some(db) = &endpoint.dbname {
            config.dbname(db);
        }
        let connecting = async {
            match endpoint.tls {
                TlsMode::VerifyFull => {
                    config.ssl_mode(SslMode::Require);
                    let (client, connection) = config.connect(self.tls.clone()).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
                TlsMode::Disabled => {
                    config.ssl_mode(SslMode::Disable);
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
            }
        };
        // connect_timeout covers the TCP connect only; this bounds TLS and authentication too.
        match tokio::time::timeout(self.timeouts.connect, connecting).await {
            Ok(result) => result.map_err(|e| match classify(&e, endpoint, login, "login") {
                // The driver's own connect timeout does not say how long it waited.
                BackendError::Timeout { operation, .. } => {
                    BackendError::Timeout { operation, seconds: self.timeouts.connect.as_secs() }
                }
                other => other,
            }),
            Err(_) => Err(BackendError::Timeout { operation: "login", seconds: self.timeouts.connect.as_secs() }),
        }
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
    if let Some(code) = e.code() {
        if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return BackendError::LoginRefused { username: login.username.to_string() };
        }
    }
    let message = chain(e);
    let (host, port) = (endpoint.host.clone(), endpoint.port);
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
        let len = username.as_str().len();
        match len > MAX_USERNAME_BYTES {
            true => Err(format!("is {len} bytes, over the {MAX_USERNAME_BYTES}-byte limit of {}", engine.as_str())),
            false => Ok(()),
        }
    }

    #[instrument(skip_all, fields(user = %login.username))]
    async fn verify(&self, endpoint: &Endpoint, login: &Credentials) -> Result<(), BackendError> {
        let client = self.connect(endpoint, login).await?;
        client.simple_query("SELECT 1").await.map_err(|e| classify(&e, endpoint, login, "test query"))?;
        Ok(())
    }

    #[instrument(skip_all, fields(user = %req.login.username))]
    async fn set_own_password(&self, endpoint: &Endpoint, req: SetOwnPassword<'_>) -> Result<(), BackendError> {
        let client = self.connect(endpoint, req.login).await?;
        let sql = format!("ALTER ROLE {} WITH {}", ident(&req.login.username), password_clause(req.new_password));
        client.batch_execute(&sql).await.map_err(|e| classify(&e, endpoint, req.login, "ALTER ROLE"))?;
        Ok(())
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
            let sql = format!("ALTER ROLE {user} WITH {password}");
            return match client.batch_execute(&sql).await {
                Ok(()) => Ok(UpsertOutcome { created: false }),
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_OBJECT) => {
                    Err(BackendError::NoSuchUser { username: req.username.to_string() })
                }
                Err(e) => Err(err("ALTER ROLE")(e)),
            };
        }

        // Everything about the template, and whether the clone exists, in one round trip.
        let template = client
            .query_opt(
                "SELECT t.rolsuper, t.rolinherit, t.rolcreaterole, t.rolcreatedb, t.rolreplication, t.rolbypassrls, \
                 t.rolconnlimit, t.rolvaliduntil::text, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2), \
                 ARRAY(SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
                       WHERE m.member = t.oid ORDER BY r.rolname), \
                 ARRAY(SELECT m.admin_option FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
                       WHERE m.member = t.oid ORDER BY r.rolname), \
                 ARRAY(SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
                       JOIN pg_roles c ON c.oid = m.member WHERE c.rolname = $2) \
                 FROM pg_roles t WHERE t.rolname = $1",
                &[&req.template.as_str(), &req.username.as_str()],
            )
            .await
            .map_err(err("reading the template role"))?
            .ok_or_else(|| BackendError::NoSuchUser { username: req.template.to_string() })?;
        let exists: bool = template.get(8);

        // Attributes: the superuser-only ones are granted when the template has them and
        // never revoked (revoking needs superuser even when the clone lacks them).
        let flag = |i: usize, yes: &'static str, no: &'static str| if template.get::<_, bool>(i) { yes } else { no };
        let mut attrs = vec!["LOGIN", flag(1, "INHERIT", "NOINHERIT"), flag(2, "CREATEROLE", "NOCREATEROLE")];
        attrs.push(flag(3, "CREATEDB", "NOCREATEDB"));
        for (i, name) in [(0, "SUPERUSER"), (4, "REPLICATION"), (5, "BYPASSRLS")] {
            if template.get::<_, bool>(i) {
                attrs.push(name);
            }
        }
        let limit: i32 = template.get(6);
        let valid_until: Option<String> = template.get(7);
        let verb = if exists { "ALTER" } else { "CREATE" };
        let mut statements = vec![format!(
            "{verb} ROLE {user} WITH {} CONNECTION LIMIT {limit} VALID UNTIL {} {password}",
            attrs.join(" "),
            escape_literal(valid_until.as_deref().unwrap_or("infinity"))
        )];
        statements.push(format!("GRANT {} TO {user}", ident(req.template)));
        let (roles, admin_options): (Vec<String>, Vec<bool>) = (template.get(9), template.get(10));
        for (role, admin_option) in roles.iter().zip(admin_options) {
            let with_admin = if admin_option { " WITH ADMIN OPTION" } else { "" };
            statements.push(format!("GRANT {} TO {user}{with_admin}", escape_identifier(role)));
        }
        // Memberships the original no longer has are taken from the clone too.
        let clone_roles: Vec<String> = template.get(11);
        for role in clone_roles.iter().filter(|r| !roles.contains(r) && r.as_str() != req.template.as_str()) {
            statements.push(format!("REVOKE {} FROM {user}", escape_identifier(role)));
        }
        // Sessions of the clone act as the original, so objects either creates are the original's.
        statements.push(format!("ALTER ROLE {user} SET role = {}", escape_literal(req.template.as_str())));
        // One simple-query message runs as one implicit transaction: all of it or none.
        client.batch_execute(&statements.join(";\n")).await.map_err(err("creating or updating the role"))?;
        debug!(created = !exists, "role upserted");
        Ok(UpsertOutcome { created: !exists })
    }

    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn delete_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: DeleteUser<'_>,
    ) -> Result<(), BackendError> {
        let client = self.connect(endpoint, admin).await?;
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", ident(req.username)))
            .await
            .map_err(|e| classify(&e, endpoint, admin, "DROP ROLE"))?;
        Ok(())
    }
}
