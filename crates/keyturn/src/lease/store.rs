//! Where leases are kept: DynamoDB in production (later, under `aws/`), an in-memory fake in
//! unit tests. Every write is conditional, so concurrent issuers, renewers and reapers never
//! overwrite one another: a lost race is [`StoreError::ConditionFailed`], never a silent
//! last-writer-wins.

use std::future::Future;

use super::{Lease, LeaseState};

/// A failure of the lease store.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// `put_new` found a lease with that id.
    #[error("lease {0:?} already exists")]
    AlreadyExists(String),
    /// `put_new` would take the role past its `max_leases`; nothing was written.
    #[error("role {role:?} has {live} live leases, its max_leases")]
    AtCapacity { role: String, live: u64 },
    /// `update` found the lease gone, or not in the expected state and version: someone else
    /// changed it meanwhile.
    #[error("lease {0:?} changed meanwhile")]
    ConditionFailed(String),
    #[error("{operation} failed: {message}")]
    Backend {
        operation: &'static str,
        message: String,
        /// Throttling, timeouts and server errors: worth retrying as they are.
        retryable: bool,
    },
}

/// What an update expects to find: the state and version it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub state: LeaseState,
    pub version: u64,
}

impl Expected {
    /// What the lease as read says.
    pub fn of(lease: &Lease) -> Self {
        Self { state: lease.state, version: lease.version }
    }
}

/// The operations leases need from their table. Reads by id are strongly consistent: the
/// orphan sweep relies on seeing a lease written just before its user was created.
pub trait LeaseStore: Send + Sync {
    /// Writes a new lease and counts it against its role's live leases, atomically: fails
    /// with [`StoreError::AlreadyExists`] if its id is taken, and with
    /// [`StoreError::AtCapacity`] (writing nothing) if the role already has `max_live` live
    /// leases. The count is kept for every role, capped or not, so that a cap set later is
    /// exact from the start.
    fn put_new(&self, lease: &Lease, max_live: Option<u32>) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The lease with that id, if any.
    fn get(&self, lease_id: &str) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;
    /// The leases with those ids that exist, in no particular order.
    fn get_many(&self, lease_ids: &[String]) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;
    /// Replaces the lease `next.lease_id` with `next` if it is still as `expected` says
    /// (compare-and-set), else [`StoreError::ConditionFailed`]. `next.version` must be
    /// `expected.version + 1`. An update that makes a live lease `Revoked` takes it off its
    /// role's live count in the same atomic write.
    fn update(&self, next: &Lease, expected: Expected) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Up to `limit` live leases whose [`Lease::due_at`] is at or before `now`, the earliest
    /// first: the reaper's work, found without reading every lease.
    fn list_due(&self, now: u64, limit: usize) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;
    /// Up to `limit` live leases, every holder's, by [`Lease::due_at`] and then id, those
    /// after `after` (the `(due_at, lease_id)` of the last lease of the previous page):
    /// an administrator's listing, read from the same index as [`LeaseStore::list_due`].
    fn list_live(
        &self,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;
    /// Up to `limit` live leases whose `holder` is exactly `holder` (byte for byte:
    /// no case folding), the earliest expiry first: what a caller lists as its own, found
    /// without reading other callers' leases or revoked ones.
    fn list_live_by_holder(
        &self,
        holder: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;
    /// How many leases of the role are live (their user may exist), as `max_leases` counts.
    fn count_live(&self, role: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// An in-memory [`LeaseStore`] with the same conditions as the DynamoDB one: for unit tests,
/// and for the bench to measure the database work without the table's round trips. Not
/// durable; never a deployment's store.
pub mod memory {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct MemoryStore {
        pub(crate) leases: Mutex<BTreeMap<String, Lease>>,
        /// Live leases per role, kept as the DynamoDB adapter keeps its counter items.
        live: Mutex<BTreeMap<String, u64>>,
    }

    impl LeaseStore for MemoryStore {
        async fn put_new(&self, lease: &Lease, max_live: Option<u32>) -> Result<(), StoreError> {
            let mut map = self.leases.lock().unwrap();
            let mut live = self.live.lock().unwrap();
            if map.contains_key(&lease.lease_id) {
                return Err(StoreError::AlreadyExists(lease.lease_id.clone()));
            }
            let count = live.entry(lease.role.clone()).or_default();
            if max_live.is_some_and(|max| *count >= u64::from(max)) {
                return Err(StoreError::AtCapacity { role: lease.role.clone(), live: *count });
            }
            *count += 1;
            map.insert(lease.lease_id.clone(), lease.clone());
            Ok(())
        }

        async fn get(&self, lease_id: &str) -> Result<Option<Lease>, StoreError> {
            Ok(self.leases.lock().unwrap().get(lease_id).cloned())
        }

        async fn get_many(&self, lease_ids: &[String]) -> Result<Vec<Lease>, StoreError> {
            let map = self.leases.lock().unwrap();
            Ok(lease_ids.iter().filter_map(|id| map.get(id).cloned()).collect())
        }

        async fn update(&self, next: &Lease, expected: Expected) -> Result<(), StoreError> {
            if next.version != expected.version + 1 {
                return Err(StoreError::Backend {
                    operation: "update",
                    message: format!("lease {:?}: an update must bump the version by one", next.lease_id),
                    retryable: false,
                });
            }
            let mut map = self.leases.lock().unwrap();
            match map.get_mut(&next.lease_id) {
                Some(current) if Expected::of(current) == expected => {
                    if current.state.is_live() && !next.state.is_live() {
                        *self.live.lock().unwrap().entry(current.role.clone()).or_default() -= 1;
                    }
                    *current = next.clone();
                    Ok(())
                }
                _ => Err(StoreError::ConditionFailed(next.lease_id.clone())),
            }
        }

        async fn list_due(&self, now: u64, limit: usize) -> Result<Vec<Lease>, StoreError> {
            let map = self.leases.lock().unwrap();
            let mut due: Vec<Lease> =
                map.values().filter(|l| l.due_at().is_some_and(|at| at <= now)).cloned().collect();
            due.sort_by_key(|l| l.due_at());
            due.truncate(limit);
            Ok(due)
        }

        async fn list_live(&self, after: Option<(u64, String)>, limit: usize) -> Result<Vec<Lease>, StoreError> {
            let map = self.leases.lock().unwrap();
            let mut live: Vec<(u64, &Lease)> = map.values().filter_map(|l| Some((l.due_at()?, l))).collect();
            live.sort_by(|(a, x), (b, y)| (a, &x.lease_id).cmp(&(b, &y.lease_id)));
            Ok(live
                .into_iter()
                .filter(|(at, l)| after.as_ref().is_none_or(|(after_at, id)| (at, &l.lease_id) > (after_at, id)))
                .take(limit)
                .map(|(_, l)| l.clone())
                .collect())
        }

        async fn list_live_by_holder(&self, holder: &str, limit: usize) -> Result<Vec<Lease>, StoreError> {
            let map = self.leases.lock().unwrap();
            let mut held: Vec<Lease> =
                map.values().filter(|l| l.state.is_live() && l.holder == holder).cloned().collect();
            // Stable: leases expiring in the same second stay in id order.
            held.sort_by_key(|l| l.expires_at);
            held.truncate(limit);
            Ok(held)
        }

        async fn count_live(&self, role: &str) -> Result<u64, StoreError> {
            Ok(self.live.lock().unwrap().get(role).copied().unwrap_or(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;
    use crate::lease::decide;
    use crate::lease::role::Roles;
    use std::time::Duration;

    fn lease(id: &str, expires_at: u64) -> Lease {
        Lease::example(id, expires_at)
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn put_new_never_overwrites() {
        block_on(async {
            let store = MemoryStore::default();
            store.put_new(&lease("a", 1900), None).await.unwrap();
            let mut other = lease("a", 9999);
            other.holder = "someone else".into();
            assert_eq!(store.put_new(&other, None).await, Err(StoreError::AlreadyExists("a".into())));
            assert_eq!(store.get("a").await.unwrap().unwrap().expires_at, 1900);
        });
    }

    #[test]
    fn a_renewal_racing_a_revocation_loses_cleanly() {
        block_on(async {
            let text = r#"[[role]]
name = "ci"
kind = "database"
admin_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:a"
groups = ["g"]
default_ttl = "15m"
max_ttl = "1h"
"#;
            let roles = Roles::from_toml(text).unwrap();
            let role = roles.get("ci").unwrap();
            let store = MemoryStore::default();
            store.put_new(&lease("a", 1900), None).await.unwrap();

            // Both read the active lease.
            let read_by_renewer = store.get("a").await.unwrap().unwrap();
            let read_by_revoker = read_by_renewer.clone();

            let mut revoking = read_by_revoker.clone();
            revoking.state = LeaseState::Revoking;
            revoking.version += 1;
            store.update(&revoking, Expected::of(&read_by_revoker)).await.unwrap();

            let renewal = decide::renew_until(&read_by_renewer, role, Some(Duration::from_secs(600)), 1500).unwrap();
            let mut renewed = read_by_renewer.clone();
            renewed.expires_at = renewal.expires_at;
            renewed.version += 1;
            let lost = store.update(&renewed, Expected::of(&read_by_renewer)).await.unwrap_err();
            assert_eq!(crate::lease::LeaseError::from(lost).code(), "conflict");
            assert_eq!(store.get("a").await.unwrap().unwrap().state, LeaseState::Revoking);
        });
    }

    #[test]
    fn expired_and_live_leases_are_found_by_time_and_role() {
        block_on(async {
            let store = MemoryStore::default();
            for (id, exp) in [("a", 1500), ("b", 1200), ("c", 3000), ("d", 1100)] {
                store.put_new(&lease(id, exp), None).await.unwrap();
            }
            let mut gone = store.get("d").await.unwrap().unwrap();
            let expected = Expected::of(&gone);
            gone.state = LeaseState::Revoked;
            gone.version += 1;
            store.update(&gone, expected).await.unwrap();

            let due: Vec<String> = store.list_due(1500, 10).await.unwrap().into_iter().map(|l| l.lease_id).collect();
            assert_eq!(due, ["b", "a"]);
            assert_eq!(store.list_due(1500, 1).await.unwrap().len(), 1);
            assert_eq!(store.count_live("ci").await.unwrap(), 3);
            assert_eq!(store.count_live("other").await.unwrap(), 0);
        });
    }

    #[test]
    fn a_callers_live_leases_are_found_by_its_exact_arn_earliest_expiry_first() {
        block_on(async {
            let store = MemoryStore::default();
            let holder = Lease::example("x", 0).holder;
            for (id, exp, caller) in [("a", 1500, &holder), ("b", 1200, &holder), ("c", 1300, &format!("{holder}x"))] {
                store.put_new(&Lease { holder: caller.clone(), ..lease(id, exp) }, None).await.unwrap();
            }
            store.put_new(&lease("d", 1100), None).await.unwrap();
            let d = store.get("d").await.unwrap().unwrap();
            let mut revoked = d.clone();
            revoked.state = LeaseState::Revoked;
            revoked.version += 1;
            store.update(&revoked, Expected::of(&d)).await.unwrap();

            let ids = |leases: Vec<Lease>| leases.into_iter().map(|l| l.lease_id).collect::<Vec<_>>();
            assert_eq!(ids(store.list_live_by_holder(&holder, 10).await.unwrap()), ["b", "a"], "d is revoked");
            assert_eq!(ids(store.list_live_by_holder(&holder, 1).await.unwrap()), ["b"]);
            assert_eq!(store.list_live_by_holder(&holder.to_uppercase(), 10).await.unwrap(), []);
        });
    }

    #[test]
    fn every_live_lease_is_listed_by_due_time_a_page_at_a_time() {
        block_on(async {
            let store = MemoryStore::default();
            for (id, exp) in [("a", 1500), ("b", 1200), ("c", 1500), ("d", 1100)] {
                store.put_new(&lease(id, exp), None).await.unwrap();
            }
            let d = store.get("d").await.unwrap().unwrap();
            let mut revoked = d.clone();
            revoked.state = LeaseState::Revoked;
            revoked.version += 1;
            store.update(&revoked, Expected::of(&d)).await.unwrap();
            let ids = |leases: Vec<Lease>| leases.into_iter().map(|l| l.lease_id).collect::<Vec<_>>();
            assert_eq!(ids(store.list_live(None, 10).await.unwrap()), ["b", "a", "c"]);
            assert_eq!(ids(store.list_live(None, 2).await.unwrap()), ["b", "a"]);
            assert_eq!(ids(store.list_live(Some((1500, "a".into())), 2).await.unwrap()), ["c"]);
            assert_eq!(ids(store.list_live(Some((1500, "c".into())), 2).await.unwrap()), Vec::<String>::new());
        });
    }

    #[test]
    fn capacity_counts_live_leases_and_frees_on_revocation() {
        block_on(async {
            let store = MemoryStore::default();
            store.put_new(&lease("a", 1500), Some(2)).await.unwrap();
            store.put_new(&lease("b", 1500), Some(2)).await.unwrap();
            assert_eq!(
                store.put_new(&lease("c", 1500), Some(2)).await,
                Err(StoreError::AtCapacity { role: "ci".into(), live: 2 })
            );
            assert_eq!(store.get("c").await.unwrap(), None, "a refused lease is not written");
            let a = store.get("a").await.unwrap().unwrap();
            let mut revoked = a.clone();
            revoked.state = LeaseState::Revoked;
            revoked.version += 1;
            store.update(&revoked, Expected::of(&a)).await.unwrap();
            store.put_new(&lease("c", 1500), Some(2)).await.unwrap();
        });
    }

    #[test]
    fn a_failed_revocation_is_due_again_at_its_retry_time() {
        block_on(async {
            let store = MemoryStore::default();
            store.put_new(&lease("a", 1000), None).await.unwrap();
            let a = store.get("a").await.unwrap().unwrap();
            let mut retrying = a.clone();
            retrying.state = LeaseState::Revoking;
            retrying.retry_at = Some(2000);
            retrying.version += 1;
            store.update(&retrying, Expected::of(&a)).await.unwrap();
            assert!(store.list_due(1999, 10).await.unwrap().is_empty());
            assert_eq!(store.list_due(2000, 10).await.unwrap().len(), 1);
        });
    }
}
