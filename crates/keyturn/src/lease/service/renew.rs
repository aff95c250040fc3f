//! Renew: the server's expiry moved by the lease's kind, then the lease.

use std::time::Duration;

use super::{LeaseService, Ports, Renewed};
use crate::lease::store::Expected;
use crate::lease::{decide, principal, LeaseError};
use crate::lease::{ports::Clock as _, store::LeaseStore as _};

impl<P: Ports> LeaseService<P> {
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
        let admin = principal::principal_allowed(caller, &self.roles.admin_principals);
        if !admin && !principal::principal_allowed(caller, &role.allowed_principals) {
            return Err(LeaseError::Forbidden(format!("{caller} may no longer use role {:?}", role.name)));
        }
        let renewal = decide::renew_until(&lease, role, ttl, self.io.clock.now())?;
        lease.credential.renew(&self.io, &role.kind, &lease, renewal.expires_at).await?;
        let mut next = lease.clone();
        next.expires_at = renewal.expires_at;
        next.version += 1;
        self.io.store.update(&next, Expected::of(&lease)).await?;
        tracing::info!(lease_id, caller, expires_at = next.expires_at, capped = renewal.capped, "lease renewed");
        Ok(Renewed { lease: next, capped: renewal.capped })
    }
}
