//! The `rds-iam-token` kind: an RDS IAM authentication token per lease, signed by the
//! issuer with its own credentials (no network call), the password of an existing database
//! user for 15 minutes, no more, no less. Nothing to revoke or extend: it expires by itself.
//!
//! ```toml
//! [[role]]
//! name = "app-db"
//! kind = "rds-iam-token"
//! engine = "postgres"
//! host = "app.cluster-abc.us-east-1.rds.amazonaws.com"
//! port = 5432
//! region = "us-east-1"
//! db_user = "app_iam"
//! resource_id = "cluster-ABCDEFGHIJKLMNOPQRSTUVWXYZ"   # optional: for LeaseRdsDbUserArns
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::super::field::{self, err, RolesError, DB_NAME_MAX};
use super::Field;
use crate::backend::Engine;

pub const NAME: &str = "rds-iam-token";
pub const KEYS: &[&str] = &["engine", "host", "port", "region", "db_user", "resource_id"];
/// What the token is signed for, and the most RDS accepts: AWS's fixed 15 minutes.
pub const TOKEN_LIFE: Duration = Duration::from_secs(900);
pub const MIN_TTL: Duration = TOKEN_LIFE;
pub const FIXED_TTL: Option<Duration> = Some(TOKEN_LIFE);
pub const REVOCABLE: bool = false;

/// An RDS token role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The database's engine (RDS's names: `postgres`, `aurora-postgresql`, `mysql`,
    /// `aurora-mysql`, `mariadb`), which tells clients how to connect.
    pub engine: Engine,
    /// The DB instance's or cluster's endpoint (the token is valid for this host only).
    pub host: String,
    pub port: u16,
    /// The region the token is signed for: the database's.
    pub region: String,
    /// The database user the token logs in as (granted `rds_iam` or using
    /// `AWSAuthenticationPlugin`).
    pub db_user: String,
    /// The database's resource id (an instance's `DbiResourceId`, `db-...`; a cluster's
    /// `DbClusterResourceId`, `cluster-...`; a proxy's, `prx-...`), which `rds-db:connect`
    /// resources name instead of the host. The issuer does not need it (it signs for the
    /// host); the template parameter `LeaseRdsDbUserArns` is derived from it
    /// ([`crate::lease::parameters`]).
    pub resource_id: Option<String>,
}

/// What an RDS token lease records: the database user is its `username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub host: String,
    pub port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    engine: Option<String>,
    host: Option<String>,
    port: Option<i64>,
    region: Option<String>,
    db_user: Option<String>,
    resource_id: Option<String>,
}

pub fn parse(name: &str, table: toml::Table) -> Result<Role, RolesError> {
    let raw: Raw = field::read(name, table)?;
    let role = Some(name);
    let engine = raw.engine.as_deref().ok_or_else(|| err(role, "engine", "is required (postgres, mysql, ...)"))?;
    let engine = Engine::parse(engine).ok_or_else(|| {
        err(
            role,
            "engine",
            format!("{engine:?} is not an RDS engine (postgres, aurora-postgresql, mysql, aurora-mysql, mariadb)"),
        )
    })?;
    let host = raw.host.ok_or_else(|| err(role, "host", "is required"))?;
    // A DNS name or an address: the token is a URL, and a host is all this part may hold.
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-']);
    if !host_ok {
        return Err(err(role, "host", format!("{host:?} is not a host name")));
    }
    let port = match raw.port {
        None => return Err(err(role, "port", "is required")),
        Some(p) => {
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| err(role, "port", format!("{p} is not a port")))?
        }
    };
    let region = raw.region.ok_or_else(|| err(role, "region", "is required"))?;
    if region.is_empty()
        || region.len() > 32
        || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(role, "region", format!("{region:?} is not an AWS region")));
    }
    let db_user = raw.db_user.ok_or_else(|| err(role, "db_user", "is required"))?;
    // The generator puts the name in the URL unencoded: only characters that need no
    // encoding get through, so the name cannot add query parameters to the token.
    if db_user.is_empty()
        || db_user.len() > DB_NAME_MAX
        || !db_user.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(err(
            role,
            "db_user",
            format!("{db_user:?} is not a database user name keyturn signs for (1 to {DB_NAME_MAX} letters, digits, _ . or -)"),
        ));
    }
    let resource_id = raw.resource_id;
    if let Some(id) = &resource_id {
        if !is_resource_id(id) {
            return Err(err(
                role,
                "resource_id",
                format!(
                    "{id:?} is not an RDS resource id (db-, cluster- or prx- then letters and digits, such as \
                     the DbiResourceId or DbClusterResourceId RDS shows)"
                ),
            ));
        }
    }
    Ok(Role { engine, host, port, region, db_user, resource_id })
}

/// An instance's, cluster's or proxy's resource id: a known prefix, then letters and digits
/// (no wildcard: the rds-db:connect resource it goes into names one database).
fn is_resource_id(id: &str) -> bool {
    ["db-", "cluster-", "prx-"].iter().any(|prefix| {
        id.strip_prefix(prefix)
            .is_some_and(|rest| (1..=64).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
    })
}

pub fn check_ttl(ttl: Duration, text: &str) -> Result<(), String> {
    if ttl != TOKEN_LIFE {
        return Err(format!("{text:?} is not 15m: an RDS IAM token is valid for 15 minutes, no more, no less"));
    }
    Ok(())
}

/// Stored as `host` and `port`.
pub fn fields(c: &Credential) -> Vec<(&'static str, Field)> {
    vec![("host", Field::S(c.host.clone())), ("port", Field::N(u64::from(c.port)))]
}

pub fn from_fields<F: super::Fields>(f: &F) -> Result<Credential, F::Error> {
    Ok(Credential { host: f.s("host")?, port: f.u16("port")? })
}

#[cfg(feature = "lease")]
pub use io::*;

#[cfg(feature = "lease")]
mod io {
    use secrecy::SecretString;

    pub use super::super::io::self_expiring::{delete, renew, sweep};
    use super::super::io::{aws_error, Io, IssueRequest, Made, Ports, Prepared};
    use super::{Credential, Role};
    use crate::backend::aws::{AwsCredentials, RdsToken};
    use crate::backend::Engine;
    use crate::contract::{IssuedCredential, RdsTokenLogin};
    use crate::lease::{Lease, LeaseError};

    /// The token (the password of the lease's `username`) and where it logs in.
    #[derive(Debug)]
    pub struct Secret {
        pub token: SecretString,
        pub engine: Engine,
        pub host: String,
        pub port: u16,
        pub region: String,
    }

    /// The token as the password of the lease's username, over TLS (RDS takes an IAM token
    /// over TLS only).
    pub fn answer(secret: &Secret, lease: &Lease) -> IssuedCredential {
        IssuedCredential::RdsToken(RdsTokenLogin {
            engine: secret.engine.as_str().into(),
            host: secret.host.clone(),
            port: secret.port,
            region: secret.region.clone(),
            tls: true,
            username: lease.username.clone(),
            password: secret.token.clone(),
        })
    }

    pub async fn prepare<P: Ports>(_: &Io<P>, role: &Role, _: &IssueRequest<'_>) -> Result<Prepared, LeaseError> {
        Ok(Prepared {
            username: role.db_user.clone(),
            credential: super::super::Credential::RdsIamToken(Credential { host: role.host.clone(), port: role.port }),
            server_expiry: true,
        })
    }

    pub async fn make<P: Ports>(
        io: &Io<P>,
        role: &Role,
        req: &IssueRequest<'_>,
        _: &Lease,
    ) -> Result<Made, LeaseError> {
        let request = RdsToken {
            host: role.host.clone(),
            port: role.port,
            region: role.region.clone(),
            db_user: role.db_user.clone(),
        };
        let token = io.aws.rds_token(request).await.map_err(|e| aws_error(e, req.role))?;
        Ok(Made {
            secret: super::super::Secret::RdsIamToken(Secret {
                token,
                engine: role.engine,
                host: role.host.clone(),
                port: role.port,
                region: role.region.clone(),
            }),
            server_expiry: None,
        })
    }
}
