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
            // the IAM paths of their users. A kind without roles has nowhere to look, and
            // is not asked (no call).
            let roles: Vec<_> =
                self.roles.iter().filter(|r| r.kind.swept()).map(|r| (r.name.as_str(), &r.kind)).collect();
            self.note_unswept(&roles);
            if !roles.is_empty() {
                let mut sweep = SweepReport::default();
                kind::sweep(&self.io, &roles, &self.roles.username_prefix, self, &mut sweep).await;
                report.orphans_dropped = sweep.dropped;
                report.sweep_errors = sweep.errors;
            }
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

impl<P: Ports> LeaseService<P> {
    /// Reads each database role's admin secret once (where RDS manages it, finds its
    /// endpoint too) and logs, per secret that cannot be used, one error line naming its
    /// roles, the secret's ARN, why, and what usually fixes it; never a value. The reaper
    /// runs it at cold start, where a minute's latency costs nothing, so that a deployment
    /// whose admin secrets it cannot read says so before the first revocation fails; the
    /// issuer does not (its cold start stays lean), and the secrets read are kept. Returns
    /// the problems, one line each.
    pub async fn check_admin_secrets(&self) -> Vec<String> {
        let mut secrets: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for role in self.roles.iter() {
            if let kind::RoleKind::Database(db) = &role.kind {
                secrets.entry(db.admin_secret.as_str()).or_default().push(role.name.as_str());
            }
        }
        let mut problems = Vec::new();
        for (arn, roles) in secrets {
            let roles = roles.join(", ");
            if let Err(e) = self.io.admins.login(arn, &roles, false).await {
                let hint = admin_secret_hint(&e.to_string());
                tracing::error!(roles, admin_secret = arn, error = %e, hint, "admin secret cannot be used");
                problems.push(format!("{e} ({hint})"));
            }
        }
        problems
    }

    /// Says once per container which kinds the orphan sweep skips for want of roles (the
    /// roles file is the same for the container's life), rather than every minute.
    fn note_unswept(&self, swept: &[(&str, &kind::RoleKind)]) {
        self.sweep_noted.call_once(|| {
            let unswept: Vec<&str> = kind::RoleKind::swept_kinds()
                .into_iter()
                .filter(|name| !swept.iter().any(|(_, k)| k.name() == *name))
                .collect();
            if unswept.is_empty() {
                return;
            }
            let kinds = unswept.join(", ");
            if swept.is_empty() {
                tracing::info!(
                    kinds,
                    "orphan sweep skipped: the roles file has no role of a kind that makes users, so there is \
                     nothing to sweep; due leases (of any role, also one removed from the file) are still revoked"
                );
            } else {
                tracing::info!(kinds, "orphan sweep: no role of these kinds, nothing to sweep for them");
            }
        });
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

/// What usually fixes an admin secret that cannot be used, from the failure's words.
fn admin_secret_hint(problem: &str) -> &'static str {
    if problem.contains("KMS") || problem.contains("DecryptionFailure") {
        "not decryptable: the key policy of the secret's KMS key must let the function's role decrypt through Secrets \
         Manager"
    } else if problem.contains("AccessDenied") {
        "access denied: the template's LeaseAdminSecretArns lacks it (the functions may read only the secrets listed \
         there); add its full ARN and deploy again"
    } else if problem.contains("does not exist") {
        "not found: check the ARN in the roles file (the full ARN, with its random suffix, in this region)"
    } else if problem.contains("DescribeDB") || problem.contains("master user secret") {
        "the RDS lookup failed: an admin secret without host must be the one RDS manages for that instance or cluster"
    } else {
        "check the secret's JSON (engine, host, username, password) or, for one RDS manages, its tags"
    }
}

#[cfg(test)]
mod tests {
    use super::admin_secret_hint;

    #[test]
    fn each_failure_gets_its_hint() {
        for (problem, hint) in [
            ("GetSecretValue failed: AccessDeniedException: User is not authorized (HTTP 400)", "LeaseAdminSecretArns"),
            ("GetSecretValue failed: AccessDeniedException: Access to KMS is not allowed (HTTP 400)", "KMS key"),
            ("GetSecretValue failed: DecryptionFailure: ... (HTTP 400)", "KMS key"),
            ("role \"ci\"'s admin secret arn:x: it does not exist or has no AWSCURRENT value", "not found"),
            ("its tag names DB instance arn:y, whose master user secret is another one", "RDS lookup"),
            ("missing key \"engine\"", "secret's JSON"),
        ] {
            assert!(admin_secret_hint(problem).contains(hint), "{problem}: {}", admin_secret_hint(problem));
        }
    }
}
