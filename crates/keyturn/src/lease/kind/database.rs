//! The `database` kind: a PostgreSQL, MySQL or MariaDB user per lease, created by the
//! database admin of the role's admin secret, member of the role's group roles, with the
//! lease's expiry on the server where the engine has one, dropped at revocation.
//!
//! ```toml
//! [[role]]
//! name = "ci-reader"
//! kind = "database"
//! admin_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pg-admin-AbCdEf"
//! groups = ["app_read"]
//! dbname = "app"          # optional: the admin secret's dbname
//! connection_limit = 10   # the default
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::super::field::{self, err, RolesError, DB_NAME_MAX};
use super::super::name;
use super::Field;

pub const NAME: &str = "database";
pub const KEYS: &[&str] = &["admin_secret", "groups", "dbname", "connection_limit"];
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const FIXED_TTL: Option<Duration> = None;
pub const REVOCABLE: bool = true;

/// The sessions a database role's user may hold at once when the role names no
/// `connection_limit`: enough for a job's or an engineer's pool, and far below the few
/// hundred connections a server has (100 on a stock PostgreSQL, tens on a small RDS
/// instance), so one lease holder cannot take them all and block the admin sessions that
/// revoke it (an RDS master user has no reserved connection).
pub const DEFAULT_CONNECTION_LIMIT: u32 = 10;
/// The most a role's `connection_limit` may be.
pub const CONNECTION_LIMIT_MAX: u32 = 1000;

/// A database role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The Secrets Manager ARN of the admin secret (the rotation functions' JSON format),
    /// which says which database to create the user in.
    pub admin_secret: String,
    /// The group roles the user joins. With one, the user acts as it (its default role),
    /// so what it creates belongs to the group; with several it keeps every group's rights
    /// (acting as one would drop the others') and what it creates is given to the first
    /// when the lease ends. Either way nothing it made blocks revocation.
    pub groups: Vec<String>,
    /// The database callers are told to connect to; the admin secret's `dbname` when
    /// absent. Users are server-wide on both engines: this names where the group's grants
    /// are, it does not confine the user.
    pub dbname: Option<String>,
    /// The sessions the user may hold at once (PostgreSQL `CONNECTION LIMIT`, MySQL and
    /// MariaDB `MAX_USER_CONNECTIONS`), [`DEFAULT_CONNECTION_LIMIT`] unless the role says.
    pub connection_limit: u32,
}

/// What a database lease records: the user is its `username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The Secrets Manager ARN of the admin secret that created the user (and drops it).
    pub admin_secret: String,
    /// The group role the user acts as; what it owns is reassigned to it at revocation.
    pub group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    admin_secret: Option<String>,
    groups: Option<Vec<String>>,
    dbname: Option<String>,
    connection_limit: Option<i64>,
}

pub fn parse(name: &str, table: toml::Table) -> Result<Role, RolesError> {
    let raw: Raw = field::read(name, table)?;
    let role = Some(name);
    let admin_secret = raw.admin_secret.clone().ok_or_else(|| err(role, "admin_secret", "is required"))?;
    if !field::is_secret_arn(&admin_secret) {
        return Err(err(role, "admin_secret", format!("{admin_secret:?} is not a Secrets Manager secret ARN")));
    }
    let groups = field::names(role, "groups", raw.groups.as_deref().unwrap_or_default(), DB_NAME_MAX, "a role name")?;
    if groups.is_empty() {
        return Err(err(role, "groups", "must name at least one group role for the user to join"));
    }
    if let Some(db) = &raw.dbname {
        if db.is_empty() || db.len() > DB_NAME_MAX || db.chars().any(char::is_control) {
            return Err(err(
                role,
                "dbname",
                format!("{db:?} is not a database name (1 to {DB_NAME_MAX} bytes, no control characters)"),
            ));
        }
    }
    let connection_limit = match raw.connection_limit {
        None => DEFAULT_CONNECTION_LIMIT,
        Some(n) => u32::try_from(n).ok().filter(|n| (1..=CONNECTION_LIMIT_MAX).contains(n)).ok_or_else(|| {
            err(
                role,
                "connection_limit",
                format!(
                    "{n} is not a whole number from 1 to {CONNECTION_LIMIT_MAX} (every dynamic user has a limit: \
                     none would let one lease take every connection of the server)"
                ),
            )
        })?,
    };
    Ok(Role { admin_secret, groups, dbname: raw.dbname, connection_limit })
}

pub fn check_ttl(_ttl: Duration, _text: &str) -> Result<(), String> {
    Ok(())
}

/// Stored as `admin_secret` and `group_role`.
pub fn fields(c: &Credential) -> Vec<(&'static str, Field)> {
    vec![("admin_secret", Field::S(c.admin_secret.clone())), ("group_role", Field::S(c.group.clone()))]
}

pub fn from_fields<F: super::Fields>(f: &F) -> Result<Credential, F::Error> {
    Ok(Credential { admin_secret: f.s("admin_secret")?, group: f.s("group_role")? })
}

/// The group that receives what an orphan database user owns when the sweep drops it:
/// its lease's group when its lease is on record (the lease says which group it was given);
/// otherwise the group of the one role, of `roles` (name, group) sharing the orphan's admin
/// secret, whose name the username carries (cut to the engine's limit as [`name::username`] cuts
/// it). `None`, so that what it owns is dropped, when no role or more than one matches: a
/// wrong group would hand one role's users another role's objects.
pub fn orphan_group(
    prefix: &str,
    orphan: &str,
    lease: Option<&super::super::Lease>,
    roles: &[(&str, &str)],
    engine_limit_bytes: usize,
) -> Option<String> {
    if let Some(super::Credential::Database(Credential { group, .. })) = lease.map(|l| &l.credential) {
        return Some(group.clone());
    }
    let (_, random) = orphan.rsplit_once('_')?;
    let mut matching = roles
        .iter()
        .filter(|(name, _)| name::username(prefix, name, engine_limit_bytes, random).as_deref() == Some(orphan))
        .map(|(_, group)| *group);
    match (matching.next(), matching.next()) {
        (Some(group), None) => Some(group.to_owned()),
        _ => None,
    }
}

#[cfg(feature = "lease")]
pub use io::*;

#[cfg(feature = "lease")]
mod io {
    use std::time::{Duration, UNIX_EPOCH};

    use secrecy::SecretString;

    use super::super::io::{backend_error, Io, IssueRequest, Made, Orphans, Ports, Prepared, SweepReport};
    use super::{Credential, Role};
    use crate::backend::{
        BackendError, DeleteOutcome, DeleteUser, DynamicUsers, Engine, Family, ListUsers, NewUser, NewUserOutcome,
        TlsMode, UpdateUser, Username,
    };
    use crate::contract::{DatabaseLogin, IssuedCredential};
    use crate::lease::{Lease, LeaseError};

    /// A database login: the lease's `username` and this.
    #[derive(Debug)]
    pub struct Secret {
        pub password: SecretString,
        pub engine: Engine,
        pub host: String,
        pub port: u16,
        pub dbname: Option<String>,
        /// keyturn reaches the server over verified TLS (the admin secret's `ssl`), so its
        /// clients can and should too.
        pub tls: bool,
    }

    /// A database user's login: the lease's username and this.
    pub fn answer(secret: &Secret, lease: &Lease) -> IssuedCredential {
        IssuedCredential::Database(DatabaseLogin {
            engine: secret.engine.as_str().into(),
            host: secret.host.clone(),
            port: secret.port,
            dbname: secret.dbname.clone(),
            tls: secret.tls,
            username: lease.username.clone(),
            password: secret.password.clone(),
        })
    }

    pub async fn prepare<P: Ports>(io: &Io<P>, role: &Role, req: &IssueRequest<'_>) -> Result<Prepared, LeaseError> {
        let admin = io.admins.login(&role.admin_secret, req.role, false).await?;
        Ok(Prepared {
            username: super::super::io::username(req, admin.endpoint.engine.max_username_len())?,
            credential: super::super::Credential::Database(Credential {
                admin_secret: role.admin_secret.clone(),
                group: role.groups[0].clone(),
            }),
            // PostgreSQL always enforces VALID UNTIL; MySQL-family servers only with an
            // event, which new_user reports.
            server_expiry: admin.endpoint.engine.family() == Family::Postgres,
        })
    }

    pub async fn make<P: Ports>(
        io: &Io<P>,
        role: &Role,
        req: &IssueRequest<'_>,
        lease: &Lease,
    ) -> Result<Made, LeaseError> {
        let username = Username::parse(&lease.username).map_err(LeaseError::Internal)?;
        let password = io.passwords.generate();
        let request = NewUser {
            username,
            groups: role.groups.clone(),
            password: password.clone(),
            expires_at: UNIX_EPOCH + Duration::from_secs(lease.expires_at),
            connection_limit: role.connection_limit,
        };
        let (outcome, endpoint): (NewUserOutcome, _) = io
            .admins
            .as_admin(&role.admin_secret, req.role, |admin| {
                let request = request.clone();
                async move {
                    let outcome = io.users.new_user(&admin.endpoint, &admin.credentials, request).await?;
                    Ok((outcome, admin.endpoint.clone()))
                }
            })
            .await?;
        Ok(Made {
            secret: super::super::Secret::Database(Secret {
                password,
                engine: endpoint.engine,
                host: endpoint.host.clone(),
                port: endpoint.port,
                dbname: role.dbname.clone().or_else(|| endpoint.dbname.clone()),
                tls: endpoint.tls == TlsMode::VerifyFull,
            }),
            server_expiry: Some(outcome.server_expiry),
        })
    }

    pub async fn renew<P: Ports>(
        io: &Io<P>,
        c: &Credential,
        _role: Option<&Role>,
        lease: &Lease,
        expires_at: u64,
    ) -> Result<(), LeaseError> {
        let username = Username::parse(&lease.username).map_err(LeaseError::Internal)?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(expires_at);
        let request = UpdateUser { username, password: None, expires_at: Some(expires_at) };
        let updated = io
            .admins
            .as_admin_raw(&c.admin_secret, &lease.role, |admin| {
                let request = request.clone();
                async move { io.users.update_user(&admin.endpoint, &admin.credentials, request).await }
            })
            .await?;
        match updated {
            Ok(()) => Ok(()),
            Err(BackendError::NoSuchUser { .. }) => Err(super::super::super::gone_user(&lease.lease_id)),
            Err(e) => Err(backend_error(e, &lease.role)),
        }
    }

    pub async fn delete<P: Ports>(io: &Io<P>, c: &Credential, lease: &Lease) -> Result<DeleteOutcome, LeaseError> {
        let username = Username::parse(&lease.username)
            .map_err(|problem| LeaseError::Internal(format!("lease {:?}'s username: {problem}", lease.lease_id)))?;
        let request = DeleteUser { username, reassign_to: Some(c.group.clone()) };
        io.admins
            .as_admin(&c.admin_secret, &lease.role, |admin| {
                let request = request.clone();
                async move { io.users.delete_user(&admin.endpoint, &admin.credentials, request).await }
            })
            .await
    }

    /// On every database a role names: users of keyturn's form without a live lease are
    /// dropped, what they own given to their role's group (see [`super::orphan_group`]).
    pub async fn sweep<P: Ports>(
        io: &Io<P>,
        roles: &[(&str, &Role)],
        prefix: &str,
        orphans: &impl Orphans,
        out: &mut SweepReport,
    ) {
        // Each admin secret's roles, with the group each role's users are given.
        let mut databases: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
        for (name, role) in roles {
            databases.entry(role.admin_secret.as_str()).or_default().push((name, &role.groups[0]));
        }
        for (admin_secret, roles) in databases {
            if let Err(e) = sweep_database(io, admin_secret, &roles, prefix, orphans, out).await {
                tracing::warn!(admin_secret, error = %e, "orphan sweep failed");
                out.errors.push(format!("{admin_secret}: {e}"));
            }
        }
    }

    async fn sweep_database<P: Ports>(
        io: &Io<P>,
        admin_secret: &str,
        roles: &[(&str, &str)],
        prefix: &str,
        orphans: &impl Orphans,
        out: &mut SweepReport,
    ) -> Result<(), LeaseError> {
        let (listed, engine) = io
            .admins
            .as_admin(admin_secret, "(orphan sweep)", |admin| async move {
                let request = ListUsers { prefix: prefix.to_owned() };
                let listed = io.users.list_users(&admin.endpoint, &admin.credentials, request).await?;
                Ok((listed, admin.endpoint.engine))
            })
            .await?;
        let listed = listed.iter().map(|u| u.as_str().to_owned()).collect();
        for (user, lease) in orphans.orphans(listed).await? {
            let username = Username::parse(&user).map_err(LeaseError::Internal)?;
            let reassign_to = super::orphan_group(prefix, &user, lease.as_ref(), roles, engine.max_username_len());
            let request = DeleteUser { username, reassign_to };
            io.admins
                .as_admin(admin_secret, "(orphan sweep)", |admin| {
                    let request = request.clone();
                    async move { io.users.delete_user(&admin.endpoint, &admin.credentials, request).await }
                })
                .await?;
            tracing::warn!(username = %user, admin_secret, "orphan user dropped: no live lease accounts for it");
            out.dropped.push(user);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Engine;

    #[test]
    fn an_orphans_objects_go_to_its_own_roles_group_or_are_dropped_when_unsure() {
        let id = "0123456789abcdefghij";
        let roles = [("analytics-ro", "readers"), ("analytics-rw", "writers"), ("ci", "ci_group")];
        let pg = Engine::Postgres.max_username_len();
        let group =
            |user: &str, lease: Option<&crate::lease::Lease>, limit| orphan_group("kt_", user, lease, &roles, limit);
        // The lease on record says the group, whatever the role became.
        let mut revoked = crate::lease::Lease::example(id, 2000);
        revoked.state = crate::lease::LeaseState::Revoked;
        assert_eq!(group(&format!("kt_ci_{id}"), Some(&revoked), pg).as_deref(), Some("readers"));
        // No lease: the role in the name, not the first role of the admin secret.
        assert_eq!(group(&format!("kt_analytics-rw_{id}"), None, pg).as_deref(), Some("writers"));
        assert_eq!(group(&format!("kt_ci_{id}"), None, pg).as_deref(), Some("ci_group"));
        // A role that is gone, or a name two roles cut to the same (MySQL's 32 bytes).
        assert_eq!(group(&format!("kt_removed_{id}"), None, pg), None);
        let mysql = Engine::Mysql.max_username_len();
        let cut = name::username("kt_", "analytics-rw", mysql, id).unwrap();
        assert_eq!(cut, name::username("kt_", "analytics-ro", mysql, id).unwrap());
        assert_eq!(group(&cut, None, mysql), None);
        assert_eq!(group(&format!("kt_ci_{id}"), None, mysql).as_deref(), Some("ci_group"));
    }
}
