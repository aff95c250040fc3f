//! Issue: the lease written, the credential made by its kind, the lease confirmed.

use super::{Issued, LeaseService, Ports};
use crate::lease::kind::io::IssueRequest;
use crate::lease::store::{Expected, StoreError};
use crate::lease::{decide, name, principal, Lease, LeaseError, LeaseState};
use crate::lease::{ports::Clock as _, store::LeaseStore as _};

impl<P: Ports> LeaseService<P> {
    /// Issues credentials of `role_name` to `caller` for `ttl` (the role's default when
    /// `None`). Nothing is written or created unless the caller may have the role, the TTL
    /// is in range and the role has a free slot.
    ///
    /// The lease is written first (taking a slot of the role's `max_leases`), then the
    /// credential is made. When that fails the lease is revoked at once: whatever part of
    /// the credential exists is removed, or the failure recorded for the reaper.
    ///
    /// Once the credential exists, the lease is confirmed: written again on condition that
    /// nobody moved it meanwhile. A revocation can reach a lease while its credential is
    /// being made (the reaper, when the TTL is about a second; an admin principal listing
    /// leases) and find no user to delete yet; without the confirmation the caller would
    /// get a working password for a revoked lease whose `max_leases` slot is already free.
    /// When the confirmation loses, the credential is deleted again and the caller gets an
    /// error, never the credential.
    pub async fn issue(
        &self,
        caller: &str,
        role_name: &str,
        ttl: Option<std::time::Duration>,
    ) -> Result<Issued, LeaseError> {
        // A role that does not exist and one the caller may not have get the same answer:
        // a caller that matches no role must not learn the roles' names by trying them.
        let role = self
            .roles
            .get(role_name)
            .filter(|role| principal::principal_allowed(caller, &role.allowed_principals))
            .ok_or_else(|| LeaseError::Forbidden(format!("{caller} may not request role {role_name:?}")))?;
        let ttl = decide::issue_ttl(role, ttl)?;
        let lease_id = name::new_lease_id();
        let req = IssueRequest {
            role: &role.name,
            lease_id: &lease_id,
            caller,
            username_prefix: &self.roles.username_prefix,
            ttl,
        };
        let prepared = role.kind.prepare(&self.io, &req).await?;
        let now = self.io.clock.now();
        let lease = Lease {
            lease_id: lease_id.clone(),
            role: role.name.clone(),
            username: prepared.username,
            credential: prepared.credential,
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
            server_expiry: prepared.server_expiry,
        };
        self.io.store.put_new(&lease, role.max_leases).await?;
        let made = match role.kind.make(&self.io, &req, &lease).await {
            Ok(made) => made,
            Err(e) => {
                let cleaned = self.abandon(lease, &e.to_string()).await;
                tracing::warn!(%lease_id, error = %e, cleaned_up = cleaned.is_ok(), "issue failed");
                return Err(e);
            }
        };
        let mut confirmed = lease.clone();
        if let Some(server_expiry) = made.server_expiry {
            confirmed.server_expiry = server_expiry;
        }
        confirmed.version += 1;
        match self.io.store.update(&confirmed, Expected::of(&lease)).await {
            Ok(()) => {}
            Err(StoreError::ConditionFailed(_)) => {
                // Revoked (or being revoked) meanwhile, maybe before the user existed: delete
                // what was just made. Should that fail, the user has no live lease, and the
                // reaper's orphan sweep drops it.
                let deleted = lease.credential.delete(&self.io, &lease).await;
                tracing::warn!(
                    lease_id = %lease.lease_id, role = %lease.role, deleted_again = deleted.is_ok(),
                    "lease revoked while it was being issued"
                );
                return Err(LeaseError::Conflict(format!(
                    "lease {:?} of role {:?} was revoked while it was being issued (a TTL of {} s may be too short to \
                     issue); nothing was issued: request again",
                    lease.lease_id,
                    lease.role,
                    lease.expires_at.saturating_sub(lease.issued_at)
                )));
            }
            // The lease stays as written and expires: its credential is removed then.
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            lease_id = %confirmed.lease_id, role = role_name, kind = confirmed.credential.kind(),
            username = %confirmed.username, caller, expires_at = confirmed.expires_at,
            server_expiry = confirmed.server_expiry, "credentials issued"
        );
        Ok(Issued { lease: confirmed, secret: made.secret })
    }

    /// A lease whose credential could not be made: revoked at once as if it had expired.
    async fn abandon(&self, lease: Lease, why: &str) -> Result<(), LeaseError> {
        let mut next = lease.clone();
        next.state = LeaseState::Revoking;
        next.retry_at = Some(self.io.clock.now());
        next.last_error = Some(format!("issuing failed: {why}"));
        next.revoked_by = Some(lease.caller_arn.clone());
        next.version += 1;
        self.io.store.update(&next, Expected::of(&lease)).await?;
        self.finish_revocation(next).await.map(drop)
    }
}
