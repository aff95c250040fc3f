//! Issuing, renewing, revoking and reaping leases: the imperative shell around
//! [`super::decide`]. One [`LeaseService`] per container serves both functions
//! (issue-credentials and reap-leases); its I/O is behind traits (the lease table, the
//! database users, AWS for IAM users, STS sessions and RDS tokens, Secrets Manager for
//! admin secrets) and its clock is injected.
//!
//! Order of writes, chosen so that a crash at any point leaves nothing unaccounted for:
//!
//! - Issue: the lease is written first (which also takes a slot of the role's
//!   `max_leases`, atomically), then the credential is made (a database or IAM user, an STS
//!   session, an RDS token). A crash in between leaves a lease without a user, which
//!   expires and is revoked like any other (deleting a user that does not exist succeeds).
//!   The reverse order would leave users no lease knows.
//! - Revoke: the lease becomes `Revoking` first, then the user is deleted, then the lease
//!   becomes `Revoked`. A failure is recorded on the lease (attempts, last error, next
//!   retry with backoff) and every reaper run retries it until it succeeds. An STS session
//!   or RDS token cannot be revoked (AWS has no call for it): its lease is closed by the
//!   reaper once it expired, with nothing to delete.
//! - Renew: the server's expiry moves first (the database's, the IAM user's expiry
//!   policy), then the lease (compare-and-set). A lost race leaves the server's expiry
//!   later than the lease's, which the reaper enforces.
//!
//! Because a user's lease exists before the user does, the reaper's orphan sweep can tell a
//! user no lease accounts for (a name of keyturn's form without a live lease of that name)
//! from one being issued right now.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt};
use rand::Rng;
use secrecy::SecretString;

use super::decide;
use super::role::{DatabaseRole, IamUserRole, RdsTokenRole, Role, RoleKind, Roles, StsRole};
use super::store::{Expected, LeaseStore, StoreError};
use super::{Grant, Lease, LeaseError, LeaseState};
use crate::backend::aws::{
    self as aws, AssumeRole, AwsCredentials, AwsError, AwsKeys, DeleteIamUser, ListIamUsers, NewIamUser, RdsToken,
    UpdateIamUser,
};
use crate::backend::{
    BackendError, Credentials, DatabaseSecret, DeleteUser, DynamicUsers, Endpoint, Engine, Family, ListUsers, NewUser,
    NewUserOutcome, UpdateUser, Username,
};
use crate::password::PasswordPolicy;
use crate::rotation::store::{SecretStore, Selector, AWSCURRENT};

/// IAM's limit on a user name.
const IAM_USERNAME_MAX: usize = 64;
/// Length of a lease id, which is also the random part of its username: 20 characters of
/// `[a-z0-9]`, about 103 bits. Lowercase only, so the name needs no quoting anywhere and
/// case-folding tools cannot merge two.
pub const LEASE_ID_LEN: usize = 20;
/// Who revoked a lease that expired.
pub const REAPER: &str = "reaper";
/// The most leases [`LeaseService::list`] returns (the earliest to expire): one query page
/// of the holder index, far above what a caller holds at once in practice.
pub const LIST_MAX: usize = 100;
/// How long a failed revocation waits before the next attempt: doubling from a minute (the
/// reaper's schedule), capped at an hour.
const RETRY_FIRST: u64 = 60;
const RETRY_MAX: u64 = 3600;

/// The time, in Unix seconds.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The system clock, plus an offset that only the end-to-end tests set (to expire leases
/// in a real binary without waiting).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    pub offset: u64,
}

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + self.offset
    }
}

/// How long IAM usually takes to accept a new user's access key everywhere (IAM is
/// eventually consistent); the answer tells the caller, who should retry an authentication
/// failure within it.
pub const IAM_PROPAGATION: Duration = Duration::from_secs(10);

/// Credentials just issued: the lease and what the caller needs to use them.
#[derive(Debug)]
pub struct Issued {
    pub lease: Lease,
    pub secret: IssuedSecret,
}

/// The credential itself, by kind.
#[derive(Debug)]
pub enum IssuedSecret {
    /// A database login (the lease's `username`).
    Database {
        password: SecretString,
        engine: Engine,
        host: String,
        port: u16,
        dbname: Option<String>,
        /// keyturn reaches the server over verified TLS (the admin secret's `ssl`), so its
        /// clients can and should too.
        tls: bool,
    },
    /// An access key: an STS session's (with its token) or an IAM user's.
    Aws {
        keys: AwsKeys,
        /// How long until the key works everywhere (an IAM user's; none for a session).
        propagation: Option<Duration>,
    },
    /// An RDS IAM authentication token: the password of the lease's `username`.
    RdsToken { token: SecretString, engine: Engine, host: String, port: u16, region: String },
}

/// A renewal's result.
#[derive(Debug)]
pub struct Renewed {
    pub lease: Lease,
    /// The role's max_ttl from issue time cut the renewal short.
    pub capped: bool,
}

/// What one reaper run did (also the reaper function's answer, as JSON).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReapReport {
    /// Due leases found.
    pub due: usize,
    /// Leases revoked.
    pub revoked: usize,
    /// Revocations that failed (recorded on their lease, retried later).
    pub failed: usize,
    /// Due leases another reaper or the issuer took meanwhile.
    pub skipped: usize,
    /// Users of keyturn's form without a live lease, dropped.
    pub orphans_dropped: Vec<String>,
    /// Databases whose orphan sweep failed, with why.
    pub sweep_errors: Vec<String>,
    /// The run stopped starting revocations at its deadline.
    pub stopped_at_deadline: bool,
}

/// The reaper's limits per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapLimits {
    /// The most due leases taken in one run.
    pub batch: usize,
    /// Revocations in flight at once.
    pub concurrency: usize,
    /// No revocation starts after this.
    pub deadline: Instant,
}

/// An admin secret, read and checked.
#[derive(Debug)]
struct AdminLogin {
    endpoint: Endpoint,
    credentials: Credentials,
}

/// The lease service. Admin secrets are read once and kept (re-read when the database
/// refuses them: the secret may just have been rotated); the backend keeps the admin
/// sessions.
pub struct LeaseService<S, U, A, M, C> {
    roles: Roles,
    store: S,
    users: U,
    aws: A,
    secrets: M,
    clock: C,
    passwords: PasswordPolicy,
    admins: Mutex<HashMap<String, Arc<AdminLogin>>>,
}

impl<S: LeaseStore, U: DynamicUsers, A: AwsCredentials, M: SecretStore, C: Clock> LeaseService<S, U, A, M, C> {
    pub fn new(roles: Roles, store: S, users: U, aws: A, secrets: M, clock: C, passwords: PasswordPolicy) -> Self {
        Self { roles, store, users, aws, secrets, clock, passwords, admins: Mutex::default() }
    }

    /// The lease table (the tests read leases back through it).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The roles `caller` may request.
    pub fn roles_for<'a>(&'a self, caller: &'a str) -> impl Iterator<Item = &'a Role> + 'a {
        self.roles.iter().filter(move |r| decide::principal_allowed(caller, &r.allowed_principals))
    }

    /// Issues credentials of `role_name` to `caller` for `ttl` (the role's default when
    /// `None`). Nothing is written or created unless the caller may have the role, the TTL
    /// is in range and the role has a free slot.
    pub async fn issue(&self, caller: &str, role_name: &str, ttl: Option<Duration>) -> Result<Issued, LeaseError> {
        // A role that does not exist and one the caller may not have get the same answer:
        // a caller that matches no role must not learn the roles' names by trying them.
        let role = self
            .roles
            .get(role_name)
            .filter(|role| decide::principal_allowed(caller, &role.allowed_principals))
            .ok_or_else(|| LeaseError::Forbidden(format!("{caller} may not request role {role_name:?}")))?;
        let ttl = decide::issue_ttl(role, ttl)?;
        let lease_id = new_lease_id();
        let now = self.clock.now();
        let lease = |username: String, grant: Grant, server_expiry: bool| Lease {
            lease_id: lease_id.clone(),
            role: role.name.clone(),
            username,
            grant,
            caller_arn: caller.to_owned(),
            issued_at: now,
            expires_at: decide::expires_at(now, ttl),
            state: LeaseState::Active,
            attempts: 0,
            last_error: None,
            version: 1,
            retry_at: None,
            revoked_at: None,
            revoked_by: None,
            server_expiry,
        };
        // Each kind's future is boxed: nested in the API handler unboxed, their layout runs
        // past the compiler's default recursion limit in every crate that awaits it.
        let issued = match &role.kind {
            RoleKind::Database(db) => {
                let admin = self.admin(&db.admin_secret, role_name, false).await?;
                let username = self.username(role, admin.endpoint.engine.max_username_len(), &lease_id)?;
                let grant = Grant::DatabaseUser { admin_secret: db.admin_secret.clone(), group: db.groups[0].clone() };
                // PostgreSQL always enforces VALID UNTIL; MySQL-family servers only with an
                // event, which new_user reports.
                let server_expiry = admin.endpoint.engine.family() == Family::Postgres;
                Box::pin(self.issue_database_user(lease(username, grant, server_expiry), db, &admin)).await
            }
            RoleKind::AwsIamUser(iam) => {
                let tag = caller_tag(caller)?;
                let username = self.username(role, IAM_USERNAME_MAX, &lease_id)?;
                Box::pin(self.issue_iam_user(lease(username, Grant::IamUser, true), iam, tag)).await
            }
            RoleKind::AwsSts(sts) => {
                let tag = caller_tag(caller)?;
                let grant = Grant::StsSession { role_arn: sts.role_arn.clone() };
                let lease = lease(decide::session_name(caller, &lease_id), grant, true);
                Box::pin(self.issue_sts_session(lease, sts, ttl, tag)).await
            }
            RoleKind::RdsIamToken(rds) => {
                let grant = Grant::RdsToken { host: rds.host.clone(), port: rds.port };
                Box::pin(self.issue_rds_token(lease(rds.db_user.clone(), grant, true), rds)).await
            }
        }?;
        let lease = &issued.lease;
        tracing::info!(
            lease_id = %lease.lease_id, role = role_name, kind = lease.grant.kind(), username = %lease.username,
            caller, expires_at = lease.expires_at, server_expiry = lease.server_expiry, "credentials issued"
        );
        Ok(issued)
    }

    /// The username of a new lease of `role` (see [`decide::username`]).
    fn username(&self, role: &Role, limit: usize, lease_id: &str) -> Result<String, LeaseError> {
        decide::username(&self.roles.username_prefix, &role.name, limit, lease_id)
            .ok_or_else(|| LeaseError::Internal(format!("no username fits role {:?}", role.name)))
    }

    /// Writes the lease (taking a slot of the role's `max_leases`), then makes the
    /// credential with `make`. When that fails the lease is revoked at once: whatever part
    /// of the credential exists is removed, or the failure recorded for the reaper.
    ///
    /// Once the credential exists, the lease is confirmed: written again (with `finish`'s
    /// changes) on condition that nobody moved it meanwhile. A revocation can reach a lease
    /// while its credential is being made (the reaper, when the TTL is about a second; an
    /// admin principal listing leases) and find no user to delete yet; without the
    /// confirmation the caller would get a working password for a revoked lease whose
    /// `max_leases` slot is already free. When the confirmation loses, the credential is
    /// deleted again and the caller gets an error, never the credential.
    async fn issue_with<T, Fut>(
        &self,
        lease: Lease,
        make: Fut,
        finish: impl FnOnce(&mut Lease, &T),
    ) -> Result<(Lease, T), LeaseError>
    where
        Fut: Future<Output = Result<T, LeaseError>>,
    {
        let max_leases = self.roles.get(&lease.role).and_then(|r| r.max_leases);
        self.store.put_new(&lease, max_leases).await?;
        let made = match make.await {
            Ok(made) => made,
            Err(e) => {
                let lease_id = lease.lease_id.clone();
                let cleaned = self.abandon(lease, &e.to_string()).await;
                tracing::warn!(%lease_id, error = %e, cleaned_up = cleaned.is_ok(), "issue failed");
                return Err(e);
            }
        };
        let mut confirmed = lease.clone();
        finish(&mut confirmed, &made);
        confirmed.version += 1;
        match self.store.update(&confirmed, Expected::of(&lease)).await {
            Ok(()) => Ok((confirmed, made)),
            Err(StoreError::ConditionFailed(_)) => {
                // Revoked (or being revoked) meanwhile, maybe before the user existed: delete
                // what was just made. Should that fail, the user has no live lease, and the
                // reaper's orphan sweep drops it.
                let deleted = self.delete_grant(&lease).await;
                tracing::warn!(
                    lease_id = %lease.lease_id, role = %lease.role, deleted_again = deleted.is_ok(),
                    "lease revoked while it was being issued"
                );
                Err(LeaseError::Conflict(format!(
                    "lease {:?} of role {:?} was revoked while it was being issued (a TTL of {} s may be too short to \
                     issue); nothing was issued: request again",
                    lease.lease_id,
                    lease.role,
                    lease.expires_at.saturating_sub(lease.issued_at)
                )))
            }
            Err(e) => {
                // The lease stays as written and expires: its credential is removed then.
                Err(e.into())
            }
        }
    }

    async fn issue_database_user(
        &self,
        lease: Lease,
        db: &DatabaseRole,
        admin: &AdminLogin,
    ) -> Result<Issued, LeaseError> {
        let admin_secret = match &lease.grant {
            Grant::DatabaseUser { admin_secret, .. } => admin_secret.clone(),
            other => return Err(LeaseError::Internal(format!("a {} lease is not a database user's", other.kind()))),
        };
        let username = Username::parse(&lease.username).map_err(LeaseError::Internal)?;
        let password = self.passwords.generate();
        let request = NewUser {
            username,
            groups: db.groups.clone(),
            password: password.clone(),
            expires_at: UNIX_EPOCH + Duration::from_secs(lease.expires_at),
            connection_limit: db.connection_limit,
        };
        let role = lease.role.clone();
        let create = self.as_admin(&admin_secret, &role, |admin| {
            let request = request.clone();
            async move { self.users.new_user(&admin.endpoint, &admin.credentials, request).await }
        });
        let (lease, _) = self
            .issue_with(lease, create, |lease, outcome: &NewUserOutcome| lease.server_expiry = outcome.server_expiry)
            .await?;
        Ok(Issued {
            secret: IssuedSecret::Database {
                password,
                engine: admin.endpoint.engine,
                host: admin.endpoint.host.clone(),
                port: admin.endpoint.port,
                dbname: db.dbname.clone().or_else(|| admin.endpoint.dbname.clone()),
                tls: admin.endpoint.tls == crate::backend::TlsMode::VerifyFull,
            },
            lease,
        })
    }

    async fn issue_iam_user(&self, lease: Lease, iam: &IamUserRole, caller: &str) -> Result<Issued, LeaseError> {
        let expires_at = UNIX_EPOCH + Duration::from_secs(lease.expires_at);
        let request = NewIamUser {
            user_name: lease.username.clone(),
            path: iam.path.clone(),
            permissions_boundary: iam.permissions_boundary.clone(),
            policy_arns: iam.policy_arns.clone(),
            inline_policy: iam.inline_policy.clone(),
            groups: iam.groups.clone(),
            tags: lease_tags(&lease, caller)
                .into_iter()
                .chain([(aws::tag::EXPIRES_AT.to_owned(), aws::iso8601(expires_at))])
                .collect(),
            expires_at,
        };
        let role = lease.role.clone();
        let create = async { self.aws.new_iam_user(request).await.map_err(|e| aws_error(e, &role)) };
        let (lease, keys) = self.issue_with(lease, create, |_, _| {}).await?;
        Ok(Issued { lease, secret: IssuedSecret::Aws { keys, propagation: Some(IAM_PROPAGATION) } })
    }

    async fn issue_sts_session(
        &self,
        lease: Lease,
        sts: &StsRole,
        ttl: Duration,
        caller: &str,
    ) -> Result<Issued, LeaseError> {
        let request = AssumeRole {
            role_arn: sts.role_arn.clone(),
            session_name: lease.username.clone(),
            duration: ttl,
            session_policy: sts.session_policy.clone(),
            policy_arns: sts.policy_arns.clone(),
            external_id: sts.external_id.clone(),
            tags: lease_tags(&lease, caller),
        };
        let role = lease.role.clone();
        let assume = async { self.aws.assume_role(request).await.map_err(|e| aws_error(e, &role)) };
        let (lease, keys) = self.issue_with(lease, assume, |_, _| {}).await?;
        Ok(Issued { lease, secret: IssuedSecret::Aws { keys, propagation: None } })
    }

    async fn issue_rds_token(&self, lease: Lease, rds: &RdsTokenRole) -> Result<Issued, LeaseError> {
        let request = RdsToken {
            host: rds.host.clone(),
            port: rds.port,
            region: rds.region.clone(),
            db_user: rds.db_user.clone(),
        };
        let role = lease.role.clone();
        let sign = async { self.aws.rds_token(request).await.map_err(|e| aws_error(e, &role)) };
        let (lease, token) = self.issue_with(lease, sign, |_, _| {}).await?;
        Ok(Issued {
            lease,
            secret: IssuedSecret::RdsToken {
                token,
                engine: rds.engine,
                host: rds.host.clone(),
                port: rds.port,
                region: rds.region.clone(),
            },
        })
    }

    /// A lease whose user could not be created: revoked at once as if it had expired.
    async fn abandon(&self, lease: Lease, why: &str) -> Result<(), LeaseError> {
        let mut next = lease.clone();
        next.state = LeaseState::Revoking;
        next.retry_at = Some(self.clock.now());
        next.last_error = Some(format!("issuing failed: {why}"));
        next.revoked_by = Some(lease.caller_arn.clone());
        next.version += 1;
        self.store.update(&next, Expected::of(&lease)).await?;
        self.finish_revocation(next).await.map(drop)
    }

    /// Renews `lease_id` for `ttl` from now (the role's default when `None`), up to the
    /// role's max_ttl from issue time. Only the lease's holder or an admin principal may;
    /// the holder only while the role still allows it.
    pub async fn renew(&self, caller: &str, lease_id: &str, ttl: Option<Duration>) -> Result<Renewed, LeaseError> {
        let lease = self.lease_for(caller, lease_id).await?;
        let role = self.roles.get(&lease.role).ok_or_else(|| {
            LeaseError::Conflict(format!(
                "lease {lease_id:?} is of role {:?}, which no longer exists: it can only be revoked",
                lease.role
            ))
        })?;
        let admin = decide::principal_allowed(caller, &self.roles.admin_principals);
        if !admin && !decide::principal_allowed(caller, &role.allowed_principals) {
            return Err(LeaseError::Forbidden(format!("{caller} may no longer use role {:?}", role.name)));
        }
        let renewal = decide::renew_until(&lease, role, ttl, self.clock.now())?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(renewal.expires_at);
        let gone = || LeaseError::Conflict(format!("lease {lease_id:?}'s user no longer exists"));
        match &lease.grant {
            Grant::DatabaseUser { admin_secret, .. } => {
                let username = Username::parse(&lease.username).map_err(LeaseError::Internal)?;
                let request = UpdateUser { username, password: None, expires_at: Some(expires_at) };
                let updated = self
                    .as_admin_raw(admin_secret, &lease.role, |admin| {
                        let request = request.clone();
                        async move { self.users.update_user(&admin.endpoint, &admin.credentials, request).await }
                    })
                    .await?;
                match updated {
                    Ok(()) => {}
                    Err(BackendError::NoSuchUser { .. }) => return Err(gone()),
                    Err(e) => return Err(backend_error(e, &lease.role)),
                }
            }
            Grant::IamUser => {
                // The role's path: the new expiry policy protects the users under it.
                let RoleKind::AwsIamUser(iam) = &role.kind else {
                    return Err(LeaseError::Conflict(format!(
                        "lease {lease_id:?} is of role {:?}, which no longer issues IAM users: it can only be revoked",
                        lease.role
                    )));
                };
                let request = UpdateIamUser { user_name: lease.username.clone(), path: iam.path.clone(), expires_at };
                match self.aws.update_iam_user(request).await {
                    Ok(()) => {}
                    Err(e) if e.not_found => return Err(gone()),
                    Err(e) => return Err(aws_error(e, &lease.role)),
                }
            }
            Grant::StsSession { .. } | Grant::RdsToken { .. } => {
                return Err(LeaseError::Conflict(format!(
                    "lease {lease_id:?} is an {} credential, which AWS cannot extend: request a new one",
                    lease.grant.kind()
                )))
            }
        }
        let mut next = lease.clone();
        next.expires_at = renewal.expires_at;
        next.version += 1;
        self.store.update(&next, Expected::of(&lease)).await?;
        tracing::info!(lease_id, caller, expires_at = next.expires_at, capped = renewal.capped, "lease renewed");
        Ok(Renewed { lease: next, capped: renewal.capped })
    }

    /// Revokes `lease_id` now. Revoking a revoked lease succeeds.
    pub async fn revoke(&self, caller: &str, lease_id: &str) -> Result<Lease, LeaseError> {
        let lease = self.lease_for(caller, lease_id).await?;
        if !lease.grant.is_revocable() && lease.state == LeaseState::Active {
            return Err(LeaseError::Conflict(format!(
                "lease {lease_id:?} is an {} credential, which AWS cannot end early: it stays valid until it \
                 expires at {}",
                lease.grant.kind(),
                lease.expires_at
            )));
        }
        self.revoke_lease(lease, caller, false).await
    }

    /// The live leases `caller` holds (see [`decide::holds`]: those it may renew and revoke as
    /// their holder), the earliest expiry first, at most [`LIST_MAX`]. An admin principal
    /// gets its own too, not everyone's: it acts on other callers' leases by id. A lease
    /// past its expiry that the reaper has not revoked yet is listed: its credential may
    /// still work until then.
    pub async fn list(&self, caller: &str) -> Result<Vec<Lease>, LeaseError> {
        let leases = self.store.list_live_by_caller(caller, LIST_MAX).await?;
        // Checked again here rather than trusted to the index's key: what one caller is
        // shown of another's leases must not depend on how the store matches ARNs.
        Ok(leases.into_iter().filter(|l| l.state.is_live() && decide::holds(caller, &l.caller_arn)).collect())
    }

    /// The lease, if `caller` may act on it.
    async fn lease_for(&self, caller: &str, lease_id: &str) -> Result<Lease, LeaseError> {
        if !is_lease_id(lease_id) {
            return Err(LeaseError::UnknownLease(lease_id.to_owned()));
        }
        let lease = self.store.get(lease_id).await?.ok_or_else(|| LeaseError::UnknownLease(lease_id.to_owned()))?;
        if !decide::may_act(caller, &lease.caller_arn, &self.roles.admin_principals) {
            return Err(LeaseError::Forbidden(format!("{caller} does not hold lease {lease_id:?}")));
        }
        Ok(lease)
    }

    /// Moves a lease to `Revoking` (recording who asked) and finishes its revocation. A
    /// lease someone else moved meanwhile is read again and taken from where it is; with
    /// `only_if_expired` (the reaper, which finds leases through an eventually consistent
    /// index) an active lease is left alone unless it is still expired as read again.
    async fn revoke_lease(&self, mut lease: Lease, by: &str, only_if_expired: bool) -> Result<Lease, LeaseError> {
        for _ in 0..3 {
            match lease.state {
                LeaseState::Revoked => return Ok(lease),
                LeaseState::Active if only_if_expired && !decide::is_expired(&lease, self.clock.now()) => {
                    return Ok(lease)
                }
                LeaseState::Revoking => {
                    return self.finish_revocation(lease).await;
                }
                LeaseState::Active => {
                    let mut next = lease.clone();
                    next.state = LeaseState::Revoking;
                    next.retry_at = Some(self.clock.now());
                    next.revoked_by = Some(by.to_owned());
                    next.version += 1;
                    match self.store.update(&next, Expected::of(&lease)).await {
                        Ok(()) => lease = next,
                        Err(StoreError::ConditionFailed(_)) => {
                            lease = self.store.get(&lease.lease_id).await?.ok_or_else(|| gone(&lease.lease_id))?;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(LeaseError::Conflict(format!("lease {:?} kept changing; try again", lease.lease_id)))
    }

    /// Deletes a `Revoking` lease's user and records the outcome: `Revoked`, or the
    /// failure with the next retry time. A record lost to a concurrent writer (another
    /// reaper finishing the same lease) is not an error: the user is gone either way.
    /// Returns the lease as revoked (what was written, so no read follows).
    async fn finish_revocation(&self, lease: Lease) -> Result<Lease, LeaseError> {
        debug_assert_eq!(lease.state, LeaseState::Revoking);
        let now = self.clock.now();
        let deleted = self.delete_grant(&lease).await;
        let mut next = lease.clone();
        next.version += 1;
        next.attempts += 1;
        let result = match deleted {
            Ok(outcome) => {
                next.state = LeaseState::Revoked;
                next.revoked_at = Some(now);
                next.retry_at = None;
                tracing::info!(
                    lease_id = %lease.lease_id, role = %lease.role, kind = lease.grant.kind(),
                    username = %lease.username, by = lease.revoked_by.as_deref().unwrap_or(""),
                    existed = outcome.existed, sessions_ended = outcome.sessions_ended, "lease revoked"
                );
                Ok(())
            }
            Err(e) => {
                next.last_error = Some(e.to_string());
                next.retry_at = Some(now + retry_delay(next.attempts));
                tracing::warn!(
                    lease_id = %lease.lease_id, attempts = next.attempts, retry_at = next.retry_at, error = %e,
                    "revocation failed; retried later"
                );
                Err(LeaseError::Unavailable(format!(
                    "lease {:?} is being revoked but its user could not be deleted yet ({e}); it is retried until it is",
                    lease.lease_id
                )))
            }
        };
        match self.store.update(&next, Expected::of(&lease)).await {
            Ok(()) | Err(StoreError::ConditionFailed(_)) => result.map(|()| next),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes what a lease issued: its database user or IAM user with all their access.
    /// An STS session or RDS token cannot be removed: it expires by itself, so there is
    /// nothing to do (the reaper reaches these only once they expired).
    async fn delete_grant(&self, lease: &Lease) -> Result<crate::backend::DeleteOutcome, LeaseError> {
        match &lease.grant {
            Grant::DatabaseUser { admin_secret, group } => {
                let username = Username::parse(&lease.username).map_err(|problem| {
                    LeaseError::Internal(format!("lease {:?}'s username: {problem}", lease.lease_id))
                })?;
                let request = DeleteUser { username, reassign_to: Some(group.clone()) };
                self.as_admin(admin_secret, &lease.role, |admin| {
                    let request = request.clone();
                    async move { self.users.delete_user(&admin.endpoint, &admin.credentials, request).await }
                })
                .await
            }
            Grant::IamUser => {
                let deleted = self
                    .aws
                    .delete_iam_user(DeleteIamUser { user_name: lease.username.clone() })
                    .await
                    .map_err(|e| aws_error(e, &lease.role))?;
                Ok(crate::backend::DeleteOutcome { existed: deleted.existed, sessions_ended: 0 })
            }
            Grant::StsSession { .. } | Grant::RdsToken { .. } => {
                Ok(crate::backend::DeleteOutcome { existed: false, sessions_ended: 0 })
            }
        }
    }

    /// One reaper run: revokes due leases (expired ones, and failed revocations whose retry
    /// time came), then drops users of keyturn's form that no live lease accounts for.
    pub async fn reap(&self, limits: ReapLimits) -> Result<ReapReport, LeaseError> {
        let now = self.clock.now();
        let due = self.store.list_due(now, limits.batch).await?;
        let mut report = ReapReport { due: due.len(), ..ReapReport::default() };
        let outcomes: Vec<Option<Result<bool, LeaseError>>> = stream::iter(due)
            .map(|lease| async move {
                if Instant::now() >= limits.deadline {
                    return None;
                }
                Some(self.revoke_lease(lease, REAPER, true).await.map(|l| l.state == LeaseState::Revoked))
            })
            .buffer_unordered(limits.concurrency.max(1))
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                None => report.stopped_at_deadline = true,
                Some(Ok(true)) => report.revoked += 1,
                Some(Ok(false)) | Some(Err(LeaseError::Conflict(_))) => report.skipped += 1,
                Some(Err(_)) => report.failed += 1,
            }
        }
        if Instant::now() < limits.deadline {
            self.sweep_orphans(&mut report).await;
        }
        tracing::info!(
            due = report.due,
            revoked = report.revoked,
            failed = report.failed,
            skipped = report.skipped,
            orphans = report.orphans_dropped.len(),
            "reaper run"
        );
        Ok(report)
    }

    /// On every database and IAM path a role names: users whose name has keyturn's form
    /// (`kt_<role>_<lease id>`) but no live lease of that name are dropped. Their lease is
    /// read after the list, and leases are written before their user is created, so a user
    /// being issued right now always has its lease.
    async fn sweep_orphans(&self, report: &mut ReapReport) {
        // Each admin secret's roles, with the group each role's users are given.
        let mut databases: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        let mut iam_paths: BTreeSet<&str> = BTreeSet::new();
        for role in self.roles.iter() {
            match &role.kind {
                RoleKind::Database(db) => {
                    databases.entry(db.admin_secret.as_str()).or_default().push((&role.name, &db.groups[0]));
                }
                RoleKind::AwsIamUser(iam) => {
                    iam_paths.insert(iam.path.as_str());
                }
                RoleKind::AwsSts(_) | RoleKind::RdsIamToken(_) => {}
            }
        }
        for (admin_secret, roles) in databases {
            if let Err(e) = self.sweep_database(admin_secret, &roles, report).await {
                tracing::warn!(admin_secret, error = %e, "orphan sweep failed");
                report.sweep_errors.push(format!("{admin_secret}: {e}"));
            }
        }
        for path in iam_paths {
            if let Err(e) = self.sweep_iam_path(path, report).await {
                tracing::warn!(iam_path = path, error = %e, "orphan sweep failed");
                report.sweep_errors.push(format!("IAM users under {path}: {e}"));
            }
        }
    }

    /// Drops the orphans among the users of keyturn's form on `admin_secret`'s server;
    /// `roles` are the roles (name, group) that use that secret.
    async fn sweep_database(
        &self,
        admin_secret: &str,
        roles: &[(&str, &str)],
        report: &mut ReapReport,
    ) -> Result<(), LeaseError> {
        let (listed, engine) = self
            .as_admin(admin_secret, "(orphan sweep)", |admin| async move {
                let request = ListUsers { prefix: self.roles.username_prefix.clone() };
                let listed = self.users.list_users(&admin.endpoint, &admin.credentials, request).await?;
                Ok((listed, admin.endpoint.engine))
            })
            .await?;
        for (user, lease) in self.orphans(listed.iter().map(Username::as_str)).await? {
            let name = user.to_owned();
            let username = Username::parse(user).map_err(LeaseError::Internal)?;
            let reassign_to = decide::orphan_group(
                &self.roles.username_prefix,
                user,
                lease.as_ref(),
                roles,
                engine.max_username_len(),
            );
            let request = DeleteUser { username, reassign_to };
            self.as_admin(admin_secret, "(orphan sweep)", |admin| {
                let request = request.clone();
                async move { self.users.delete_user(&admin.endpoint, &admin.credentials, request).await }
            })
            .await?;
            tracing::warn!(username = %name, admin_secret, "orphan user dropped: no live lease accounts for it");
            report.orphans_dropped.push(name);
        }
        Ok(())
    }

    async fn sweep_iam_path(&self, path: &str, report: &mut ReapReport) -> Result<(), LeaseError> {
        let request = ListIamUsers { path: path.to_owned(), prefix: self.roles.username_prefix.clone() };
        let listed = self.aws.list_iam_users(request).await.map_err(|e| aws_error(e, "(orphan sweep)"))?;
        for (user, _) in self.orphans(listed.iter().map(String::as_str)).await? {
            let request = DeleteIamUser { user_name: user.to_owned() };
            self.aws.delete_iam_user(request).await.map_err(|e| aws_error(e, "(orphan sweep)"))?;
            tracing::warn!(username = user, iam_path = path, "orphan IAM user deleted: no live lease accounts for it");
            report.orphans_dropped.push(user.to_owned());
        }
        Ok(())
    }

    /// The names, of those listed, that have keyturn's form but no live lease of that name,
    /// each with the lease of its id when one is on record (revoked, or another name's).
    async fn orphans<'n>(
        &self,
        listed: impl Iterator<Item = &'n str>,
    ) -> Result<Vec<(&'n str, Option<Lease>)>, LeaseError> {
        let by_id: BTreeMap<&str, &str> =
            listed.filter_map(|user| Some((lease_id_of(&self.roles.username_prefix, user)?, user))).collect();
        if by_id.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = by_id.keys().map(|id| (*id).to_owned()).collect();
        let mut leases: BTreeMap<String, Lease> =
            self.store.get_many(&ids).await?.into_iter().map(|l| (l.lease_id.clone(), l)).collect();
        Ok(by_id
            .into_iter()
            .filter_map(|(id, user)| {
                let lease = leases.remove(id);
                let live = lease.as_ref().is_some_and(|l| l.state.is_live() && l.username == user);
                (!live).then_some((user, lease))
            })
            .collect())
    }

    async fn as_admin<T, F, Fut>(&self, admin_secret: &str, role: &str, op: F) -> Result<T, LeaseError>
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
    async fn as_admin_raw<T, F, Fut>(
        &self,
        admin_secret: &str,
        role: &str,
        op: F,
    ) -> Result<Result<T, BackendError>, LeaseError>
    where
        F: Fn(Arc<AdminLogin>) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let admin = self.admin(admin_secret, role, false).await?;
        match op(admin).await {
            Err(BackendError::LoginRefused { .. } | BackendError::ConnectionNotAllowed { .. }) => {
                let admin = self.admin(admin_secret, role, true).await?;
                Ok(op(admin).await)
            }
            other => Ok(other),
        }
    }

    /// The admin secret, from the cache unless `reload`.
    async fn admin(&self, arn: &str, role: &str, reload: bool) -> Result<Arc<AdminLogin>, LeaseError> {
        let cached = || self.admins.lock().unwrap_or_else(|p| p.into_inner()).get(arn).cloned();
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
        let master = DatabaseSecret::parse_master(&value.ok_or_else(|| fail("it has no AWSCURRENT value".into()))?)
            .map_err(fail)?;
        let engine = master.engine.ok_or_else(|| fail("missing key \"engine\"".into()))?;
        let host = master.host.filter(|h| !h.is_empty()).ok_or_else(|| fail("missing key \"host\"".into()))?;
        let endpoint = Endpoint {
            engine,
            host,
            port: master.port.unwrap_or(engine.default_port()),
            dbname: master.dbname.or_else(|| engine.default_dbname().map(str::to_owned)),
            tls: master.tls,
        };
        let admin = Arc::new(AdminLogin { endpoint, credentials: master.credentials });
        self.admins.lock().unwrap_or_else(|p| p.into_inner()).insert(arn.to_owned(), admin.clone());
        Ok(admin)
    }
}

/// An AWS failure as the API reports it: transient ones are worth a retry (503); a refusal
/// (a trust policy, a missing permission) is the deployment's to fix (500), named.
fn aws_error(e: AwsError, role: &str) -> LeaseError {
    if e.retryable {
        LeaseError::Unavailable(format!("AWS, for role {role:?}: {e}"))
    } else {
        LeaseError::Internal(format!("AWS, for role {role:?}: {e}"))
    }
}

/// The caller's ARN as the tag that records it on an AWS credential, or a 400 saying why
/// it cannot be one.
/// The tags that tie an AWS credential (a session, a user) to its lease and its holder.
fn lease_tags(lease: &Lease, caller: &str) -> Vec<(String, String)> {
    vec![(aws::tag::LEASE_ID.to_owned(), lease.lease_id.clone()), (aws::tag::CALLER.to_owned(), caller.to_owned())]
}

fn caller_tag(caller: &str) -> Result<&str, LeaseError> {
    decide::caller_tag(caller).ok_or_else(|| {
        LeaseError::BadRequest(format!(
            "{caller} cannot be recorded in an AWS tag (over 256 characters, or a character tags refuse, \
             such as a comma), and this role's credentials carry their holder's ARN in one"
        ))
    })
}

/// A backend failure as the API reports it: transient ones are worth a retry (503).
fn backend_error(e: BackendError, role: &str) -> LeaseError {
    if e.is_retryable() || matches!(e, BackendError::LoginRefused { .. }) {
        LeaseError::Unavailable(format!("the database of role {role:?}: {e}"))
    } else {
        LeaseError::Internal(format!("the database of role {role:?}: {e}"))
    }
}

fn gone(lease_id: &str) -> LeaseError {
    LeaseError::Internal(format!("lease {lease_id:?} disappeared from the lease table"))
}

/// Backoff after `attempts` failed revocations.
fn retry_delay(attempts: u32) -> u64 {
    RETRY_FIRST.saturating_mul(1 << attempts.saturating_sub(1).min(12)).min(RETRY_MAX)
}

/// A new lease id from the operating system's CSPRNG (see [`LEASE_ID_LEN`]).
fn new_lease_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..LEASE_ID_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Whether `id` could be a lease id (anything else is unknown without a lookup).
pub fn is_lease_id(id: &str) -> bool {
    id.len() == LEASE_ID_LEN && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The lease id in a username of keyturn's form, `<prefix><role part>_<lease id>`; `None`
/// for any other name (left alone by the sweep).
pub fn lease_id_of<'a>(prefix: &str, username: &'a str) -> Option<&'a str> {
    let rest = username.strip_prefix(prefix)?;
    let (role_part, id) = rest.rsplit_once('_')?;
    let role_ok = role_part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (role_ok && is_lease_id(id)).then_some(id)
}

#[cfg(test)]
mod tests {
    //! The service's decisions under faults, with the in-memory fakes of [`crate::lease::fakes`].
    use std::sync::atomic::Ordering;

    use secrecy::ExposeSecret;

    use super::*;
    use crate::lease::fakes::*;

    fn limits() -> ReapLimits {
        ReapLimits { batch: 100, concurrency: 4, deadline: Instant::now() + Duration::from_secs(60) }
    }

    fn leases(s: &Service) -> Vec<Lease> {
        s.store.leases.lock().unwrap().values().cloned().collect()
    }

    #[test]
    fn a_caller_outside_allowed_principals_gets_403_and_nothing_is_created() {
        block_on(async {
            let s = service(None);
            for caller in [STRANGER, OPS, "arn:aws:iam::123456789012:root", ""] {
                assert_eq!(s.issue(caller, "ci", None).await.unwrap_err().status(), 403, "{caller}");
            }
            assert_eq!(s.issue(CI, "nope", None).await.unwrap_err().status(), 403, "as for a role it may not have");
            assert_eq!(s.issue(CI, "ci", Some(Duration::from_secs(7200))).await.unwrap_err().status(), 400);
            assert!(leases(&s).is_empty());
            assert!(s.users.users.lock().unwrap().is_empty());
            assert_eq!(s.secrets.reads.load(Ordering::SeqCst), 0, "a refused request reads no admin secret");
        });
    }

    #[test]
    fn issue_writes_the_lease_then_the_user_with_the_lease_expiry() {
        block_on(async {
            let s = service(None);
            let issued = s.issue(CI, "ci", Some(Duration::from_secs(600))).await.unwrap();
            let lease = &issued.lease;
            assert_eq!(lease.expires_at, 1_000_600);
            assert_eq!(lease_id_of("kt_", &lease.username), Some(lease.lease_id.as_str()));
            assert_eq!(s.users.users.lock().unwrap().get(&lease.username), Some(&1_000_600));
            assert_eq!(s.store.get(&lease.lease_id).await.unwrap().unwrap().caller_arn, CI);
            let IssuedSecret::Database { password, .. } = &issued.secret else { panic!("{:?}", issued.secret) };
            assert_eq!(password.expose_secret().len(), 32);
        });
    }

    #[test]
    fn max_leases_refuses_with_429_and_creates_nothing() {
        block_on(async {
            let s = service(Some(2));
            let a = s.issue(CI, "ci", None).await.unwrap();
            s.issue(CI, "ci", None).await.unwrap();
            let e = s.issue(CI, "ci", None).await.unwrap_err();
            assert_eq!((e.status(), e.to_string().contains("2 live leases")), (429, true), "{e}");
            assert_eq!(s.users.users.lock().unwrap().len(), 2);
            s.revoke(CI, &a.lease.lease_id).await.unwrap();
            s.issue(CI, "ci", None).await.unwrap();
        });
    }

    #[test]
    fn only_the_holder_or_an_admin_may_renew_or_revoke() {
        block_on(async {
            let s = service(None);
            let id = s.issue(CI, "ci", None).await.unwrap().lease.lease_id;
            for caller in [OTHER_CI, STRANGER] {
                assert_eq!(s.renew(caller, &id, None).await.unwrap_err().status(), 403);
                assert_eq!(s.revoke(caller, &id).await.unwrap_err().status(), 403);
            }
            assert_eq!(s.revoke(CI, "notaleaseid").await.unwrap_err().status(), 404);
            assert_eq!(s.revoke(CI, "abcdefghij0123456789").await.unwrap_err().status(), 404);
            s.renew(OPS, &id, Some(Duration::from_secs(1800))).await.unwrap();
            s.revoke(OPS, &id).await.unwrap();
            let lease = s.store.get(&id).await.unwrap().unwrap();
            assert_eq!((lease.state, lease.revoked_by.as_deref()), (LeaseState::Revoked, Some(OPS)));
            assert!(s.users.users.lock().unwrap().is_empty());
            s.revoke(CI, &id).await.unwrap();
        });
    }

    #[test]
    fn a_caller_lists_its_own_live_leases_only() {
        block_on(async {
            let s = service(None);
            let ttl = |secs| Some(Duration::from_secs(secs));
            let long = s.issue(CI, "ci", ttl(3600)).await.unwrap().lease;
            let short = s.issue(CI, "ci", ttl(600)).await.unwrap().lease;
            let token = s.issue(CI, "pg-iam", None).await.unwrap().lease;
            let other = s.issue(OTHER_CI, "ci", ttl(60)).await.unwrap().lease;
            let ids = |leases: Vec<Lease>| leases.into_iter().map(|l| l.lease_id).collect::<Vec<_>>();
            assert_eq!(ids(s.list(CI).await.unwrap()), ids(vec![short.clone(), token.clone(), long.clone()]));
            assert_eq!(ids(s.list(OTHER_CI).await.unwrap()), [other.lease_id], "another session of the role");
            for nobody in [OPS, STRANGER, "", "arn:aws:iam::123456789012:root"] {
                assert_eq!(s.list(nobody).await.unwrap(), [], "{nobody:?}: an admin acts on leases, holds none");
            }

            // Revoked leases disappear, by the holder or by the reaper; one failing to be
            // revoked is still there (its user may still exist).
            s.revoke(CI, &short.lease_id).await.unwrap();
            *s.users.fail_deletes.lock().unwrap() = true;
            assert_eq!(s.revoke(OPS, &long.lease_id).await.unwrap_err().status(), 503);
            let listed = s.list(CI).await.unwrap();
            assert_eq!(ids(listed.clone()), ids(vec![token.clone(), long.clone()]));
            assert_eq!(listed[1].state, LeaseState::Revoking);
            *s.users.fail_deletes.lock().unwrap() = false;
            s.clock.0.store(token.expires_at, Ordering::SeqCst);
            s.reap(limits()).await.unwrap();
            assert_eq!(s.list(CI).await.unwrap(), []);
        });
    }

    #[test]
    fn renewal_moves_the_database_expiry_and_stops_at_max_ttl() {
        block_on(async {
            let s = service(None);
            let issued = s.issue(CI, "ci", Some(Duration::from_secs(600))).await.unwrap();
            let (id, user) = (issued.lease.lease_id, issued.lease.username);
            s.clock.0.store(1_000_300, Ordering::SeqCst);
            let r = s.renew(CI, &id, Some(Duration::from_secs(900))).await.unwrap();
            assert_eq!((r.lease.expires_at, r.capped), (1_001_200, false));
            assert_eq!(s.users.users.lock().unwrap()[&user], 1_001_200);
            s.clock.0.store(1_001_000, Ordering::SeqCst);
            let r = s.renew(CI, &id, Some(Duration::from_secs(3600))).await.unwrap();
            assert_eq!((r.lease.expires_at, r.capped), (1_003_600, true));
            assert_eq!(s.renew(CI, &id, None).await.unwrap_err().code(), "not_extended");
        });
    }

    #[test]
    fn the_reaper_revokes_expired_leases_only() {
        block_on(async {
            let s = service(None);
            let short = s.issue(CI, "ci", Some(Duration::from_secs(60))).await.unwrap().lease;
            let long = s.issue(CI, "ci", Some(Duration::from_secs(3600))).await.unwrap().lease;
            s.clock.0.store(1_000_060, Ordering::SeqCst);
            let report = s.reap(limits()).await.unwrap();
            assert_eq!((report.due, report.revoked), (1, 1));
            assert!(!s.users.has(&short.username) && s.users.has(&long.username));
            let short = s.store.get(&short.lease_id).await.unwrap().unwrap();
            assert_eq!((short.state, short.revoked_by.as_deref()), (LeaseState::Revoked, Some(REAPER)));
        });
    }

    #[test]
    fn a_stale_read_of_a_renewed_lease_does_not_revoke_it() {
        block_on(async {
            let s = service(None);
            let stale = s.issue(CI, "ci", Some(Duration::from_secs(60))).await.unwrap().lease;
            s.renew(CI, &stale.lease_id, Some(Duration::from_secs(600))).await.unwrap();
            s.clock.0.store(1_000_100, Ordering::SeqCst);
            // What an eventually consistent index could still show the reaper.
            let kept = s.revoke_lease(stale.clone(), REAPER, true).await.unwrap();
            assert_eq!(kept.state, LeaseState::Active);
            assert!(s.users.has(&stale.username));
        });
    }

    #[test]
    fn a_failed_revocation_is_recorded_and_retried_with_backoff_until_it_succeeds() {
        block_on(async {
            let s = service(None);
            let lease = s.issue(CI, "ci", Some(Duration::from_secs(60))).await.unwrap().lease;
            *s.users.fail_deletes.lock().unwrap() = true;
            let e = s.revoke(CI, &lease.lease_id).await.unwrap_err();
            assert_eq!(e.status(), 503);
            let l = s.store.get(&lease.lease_id).await.unwrap().unwrap();
            assert_eq!((l.state, l.attempts, l.retry_at), (LeaseState::Revoking, 1, Some(1_000_060)));
            assert!(l.last_error.as_deref().unwrap().contains("cannot connect"), "{:?}", l.last_error);
            s.clock.0.store(1_000_060, Ordering::SeqCst);
            assert_eq!(s.reap(limits()).await.unwrap().failed, 1);
            let l = s.store.get(&lease.lease_id).await.unwrap().unwrap();
            assert_eq!((l.attempts, l.retry_at), (2, Some(1_000_180)), "the wait doubles");
            s.clock.0.store(1_000_179, Ordering::SeqCst);
            assert_eq!(s.reap(limits()).await.unwrap().due, 0, "not due before its retry time");
            *s.users.fail_deletes.lock().unwrap() = false;
            s.clock.0.store(1_000_180, Ordering::SeqCst);
            assert_eq!(s.reap(limits()).await.unwrap().revoked, 1);
            let l = s.store.get(&lease.lease_id).await.unwrap().unwrap();
            assert_eq!((l.state, l.attempts), (LeaseState::Revoked, 3));
            assert!(!s.users.has(&lease.username));
            assert_eq!(retry_delay(40), RETRY_MAX);
        });
    }

    #[test]
    fn a_failed_creation_leaves_no_user_and_no_live_lease() {
        block_on(async {
            let s = service(Some(1));
            *s.users.fail_creates.lock().unwrap() = true;
            assert_eq!(s.issue(CI, "ci", None).await.unwrap_err().status(), 503);
            let all = leases(&s);
            assert_eq!((all.len(), all[0].state), (1, LeaseState::Revoked));
            assert!(all[0].last_error.as_deref().unwrap().starts_with("issuing failed"));
            *s.users.fail_creates.lock().unwrap() = false;
            s.issue(CI, "ci", None).await.expect("the failed issue holds no slot of max_leases");
        });
    }

    #[test]
    fn a_rotated_admin_secret_is_read_again_when_the_database_refuses_it() {
        block_on(async {
            let s = service(None);
            s.issue(CI, "ci", None).await.unwrap();
            assert_eq!(s.secrets.reads.load(Ordering::SeqCst), 1, "read once, then cached");
            s.issue(CI, "ci", None).await.unwrap();
            assert_eq!(s.secrets.reads.load(Ordering::SeqCst), 1);
            *s.users.admin_password.lock().unwrap() = "p2".into();
            s.secrets.values.lock().unwrap().insert(ADMIN.into(), admin_secret("p2"));
            s.issue(CI, "ci", None).await.unwrap();
            assert_eq!(s.secrets.reads.load(Ordering::SeqCst), 2);
            *s.users.admin_password.lock().unwrap() = "p3".into();
            assert_eq!(s.issue(CI, "ci", None).await.unwrap_err().status(), 503);
        });
    }

    #[test]
    fn the_sweep_drops_users_of_keyturn_form_without_a_live_lease_only() {
        block_on(async {
            let s = service(None);
            let live = s.issue(CI, "ci", None).await.unwrap().lease;
            let revoked = s.issue(CI, "ci", None).await.unwrap().lease;
            s.revoke(CI, &revoked.lease_id).await.unwrap();
            for name in [
                "kt_ci_0123456789abcdefghij".to_owned(), // no lease: a crash before the write
                revoked.username.clone(),                // its lease is revoked
                format!("kt_other_{}", live.lease_id),   // a live lease id under another name
                "kt_manual".to_owned(),                  // not keyturn's form: left alone
                "kt_ci_0123456789ABCDEFGHIJ".to_owned(), // not keyturn's form
            ] {
                s.users.users.lock().unwrap().insert(name, 0);
            }
            let report = s.reap(limits()).await.unwrap();
            let mut dropped = report.orphans_dropped.clone();
            dropped.sort();
            let mut expected = vec![
                "kt_ci_0123456789abcdefghij".to_owned(),
                revoked.username.clone(),
                format!("kt_other_{}", live.lease_id),
            ];
            expected.sort();
            assert_eq!(dropped, expected);
            assert!(
                s.users.has(&live.username) && s.users.has("kt_manual") && s.users.has("kt_ci_0123456789ABCDEFGHIJ")
            );
        });
    }

    #[test]
    fn a_lease_of_a_removed_role_is_still_revocable() {
        block_on(async {
            let s = service(None);
            let lease = s.issue(CI, "ci", None).await.unwrap().lease;
            let s = LeaseService { roles: Roles::from_toml("").unwrap(), ..s };
            assert_eq!(s.renew(CI, &lease.lease_id, None).await.unwrap_err().status(), 409);
            s.revoke(CI, &lease.lease_id).await.unwrap();
            assert!(!s.users.has(&lease.username));
        });
    }

    #[test]
    fn the_reaper_stops_starting_work_at_its_deadline() {
        block_on(async {
            let s = service(None);
            s.issue(CI, "ci", Some(Duration::from_secs(1))).await.unwrap();
            s.clock.0.store(1_000_001, Ordering::SeqCst);
            let report = s.reap(ReapLimits { deadline: Instant::now(), ..limits() }).await.unwrap();
            assert!(report.stopped_at_deadline && report.revoked == 0);
            assert_eq!(s.reap(limits()).await.unwrap().revoked, 1);
        });
    }

    #[test]
    fn an_sts_session_is_tagged_with_its_lease_and_caller_and_cannot_be_ended_or_extended() {
        block_on(async {
            let s = service(None);
            let issued = s.issue(CI, "deploy", Some(Duration::from_secs(60))).await.unwrap();
            let lease = issued.lease.clone();
            assert_eq!(lease.expires_at - lease.issued_at, 900, "raised to STS's 15 minutes, and said so");
            assert_eq!(lease.grant, Grant::StsSession { role_arn: "arn:aws:iam::123456789012:role/deploy".into() });
            let asked = s.aws.assumed.lock().unwrap()[0].clone();
            assert_eq!(asked.session_name, format!("ci-runner.job-1.{}", lease.lease_id));
            assert_eq!(asked.duration, Duration::from_secs(900));
            assert_eq!(asked.external_id.as_deref(), Some("ext-1"));
            assert!(asked.session_policy.as_deref().unwrap().contains("s3:GetObject"));
            assert!(asked.tags.contains(&(aws::tag::LEASE_ID.into(), lease.lease_id.clone())));
            assert!(asked.tags.contains(&(aws::tag::CALLER.into(), CI.into())));
            assert_eq!(s.renew(CI, &lease.lease_id, None).await.unwrap_err().status(), 409);
            let e = s.revoke(CI, &lease.lease_id).await.unwrap_err();
            assert_eq!(e.status(), 409);
            assert!(e.to_string().contains("cannot end early"), "{e}");
            assert_eq!(s.issue(CI, "deploy", None).await.unwrap_err().status(), 429, "the session holds its slot");
            s.clock.0.store(lease.expires_at, Ordering::SeqCst);
            let report = s.reap(limits()).await.unwrap();
            assert_eq!(report.revoked, 1, "expired: recorded as over, which frees the slot");
            assert_eq!(s.store.get(&lease.lease_id).await.unwrap().unwrap().state, LeaseState::Revoked);
            s.issue(CI, "deploy", None).await.unwrap();
        });
    }

    #[test]
    fn a_refused_assume_role_leaves_no_live_lease() {
        block_on(async {
            let s = service(None);
            *s.aws.fail_assume.lock().unwrap() = true;
            let e = s.issue(CI, "deploy", None).await.unwrap_err();
            assert_eq!(e.status(), 500, "a trust policy is the deployment's to fix: {e}");
            assert!(e.to_string().contains("AssumeRole"), "{e}");
            let all = leases(&s);
            assert_eq!((all.len(), all[0].state), (1, LeaseState::Revoked));
            *s.aws.fail_assume.lock().unwrap() = false;
            s.issue(CI, "deploy", None).await.expect("the failed issue holds no slot");
        });
    }

    #[test]
    fn callers_outside_allowed_principals_reach_no_aws_api() {
        block_on(async {
            let s = service(None);
            for role in ["deploy", "legacy", "pg-iam"] {
                assert_eq!(s.issue(STRANGER, role, None).await.unwrap_err().status(), 403);
                assert_eq!(s.issue(OPS, role, None).await.unwrap_err().status(), 403, "admins renew and revoke only");
            }
            assert_eq!(s.aws.calls.load(Ordering::SeqCst), 0);
            assert!(leases(&s).is_empty());
        });
    }

    #[test]
    fn an_iam_user_lives_until_revoked_or_expired_and_renewal_moves_its_expiry() {
        block_on(async {
            let s = service(None);
            let issued = s.issue(CI, "legacy", None).await.unwrap();
            let lease = issued.lease.clone();
            assert_eq!(lease_id_of("kt_", &lease.username), Some(lease.lease_id.as_str()));
            assert!(matches!(issued.secret, IssuedSecret::Aws { propagation: Some(_), .. }));
            assert_eq!(s.aws.users.lock().unwrap()[&lease.username], lease.expires_at);
            s.clock.0.store(1_000_600, Ordering::SeqCst);
            let renewed = s.renew(CI, &lease.lease_id, Some(Duration::from_secs(7200))).await.unwrap();
            assert_eq!(s.aws.users.lock().unwrap()[&lease.username], renewed.lease.expires_at);
            s.revoke(CI, &lease.lease_id).await.unwrap();
            assert!(!s.aws.has(&lease.username));

            let short = s.issue(CI, "legacy", Some(Duration::from_secs(60))).await.unwrap().lease;
            s.clock.0.store(short.expires_at, Ordering::SeqCst);
            assert_eq!(s.reap(limits()).await.unwrap().revoked, 1);
            assert!(!s.aws.has(&short.username));
        });
    }

    #[test]
    fn a_half_created_iam_user_is_deleted_at_once_and_an_orphan_by_the_reaper() {
        block_on(async {
            let s = service(None);
            *s.aws.fail_after_create.lock().unwrap() = true;
            assert_eq!(s.issue(CI, "legacy", None).await.unwrap_err().status(), 500);
            assert!(s.aws.users.lock().unwrap().is_empty(), "the half-made user was deleted");
            assert_eq!(leases(&s)[0].state, LeaseState::Revoked);
            *s.aws.fail_after_create.lock().unwrap() = false;
            // A user left by a crash between CreateUser and the lease's revocation.
            let live = s.issue(CI, "legacy", None).await.unwrap().lease;
            s.aws.users.lock().unwrap().insert("kt_legacy_0123456789abcdefghij".into(), 0);
            s.aws.users.lock().unwrap().insert("kt_someone_else".into(), 0);
            let report = s.reap(limits()).await.unwrap();
            assert_eq!(report.orphans_dropped, ["kt_legacy_0123456789abcdefghij"]);
            assert!(s.aws.has(&live.username) && s.aws.has("kt_someone_else"));
        });
    }

    #[test]
    fn an_rds_token_lives_fifteen_minutes_and_longer_is_refused_by_name() {
        block_on(async {
            let s = service(None);
            let issued = s.issue(CI, "pg-iam", Some(Duration::from_secs(60))).await.unwrap();
            assert_eq!(issued.lease.expires_at - issued.lease.issued_at, 900);
            assert_eq!(issued.lease.username, "app_iam");
            let IssuedSecret::RdsToken { token, .. } = &issued.secret else { panic!("{:?}", issued.secret) };
            assert!(token.expose_secret().contains("DBUser=app_iam"));
            let e = s.issue(CI, "pg-iam", Some(Duration::from_secs(3600))).await.unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(e.to_string().contains("valid for 15 minutes"), "{e}");
            assert_eq!(s.renew(CI, &issued.lease.lease_id, None).await.unwrap_err().status(), 409);
            assert_eq!(s.revoke(CI, &issued.lease.lease_id).await.unwrap_err().status(), 409);
        });
    }
}
