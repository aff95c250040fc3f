//! Reap: due leases revoked (expired ones, and failed revocations whose retry time came),
//! then each kind's orphan sweep.

use std::collections::BTreeMap;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use super::{LeaseService, Ports, ReapLimits, ReapReport, REAPER};
use crate::lease::kind::{
    self,
    io::{Orphans, SweepReport},
};
use crate::lease::name::lease_id_of;
use crate::lease::{ports::Clock as _, store::LeaseStore as _};
use crate::lease::{Lease, LeaseError, LeaseState};

impl<P: Ports> LeaseService<P> {
    /// One reaper run: revokes due leases (expired ones, and failed revocations whose retry
    /// time came), then drops users of keyturn's form that no live lease accounts for.
    pub async fn reap(&self, limits: ReapLimits) -> Result<ReapReport, LeaseError> {
        let now = self.io.clock.now();
        let due = self.io.store.list_due(now, limits.batch).await?;
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
            // Each kind sweeps what its roles name: the databases of their admin secrets,
            // the IAM paths of their users.
            let mut sweep = SweepReport::default();
            let roles: Vec<_> = self.roles.iter().map(|r| (r.name.as_str(), &r.kind)).collect();
            kind::sweep(&self.io, &roles, &self.roles.username_prefix, self, &mut sweep).await;
            report.orphans_dropped = sweep.dropped;
            report.sweep_errors = sweep.errors;
        }
        tracing::info!(
            due = report.due,
            revoked = report.revoked,
            failed = report.failed,
            skipped = report.skipped,
            orphans = report.orphans_dropped.len(),
            sweep_errors = report.sweep_errors.len(),
            "reaper run"
        );
        Ok(report)
    }
}

impl<P: Ports> Orphans for LeaseService<P> {
    /// The names, of those listed, that have keyturn's form but no live lease of that name,
    /// each with the lease of its id when one is on record (revoked, or another name's).
    /// Their lease is read after the list, and leases are written before their user is
    /// created, so a user being issued right now always has its lease.
    async fn orphans(&self, listed: Vec<String>) -> Result<Vec<(String, Option<Lease>)>, LeaseError> {
        let prefix = &self.roles.username_prefix;
        let by_id: BTreeMap<String, String> =
            listed.into_iter().filter_map(|user| Some((lease_id_of(prefix, &user)?.to_owned(), user))).collect();
        if by_id.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = by_id.keys().cloned().collect();
        let mut leases: BTreeMap<String, Lease> =
            self.io.store.get_many(&ids).await?.into_iter().map(|l| (l.lease_id.clone(), l)).collect();
        Ok(by_id
            .into_iter()
            .filter_map(|(id, user)| {
                let lease = leases.remove(&id);
                let live = lease.as_ref().is_some_and(|l| l.state.is_live() && l.username == user);
                (!live).then_some((user, lease))
            })
            .collect())
    }
}
