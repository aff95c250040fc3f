//! Revoke: the lease marked `Revoking`, its credential deleted by its kind, the lease
//! marked `Revoked`; a failure recorded and retried with backoff.

use super::{gone, LeaseService, Ports};
use crate::lease::store::{Expected, StoreError};
use crate::lease::{decide, Lease, LeaseError, LeaseState};
use crate::lease::{ports::Clock as _, store::LeaseStore as _};

/// How long a failed revocation waits before the next attempt: doubling from a minute (the
/// reaper's schedule), capped at an hour.
const RETRY_FIRST: u64 = 60;
pub(super) const RETRY_MAX: u64 = 3600;

impl<P: Ports> LeaseService<P> {
    /// Revokes `lease_id` now. Revoking a revoked lease succeeds.
    pub async fn revoke(&self, caller: &str, lease_id: &str) -> Result<Lease, LeaseError> {
        let lease = self.lease_for(caller, lease_id).await?;
        if !lease.credential.is_revocable() && lease.state == LeaseState::Active {
            return Err(LeaseError::Conflict(format!(
                "lease {lease_id:?} is an {} credential, which AWS cannot end early: it stays valid until it \
                 expires at {}",
                lease.credential.kind(),
                lease.expires_at
            )));
        }
        self.revoke_lease(lease, caller, false).await
    }

    /// Moves a lease to `Revoking` (recording who asked) and finishes its revocation. A
    /// lease someone else moved meanwhile is read again and taken from where it is; with
    /// `only_if_expired` (the reaper, which finds leases through an eventually consistent
    /// index) an active lease is left alone unless it is still expired as read again.
    pub(super) async fn revoke_lease(
        &self,
        mut lease: Lease,
        by: &str,
        only_if_expired: bool,
    ) -> Result<Lease, LeaseError> {
        for _ in 0..3 {
            match lease.state {
                LeaseState::Revoked => return Ok(lease),
                LeaseState::Active if only_if_expired && !decide::is_expired(&lease, self.io.clock.now()) => {
                    return Ok(lease)
                }
                LeaseState::Revoking => {
                    return self.finish_revocation(lease).await;
                }
                LeaseState::Active => {
                    let mut next = lease.clone();
                    next.state = LeaseState::Revoking;
                    next.retry_at = Some(self.io.clock.now());
                    next.revoked_by = Some(by.to_owned());
                    next.version += 1;
                    match self.io.store.update(&next, Expected::of(&lease)).await {
                        Ok(()) => lease = next,
                        Err(StoreError::ConditionFailed(_)) => {
                            lease = self.io.store.get(&lease.lease_id).await?.ok_or_else(|| gone(&lease.lease_id))?;
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
    pub(super) async fn finish_revocation(&self, lease: Lease) -> Result<Lease, LeaseError> {
        debug_assert_eq!(lease.state, LeaseState::Revoking);
        let now = self.io.clock.now();
        let deleted = lease.credential.delete(&self.io, &lease).await;
        let mut next = lease.clone();
        next.version += 1;
        next.attempts += 1;
        let result = match deleted {
            Ok(outcome) => {
                next.state = LeaseState::Revoked;
                next.revoked_at = Some(now);
                next.retry_at = None;
                tracing::info!(
                    lease_id = %lease.lease_id, role = %lease.role, kind = lease.credential.kind(),
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
        match self.io.store.update(&next, Expected::of(&lease)).await {
            Ok(()) | Err(StoreError::ConditionFailed(_)) => result.map(|()| next),
            Err(e) => Err(e.into()),
        }
    }
}

/// Backoff after `attempts` failed revocations.
pub(super) fn retry_delay(attempts: u32) -> u64 {
    RETRY_FIRST.saturating_mul(1 << attempts.saturating_sub(1).min(12)).min(RETRY_MAX)
}
