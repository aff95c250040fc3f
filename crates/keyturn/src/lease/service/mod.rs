//! Issuing, renewing, revoking and reaping leases: the imperative shell around
//! [`super::decide`], one file per operation (`issue`, `renew`, `revoke`, `reap`). One
//! [`LeaseService`] per container serves both functions (issue-credentials and
//! reap-leases); its I/O is behind [`Ports`] (the lease table, the database users, AWS,
//! Secrets Manager for admin secrets, the clock) and each kind's part of an operation is
//! the kind's module's ([`super::kind`]).
//!
//! Order of writes, chosen so that a crash at any point leaves nothing unaccounted for:
//!
//! - Issue: the lease is written first (which also takes a slot of the role's
//!   `max_leases`, atomically), then the credential is made (a database or IAM user, an STS
//!   session, an RDS token), then the lease is confirmed. A crash in between leaves a lease
//!   without a user, which expires and is revoked like any other (deleting a user that does
//!   not exist succeeds). The reverse order would leave users no lease knows.
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

mod issue;
mod reap;
mod renew;
mod revoke;
#[cfg(test)]
mod tests;

use std::time::Instant;

use super::admin::Admins;
pub use super::kind::Secret;
use super::name::is_lease_id;
pub use super::ports::{Clock, Io, Ports, SystemClock};
use super::role::{Role, Roles};
use super::{principal, Lease, LeaseError};
use crate::lease::store::LeaseStore as _;
use crate::password::PasswordPolicy;

/// Who revoked a lease that expired.
pub const REAPER: &str = "reaper";
/// The most leases [`LeaseService::list`] returns (the earliest to expire): one query page
/// of the holder index, far above what a caller holds at once in practice.
pub const LIST_MAX: usize = 100;
/// The most live leases [`LeaseService::list_all`] reads for one page: one or two query
/// pages of the `due` index, an answer well under Lambda's 6 MB.
pub const LIST_ALL_PAGE: usize = 500;

/// Which leases to list: of one role, only those whose revocation is failing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub role: Option<String>,
    pub failing: bool,
}

impl ListFilter {
    fn admits(&self, lease: &Lease) -> bool {
        self.role.as_ref().is_none_or(|role| *role == lease.role) && (!self.failing || lease.is_failing())
    }
}

/// A page of every live lease.
#[derive(Debug)]
pub struct AllLeases {
    /// Those of the page that pass the filter.
    pub leases: Vec<Lease>,
    /// Where the next page starts (the last lease read: its `due_at` and id), when more
    /// may follow.
    pub next: Option<(u64, String)>,
}

/// Credentials just issued: the lease and what the caller needs to use them.
#[derive(Debug)]
pub struct Issued {
    pub lease: Lease,
    pub secret: Secret,
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

impl ReapReport {
    /// The run's metrics (the reaper's EMF line).
    pub fn metrics(&self) -> crate::metrics::ReaperMetrics {
        crate::metrics::ReaperMetrics {
            leases_revoked: self.revoked as u64,
            revocations_failed: self.failed as u64,
            orphans_dropped: self.orphans_dropped.len() as u64,
            sweep_errors: self.sweep_errors.len() as u64,
        }
    }
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

/// The lease service: the roles file and the ports. Admin secrets are read once and kept
/// (re-read when the database refuses them: the secret may just have been rotated); the
/// backends keep the admin sessions.
pub struct LeaseService<P: Ports> {
    roles: Roles,
    pub(crate) io: Io<P>,
    /// The reaper said, once for this container, which kinds it has nothing to sweep in.
    sweep_noted: std::sync::Once,
}

impl<P: Ports> LeaseService<P> {
    pub fn new(
        roles: Roles,
        store: P::Store,
        users: P::Users,
        aws: P::Aws,
        admins: Admins<P::Secrets, P::Rds>,
        clock: P::Clock,
        passwords: PasswordPolicy,
    ) -> Self {
        let io = Io { store, users, aws, admins, clock, passwords };
        Self { roles, io, sweep_noted: std::sync::Once::new() }
    }

    /// The lease table (the tests read leases back through it).
    pub fn store(&self) -> &P::Store {
        &self.io.store
    }

    /// The roles `caller` may request.
    pub fn roles_for<'a>(&'a self, caller: &'a str) -> impl Iterator<Item = &'a Role> + 'a {
        self.roles.iter().filter(move |r| principal::principal_allowed(caller, &r.allowed_principals))
    }

    /// The live leases `caller` holds (see [`principal::holds`]: those it may renew and
    /// revoke as their holder), the earliest expiry first, at most [`LIST_MAX`]. An admin
    /// principal gets its own too, not everyone's: it acts on other callers' leases by id.
    /// A lease past its expiry that the reaper has not revoked yet is listed: its credential
    /// may still work until then.
    pub async fn list(&self, caller: &str) -> Result<Vec<Lease>, LeaseError> {
        let leases = self.io.store.list_live_by_holder(caller, LIST_MAX).await?;
        // Checked again here rather than trusted to the index's key: what one caller is
        // shown of another's leases must not depend on how the store matches ARNs.
        Ok(leases.into_iter().filter(|l| l.state.is_live() && principal::holds(caller, &l.holder)).collect())
    }

    /// Every live lease, whoever holds it, for an administrator (a caller matching the roles
    /// file's `admin_principals`; anyone else is refused, 403): by the time the reaper is
    /// due to act on it, [`LIST_ALL_PAGE`] read per call from after `after`, those that pass
    /// `filter` returned (so a page may hold fewer, even none, and still have a next).
    pub async fn list_all(
        &self,
        caller: &str,
        filter: &ListFilter,
        after: Option<(u64, String)>,
    ) -> Result<AllLeases, LeaseError> {
        if !principal::principal_allowed(caller, &self.roles.admin_principals) {
            return Err(LeaseError::Forbidden(format!(
                "{caller} may not list every lease: only the roles file's admin_principals may"
            )));
        }
        // One more than a page: whether another follows.
        let mut read = self.io.store.list_live(after, LIST_ALL_PAGE + 1).await?;
        let more = read.len() > LIST_ALL_PAGE;
        read.truncate(LIST_ALL_PAGE);
        let next = if more { read.last().and_then(|l| Some((l.due_at()?, l.lease_id.clone()))) } else { None };
        let leases = read.into_iter().filter(|l| l.state.is_live() && filter.admits(l)).collect();
        Ok(AllLeases { leases, next })
    }

    /// The caller's own live leases ([`LeaseService::list`]) that pass `filter`.
    pub async fn list_filtered(&self, caller: &str, filter: &ListFilter) -> Result<Vec<Lease>, LeaseError> {
        Ok(self.list(caller).await?.into_iter().filter(|l| filter.admits(l)).collect())
    }

    /// The lease, if `caller` may act on it.
    async fn lease_for(&self, caller: &str, lease_id: &str) -> Result<Lease, LeaseError> {
        if !is_lease_id(lease_id) {
            return Err(LeaseError::UnknownLease(lease_id.to_owned()));
        }
        let lease = self.io.store.get(lease_id).await?.ok_or_else(|| LeaseError::UnknownLease(lease_id.to_owned()))?;
        if !principal::may_act(caller, &lease.holder, &self.roles.admin_principals) {
            return Err(LeaseError::Forbidden(format!("{caller} does not hold lease {lease_id:?}")));
        }
        Ok(lease)
    }
}

fn gone(lease_id: &str) -> LeaseError {
    LeaseError::Internal(format!("lease {lease_id:?} disappeared from the lease table"))
}
