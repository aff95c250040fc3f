//! The DynamoDB lease store against moto: each test gets a fresh table made from the store's
//! own schema (`TestEnv::lease_store`) and checks what the `LeaseStore` contract promises,
//! reading the table directly where the promise is about what is (not) written.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use keyturn::aws::dynamodb::{attr, counter_key, DynamoLeaseStore, DUE_INDEX, LIVE_SHARD};
use keyturn::lease::kind::{aws_iam_user, aws_sts, database, rds_iam_token};
use keyturn::lease::store::{Expected, LeaseStore, StoreError};
use keyturn::lease::{Credential, Lease, LeaseState};
use keyturn_tests::TestEnv;

const NOW: u64 = 10_000;

fn lease(id: &str, role: &str, expires_at: u64) -> Lease {
    Lease { role: role.into(), username: format!("kt_{role}_{id}"), ..Lease::example(id, expires_at) }
}

/// `current` changed by `change`, one version on, written with compare-and-set.
async fn update(store: &DynamoLeaseStore, current: &Lease, change: impl FnOnce(&mut Lease)) -> Lease {
    let mut next = current.clone();
    change(&mut next);
    next.version += 1;
    store.update(&next, Expected::of(current)).await.unwrap_or_else(|e| panic!("update {}: {e}", current.lease_id));
    next
}

async fn revoke(store: &DynamoLeaseStore, current: &Lease) -> Lease {
    update(store, current, |l| {
        l.state = LeaseState::Revoked;
        l.revoked_at = Some(NOW);
        l.revoked_by = Some("reaper".into());
    })
    .await
}

/// The raw item with that key, read consistently.
async fn raw_item(store: &DynamoLeaseStore, key: &str) -> Option<HashMap<String, AttributeValue>> {
    let out = store
        .client()
        .get_item()
        .table_name(store.table())
        .key(attr::LEASE_ID, AttributeValue::S(key.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem");
    out.item
}

/// The first page of the whole `due` index, as one Query without a limit returns it.
async fn first_index_page(store: &DynamoLeaseStore) -> QueryOutput {
    store
        .client()
        .query()
        .table_name(store.table())
        .index_name(DUE_INDEX)
        .key_condition_expression("#shard = :live")
        .expression_attribute_names("#shard", attr::DUE_SHARD)
        .expression_attribute_values(":live", AttributeValue::S(LIVE_SHARD.into()))
        .send()
        .await
        .expect("Query")
}

fn ids(leases: &[Lease]) -> Vec<String> {
    leases.iter().map(|l| l.lease_id.clone()).collect()
}

#[tokio::test]
async fn put_new_never_overwrites() {
    let env = TestEnv::new("lease_put_new").await;
    let store = env.lease_store("leases").await;
    let first = lease("a1", "ci", 1900);
    store.put_new(&first, Some(5)).await.unwrap();

    let mut other = lease("a1", "ci", 9999);
    other.holder = "arn:aws:iam::123456789012:user/someone-else".into();
    assert_eq!(store.put_new(&other, Some(5)).await, Err(StoreError::AlreadyExists("a1".into())));
    assert_eq!(store.put_new(&other, None).await, Err(StoreError::AlreadyExists("a1".into())));
    assert_eq!(store.get("a1").await.unwrap(), Some(first));
    assert_eq!(store.count_live("ci").await.unwrap(), 1, "a refused put counts nothing");

    // Taken and at capacity at once: the taken id is the answer.
    assert_eq!(store.put_new(&other, Some(1)).await, Err(StoreError::AlreadyExists("a1".into())));
    // A lease id that could be a counter's key is refused before anything is sent.
    let err = store.put_new(&lease(&counter_key("ci"), "ci", 1900), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { retryable: false, .. }), "{err:?}");
    assert_eq!(store.count_live("ci").await.unwrap(), 1);
}

/// On several threads, so that the 40 requests really overlap: against moto without the
/// harness's DynamoDB lock (`tests/moto_server.py`) this test fails, 12 or 13 written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_leases_is_exact_under_concurrent_issuers() {
    let env = TestEnv::new("lease_capacity").await;
    let store = Arc::new(env.lease_store("leases").await);
    let mut issuers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        issuers.spawn(async move {
            let l = lease(&format!("c{i}"), "ci", 5000);
            (l.lease_id.clone(), store.put_new(&l, Some(10)).await)
        });
    }
    let mut written = Vec::new();
    let mut refused = Vec::new();
    while let Some(joined) = issuers.join_next().await {
        match joined.expect("issuer task") {
            (id, Ok(())) => written.push(id),
            (id, Err(StoreError::AtCapacity { role, live })) => {
                assert_eq!((role.as_str(), live), ("ci", 10), "{id} was refused with the count as it stood");
                refused.push(id);
            }
            (id, Err(e)) => panic!("{id}: {e}"),
        }
    }
    assert_eq!((written.len(), refused.len()), (10, 30));
    assert_eq!(store.count_live("ci").await.unwrap(), 10);
    assert_eq!(store.get_many(&refused).await.unwrap(), [], "a refused lease is not written");
    assert_eq!(store.get_many(&written).await.unwrap().len(), 10);

    // Revoking one frees one slot, and only one.
    let revoked = revoke(&store, &store.get(&written[0]).await.unwrap().unwrap()).await;
    assert_eq!(store.count_live("ci").await.unwrap(), 9);
    store.put_new(&lease("n1", "ci", 5000), Some(10)).await.unwrap();
    assert_eq!(
        store.put_new(&lease("n2", "ci", 5000), Some(10)).await,
        Err(StoreError::AtCapacity { role: "ci".into(), live: 10 })
    );
    // Updating a revoked lease (its audit record) does not free another.
    update(&store, &revoked, |l| l.last_error = Some("note".into())).await;
    assert_eq!(store.count_live("ci").await.unwrap(), 10);

    // Uncapped roles are counted too, so a cap set later is exact from the start.
    store.put_new(&lease("u1", "batch", 5000), None).await.unwrap();
    store.put_new(&lease("u2", "batch", 5000), None).await.unwrap();
    assert_eq!(store.count_live("batch").await.unwrap(), 2);
    assert_eq!(
        store.put_new(&lease("u3", "batch", 5000), Some(2)).await,
        Err(StoreError::AtCapacity { role: "batch".into(), live: 2 })
    );
    assert_eq!(store.count_live("nobody").await.unwrap(), 0);
}

#[tokio::test]
async fn update_is_compare_and_set() {
    let env = TestEnv::new("lease_update").await;
    let store = env.lease_store("leases").await;
    store.put_new(&lease("a1", "ci", 1900), None).await.unwrap();
    let read_by_renewer = store.get("a1").await.unwrap().unwrap();
    let read_by_reaper = read_by_renewer.clone();

    let revoking = update(&store, &read_by_reaper, |l| {
        l.state = LeaseState::Revoking;
        l.retry_at = Some(NOW);
    })
    .await;

    let mut renewed = read_by_renewer.clone();
    renewed.expires_at = 2500;
    renewed.version += 1;
    assert_eq!(
        store.update(&renewed, Expected::of(&read_by_renewer)).await,
        Err(StoreError::ConditionFailed("a1".into())),
        "the stale version loses"
    );
    assert_eq!(store.get("a1").await.unwrap(), Some(revoking.clone()), "and changes nothing");

    // Right version, wrong state; and a lease that does not exist.
    let wrong_state = Expected { state: LeaseState::Active, version: revoking.version };
    let mut next = revoking.clone();
    next.version += 1;
    assert_eq!(store.update(&next, wrong_state).await, Err(StoreError::ConditionFailed("a1".into())));
    let ghost = lease("nope", "ci", 1900);
    let mut ghost_next = ghost.clone();
    ghost_next.version += 1;
    assert_eq!(store.update(&ghost_next, Expected::of(&ghost)).await, Err(StoreError::ConditionFailed("nope".into())));
    assert_eq!(store.get("nope").await.unwrap(), None, "a failed update creates nothing");

    // A revocation that lost its race frees no slot.
    let mut stale_revoke = read_by_renewer.clone();
    stale_revoke.state = LeaseState::Revoked;
    stale_revoke.version += 1;
    assert_eq!(
        store.update(&stale_revoke, Expected::of(&read_by_renewer)).await,
        Err(StoreError::ConditionFailed("a1".into()))
    );
    assert_eq!(store.count_live("ci").await.unwrap(), 1);

    // An update must move the version on by one.
    let mut unbumped = revoking.clone();
    unbumped.attempts = 1;
    let err = store.update(&unbumped, Expected::of(&revoking)).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { retryable: false, .. }), "{err:?}");

    revoke(&store, &revoking).await;
    assert_eq!(store.count_live("ci").await.unwrap(), 0);
}

#[tokio::test]
async fn list_due_finds_live_due_leases_earliest_first() {
    let env = TestEnv::new("lease_due").await;
    let store = env.lease_store("leases").await;
    // Ids in the reverse of due order, so an answer in key order would show.
    for (id, expires_at) in [("a", NOW - 10), ("b", NOW - 20), ("c", NOW - 30), ("d", NOW), ("e", NOW + 1)] {
        store.put_new(&lease(id, "ci", expires_at), Some(100)).await.unwrap();
    }
    store.put_new(&lease("f", "other", NOW - 25), None).await.unwrap();
    // Revoked: never due again, and no longer in the index at all.
    let g = lease("g", "ci", NOW - 100);
    store.put_new(&g, None).await.unwrap();
    revoke(&store, &g).await;
    // Revoking with a retry in the future: not due, though expired.
    let h = lease("h", "ci", NOW - 200);
    store.put_new(&h, None).await.unwrap();
    update(&store, &h, |l| {
        l.state = LeaseState::Revoking;
        l.attempts = 1;
        l.last_error = Some("connection refused".into());
        l.retry_at = Some(NOW + 60);
    })
    .await;
    // Revoking with its retry due: due at the retry time, not at its expiry.
    let i = lease("i", "ci", NOW - 300);
    store.put_new(&i, None).await.unwrap();
    let i = update(&store, &i, |l| {
        l.state = LeaseState::Revoking;
        l.retry_at = Some(NOW - 15);
    })
    .await;

    let due = store.list_due(NOW, 100).await.unwrap();
    assert_eq!(ids(&due), ["c", "f", "b", "i", "a", "d"]);
    assert_eq!(due[3], i, "the leases come back whole");
    assert_eq!(ids(&store.list_due(NOW, 3).await.unwrap()), ["c", "f", "b"], "the earliest, up to the limit");
    assert_eq!(ids(&store.list_due(NOW, 1).await.unwrap()), ["c"]);
    assert_eq!(store.list_due(NOW, 0).await.unwrap(), []);
    assert_eq!(ids(&store.list_due(NOW + 60, 100).await.unwrap()), ["c", "f", "b", "i", "a", "d", "e", "h"]);
    assert_eq!(store.list_due(NOW - 1000, 100).await.unwrap(), []);

    // The index is sparse: a revoked lease and the counters carry no due keys.
    let revoked = raw_item(&store, "g").await.expect("the revoked lease is kept");
    assert!(!revoked.contains_key(attr::DUE_SHARD) && !revoked.contains_key(attr::DUE_AT), "{revoked:?}");
    let counter = raw_item(&store, &counter_key("ci")).await.expect("the counter");
    assert!(!counter.contains_key(attr::DUE_SHARD), "{counter:?}");
    let indexed = first_index_page(&store).await;
    assert_eq!(indexed.count(), 8, "the index holds the 8 live leases and nothing else");
}

#[tokio::test]
async fn a_callers_live_leases_come_from_the_holder_index_earliest_expiry_first() {
    let env = TestEnv::new("lease_holder").await;
    let store = env.lease_store("leases").await;
    const A: &str = "arn:aws:sts::123456789012:assumed-role/ci-runner/job-1";
    const B: &str = "arn:aws:iam::123456789012:user/deployer";
    let held_by =
        |id: &str, caller: &str, expires_at: u64| Lease { holder: caller.into(), ..lease(id, "ci", expires_at) };
    // Ids in the reverse of expiry order, so an answer in key order would show.
    for l in [held_by("a1", A, 3000), held_by("a2", A, 2000), held_by("a3", A, 1000), held_by("b1", B, 1500)] {
        store.put_new(&l, None).await.unwrap();
    }
    let revoked = revoke(&store, &store.get("a2").await.unwrap().unwrap()).await;
    // Being revoked is still live: the holder sees it until it is gone.
    let a1 = store.get("a1").await.unwrap().unwrap();
    let revoking = update(&store, &a1, |l| {
        l.state = LeaseState::Revoking;
        l.retry_at = Some(NOW);
    })
    .await;

    let a = store.list_live_by_holder(A, 100).await.unwrap();
    assert_eq!(ids(&a), ["a3", "a1"], "a2 is revoked");
    assert_eq!(a[1], revoking, "the leases come back whole");
    assert_eq!(ids(&store.list_live_by_holder(A, 1).await.unwrap()), ["a3"], "the earliest, up to the limit");
    assert_eq!(store.list_live_by_holder(A, 0).await.unwrap(), []);
    assert_eq!(ids(&store.list_live_by_holder(B, 100).await.unwrap()), ["b1"]);
    // The key is the exact ARN: another case, a character more or less, another session.
    for other in [
        &A.to_uppercase(),
        &format!("{A} "),
        &A[..A.len() - 1],
        "arn:aws:sts::123456789012:assumed-role/ci-runner/job-2",
        "",
    ] {
        assert_eq!(store.list_live_by_holder(other, 100).await.unwrap(), [], "{other:?}");
    }
    // An ARN DynamoDB would refuse as a key is nobody's, not an error.
    assert_eq!(store.list_live_by_holder(&"a".repeat(5000), 100).await.unwrap(), []);

    // The index is sparse: the revoked lease and the counter carry no live_caller.
    let item = raw_item(&store, &revoked.lease_id).await.expect("the revoked lease is kept");
    assert!(!item.contains_key(attr::LIVE_CALLER), "{item:?}");
    assert!(!raw_item(&store, &counter_key("ci")).await.unwrap().contains_key(attr::LIVE_CALLER));
    // An item from before the index (no live_caller) is not listed, and is once written again.
    let old = held_by("a4", A, 500);
    store.put_new(&old, None).await.unwrap();
    store
        .client()
        .update_item()
        .table_name(store.table())
        .key(attr::LEASE_ID, AttributeValue::S("a4".into()))
        .update_expression("REMOVE #caller")
        .expression_attribute_names("#caller", attr::LIVE_CALLER)
        .send()
        .await
        .expect("UpdateItem");
    assert_eq!(ids(&store.list_live_by_holder(A, 100).await.unwrap()), ["a3", "a1"]);
    update(&store, &old, |l| l.expires_at = 600).await;
    assert_eq!(ids(&store.list_live_by_holder(A, 100).await.unwrap()), ["a4", "a3", "a1"]);
}

#[tokio::test]
async fn list_due_pages_past_one_megabyte() {
    let env = TestEnv::new("lease_due_pages").await;
    let store = env.lease_store("leases").await;
    // 120 due leases of about 10 KB each: more than the 1 MB one Query page returns.
    let error = "x".repeat(10_000);
    let mut expected = Vec::new();
    for n in 0..120u64 {
        let l = lease(&format!("p{n:03}"), "ci", NOW - 1000 + n);
        store.put_new(&l, None).await.unwrap();
        update(&store, &l, |l| {
            l.state = LeaseState::Revoking;
            l.last_error = Some(error.clone());
        })
        .await;
        expected.push(l.lease_id);
    }
    // The premise: one page does not hold them all.
    let first_page = first_index_page(&store).await;
    assert!(first_page.count() < 120 && first_page.last_evaluated_key().is_some(), "{} items", first_page.count());

    let due = store.list_due(NOW, 1000).await.unwrap();
    assert_eq!(ids(&due), expected);
    assert!(due.iter().all(|l| l.last_error.as_deref() == Some(error.as_str())));
    assert_eq!(ids(&store.list_due(NOW, 110).await.unwrap()), expected[..110]);
}

#[tokio::test]
async fn get_many_reads_more_than_a_batch() {
    let env = TestEnv::new("lease_get_many").await;
    let store = env.lease_store("leases").await;
    let mut written = BTreeSet::new();
    for n in 0..150 {
        let l = lease(&format!("m{n}"), "ci", 5000);
        store.put_new(&l, None).await.unwrap();
        written.insert(l.lease_id);
    }
    // Unknown ids, an id twice and a counter's key are asked for too.
    let mut asked: Vec<String> = written.iter().cloned().collect();
    asked.extend(["unknown1".into(), "unknown2".into(), "m7".into(), counter_key("ci")]);
    let got = store.get_many(&asked).await.unwrap();
    assert_eq!(got.len(), 150, "each lease once");
    assert_eq!(got.iter().map(|l| l.lease_id.clone()).collect::<BTreeSet<_>>(), written);
    assert_eq!(got.iter().find(|l| l.lease_id == "m42"), Some(&lease("m42", "ci", 5000)));
    assert_eq!(store.get_many(&[]).await.unwrap(), []);
    assert_eq!(store.get(&counter_key("ci")).await.unwrap(), None, "a counter is not a lease");
}

#[tokio::test]
async fn every_field_round_trips() {
    let env = TestEnv::new("lease_round_trip").await;
    let store = env.lease_store("leases").await;
    let bare = lease("bare", "ci", 1900);
    store.put_new(&bare, None).await.unwrap();
    assert_eq!(store.get("bare").await.unwrap(), Some(bare.clone()));
    let item = raw_item(&store, "bare").await.unwrap();
    for absent in [attr::LAST_ERROR, attr::RETRY_AT, attr::REVOKED_AT, attr::REVOKED_BY] {
        assert!(!item.contains_key(absent), "{absent} is absent while None: {item:?}");
    }
    assert_eq!(item.get(attr::STATE), Some(&AttributeValue::S("active".into())));
    assert_eq!(item.get("group_role"), Some(&AttributeValue::S("readers".into())));
    assert_eq!(item.get(attr::SERVER_EXPIRY), Some(&AttributeValue::Bool(true)));

    // Every optional field set, numbers at their extremes, text beyond ASCII.
    let mut full = lease("full", "ci-reader", u64::MAX - 1);
    full.username = "kt_ci-reader_full".into();
    full.credential = Credential::Database(database::Credential {
        admin_secret: "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin-AbCdEf".into(),
        group: "grüppe \"quoted\"".into(),
    });
    full.issued_at = 0;
    full.server_expiry = false;
    store.put_new(&full, None).await.unwrap();
    let full = update(&store, &full, |l| {
        l.state = LeaseState::Revoked;
        l.attempts = u32::MAX;
        l.last_error = Some("DROP ROLE failed: role \"kt_x\" owns objects ✗".into());
        l.retry_at = Some(u64::MAX);
        l.revoked_at = Some(12_345);
        l.revoked_by = Some("arn:aws:sts::123456789012:assumed-role/admin/alice".into());
    })
    .await;
    assert_eq!(store.get("full").await.unwrap(), Some(full.clone()));
    assert_eq!(store.get_many(&["full".into(), "bare".into()]).await.unwrap().len(), 2);
    let item = raw_item(&store, "full").await.unwrap();
    assert_eq!(item.get(attr::STATE), Some(&AttributeValue::S("revoked".into())));
    assert_eq!(item.get(attr::RETRY_AT), Some(&AttributeValue::N(u64::MAX.to_string())));

    // Every kind of credential comes back as written.
    for (id, credential) in [
        ("iamuser", Credential::AwsIamUser(aws_iam_user::Credential)),
        ("sts", Credential::AwsSts(aws_sts::Credential { role_arn: "arn:aws:iam::123456789012:role/deploy".into() })),
        ("rds", Credential::RdsIamToken(rds_iam_token::Credential { host: "db.example.internal".into(), port: 65535 })),
    ] {
        let lease = Lease { credential, ..lease(id, "aws", 5000) };
        store.put_new(&lease, None).await.unwrap();
        assert_eq!(store.get(id).await.unwrap(), Some(lease));
    }

    // A live lease comes back whole from the index too.
    let mut due = lease("due", "ci", 100);
    due.server_expiry = false;
    store.put_new(&due, None).await.unwrap();
    let due = update(&store, &due, |l| {
        l.state = LeaseState::Revoking;
        l.attempts = 2;
        l.last_error = Some("timeout".into());
        l.retry_at = Some(200);
    })
    .await;
    assert_eq!(store.list_due(500, 10).await.unwrap(), [due], "due at 200; the bare lease at 1900");
    assert_eq!(store.get("missing").await.unwrap(), None);
}

#[tokio::test]
async fn an_item_that_is_not_a_lease_is_a_clear_error() {
    let env = TestEnv::new("lease_bad_item").await;
    let store = env.lease_store("leases").await;
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item(attr::LEASE_ID, AttributeValue::S("odd".into()))
        .item(attr::KIND, AttributeValue::S("lease".into()))
        .item(attr::ROLE, AttributeValue::S("ci".into()))
        .send()
        .await
        .expect("PutItem");
    let err = store.get("odd").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend { retryable: false, .. }), "{err:?}");
    assert!(err.to_string().contains(r#"lease item "odd": attribute"#), "{err}");
    let err = store.get_many(&["odd".into()]).await.unwrap_err();
    assert!(err.to_string().contains(r#"lease item "odd""#), "{err}");

    // A table that does not exist: the error names the operation and the lease.
    let missing = DynamoLeaseStore::new(&env.sdk, env.unique("no_such_table"));
    let err = missing.get("a1").await.unwrap_err();
    assert!(err.to_string().starts_with(r#"GetItem failed: lease "a1": ResourceNotFoundException"#), "{err}");
    assert!(matches!(err, StoreError::Backend { retryable: false, .. }), "{err:?}");
}
