//! The database admins of the roles' admin secrets: each secret read from Secrets Manager
//! once, checked, and kept; read again when the database refuses the login (the secret may
//! just have been rotated, or corrected). The backends keep the admin sessions themselves.
//!
//! An admin secret names its endpoint (`engine`, `host`, ...), or is the one RDS manages
//! for an instance's or cluster's master user (`username` and `password` only): then its
//! endpoint is asked of RDS as rotation asks it
//! ([`crate::rotation::database::rds_managed_endpoint`]), kept with the admin and asked
//! again with it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use super::LeaseError;
use crate::backend::{BackendError, Credentials, DatabaseSecret, Endpoint};
use crate::rotation::database::{rds_managed_endpoint, RdsLookup};
use crate::rotation::store::{SecretStore, Selector, AWSCURRENT};

/// An admin secret, read and checked.
#[derive(Debug)]
pub struct AdminLogin {
    pub endpoint: Endpoint,
    pub credentials: Credentials,
}

/// The admin secrets read so far, by ARN.
pub struct Admins<M, R> {
    secrets: M,
    rds: R,
    cache: Mutex<HashMap<String, Arc<AdminLogin>>>,
}

impl<M: SecretStore, R: RdsLookup> Admins<M, R> {
    pub fn new(secrets: M, rds: R) -> Self {
        Self { secrets, rds, cache: Mutex::default() }
    }

    /// Where the admin secrets are read from.
    pub fn secrets(&self) -> &M {
        &self.secrets
    }

    /// Runs `op` as the admin of `admin_secret` (see [`Self::as_admin_raw`]); a database
    /// failure as the API reports it.
    pub async fn as_admin<T, F, Fut>(&self, admin_secret: &str, role: &str, op: F) -> Result<T, LeaseError>
    where
        F: Fn(Arc<AdminLogin>) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        self.as_admin_raw(admin_secret, role, op).await?.map_err(|e| backend_error(e, role))
    }

    /// Runs `op` as the admin of `admin_secret`; when the database refuses the admin's
    /// login, or its access rules refuse the connection, reads the secret again (it may just
    /// have been rotated, or corrected: `"ssl": true` for a server that requires TLS) and
    /// tries once more. The outer error is the secret's, the inner the database's.
    pub async fn as_admin_raw<T, F, Fut>(
        &self,
        admin_secret: &str,
        role: &str,
        op: F,
    ) -> Result<Result<T, BackendError>, LeaseError>
    where
        F: Fn(Arc<AdminLogin>) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let admin = self.login(admin_secret, role, false).await?;
        match op(admin).await {
            Err(BackendError::LoginRefused { .. } | BackendError::ConnectionNotAllowed { .. }) => {
                let admin = self.login(admin_secret, role, true).await?;
                Ok(op(admin).await)
            }
            other => Ok(other),
        }
    }

    /// The admin secret `arn` of role `role`, from the cache unless `reload`.
    pub async fn login(&self, arn: &str, role: &str, reload: bool) -> Result<Arc<AdminLogin>, LeaseError> {
        let cached = || self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(arn).cloned();
        if !reload {
            if let Some(admin) = cached() {
                return Ok(admin);
            }
        }
        let fail = |problem: String| LeaseError::Internal(format!("role {role:?}'s admin secret {arn}: {problem}"));
        let value = self.secrets.get(arn, Selector::Stage(AWSCURRENT)).await.map_err(|e| {
            if e.retryable {
                LeaseError::Unavailable(format!("role {role:?}'s admin secret {arn}: {e}"))
            } else {
                fail(e.to_string())
            }
        })?;
        let secret = DatabaseSecret::parse_admin(
            &value.ok_or_else(|| fail("it does not exist or has no AWSCURRENT value".into()))?,
        )
        .map_err(fail)?;
        // A secret that names its host is used as written, as rotation uses it: its writer
        // already decides where the admin logs in. One without is RDS's (which writes only
        // the credentials): its endpoint is RDS's answer, never the secret's.
        let (host, port, engine) = match secret.host.filter(|h| !h.is_empty()) {
            Some(host) => {
                let engine = secret.engine.ok_or_else(|| fail("missing key \"engine\"".into()))?;
                (host, secret.port.unwrap_or(engine.default_port()), engine)
            }
            None => rds_managed_endpoint(&self.secrets, &self.rds, arn).await.map_err(fail)?,
        };
        let endpoint = Endpoint {
            engine,
            host,
            port,
            dbname: secret.dbname.or_else(|| engine.default_dbname().map(str::to_owned)),
            tls: secret.tls,
        };
        let admin = Arc::new(AdminLogin { endpoint, credentials: secret.credentials });
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(arn.to_owned(), admin.clone());
        Ok(admin)
    }
}

/// A database failure as the API reports it: transient ones are worth a retry (503).
pub fn backend_error(e: BackendError, role: &str) -> LeaseError {
    if e.is_retryable() || matches!(e, BackendError::LoginRefused { .. }) {
        LeaseError::Unavailable(format!("the database of role {role:?}: {e}"))
    } else {
        LeaseError::Internal(format!("the database of role {role:?}: {e}"))
    }
}
