//! DynamoDB as the [`LeaseStore`]: one table holds the leases and, per role, a counter of its
//! live leases.
//!
//! # Schema
//!
//! The SAM template declares the same table; [`DynamoLeaseStore::create_table_request`]
//! builds it from the constants below (the tests create their tables with it).
//!
//! - Table: partition key `lease_id` (S), no sort key, billing `PAY_PER_REQUEST`.
//! - Lease items (`kind` = `"lease"`): every [`Lease`] field as an attribute of its own, so
//!   an operator reads a lease in the console: `lease_id`, `role`, `username`,
//!   `caller_arn` (S); `issued_at`, `expires_at`, `attempts`, `version` (N); `state` (S:
//!   `active`, `revoking`, `revoked`); `server_expiry` (BOOL); `last_error`, `revoked_by`
//!   (S) and `retry_at`, `revoked_at` (N), each absent when `None`. The [`Credential`]: `grant`
//!   (S, the role kind: `database`, `aws-iam-user`, `aws-sts`, `rds-iam-token`; absent on
//!   items written before there were other kinds, which are `database`), then the kind's
//!   own fields (`lease::kind::*::fields`): `admin_secret` and `group_role` (S), `role_arn`
//!   (S), or `host` (S) and `port` (N).
//! - While a lease is live, also `due_shard` = `"live"` (S) and `due_at` =
//!   [`Lease::due_at`] (N): the keys of the global secondary index `due` (partition
//!   `due_shard`, sort `due_at`, projection ALL). A revoked lease has neither, so the index
//!   is sparse: it holds the live leases only, and the reaper's `Query` (`due_shard = "live"
//!   AND due_at <= now`, earliest first) reads the leases that are due and nothing else,
//!   however many revoked leases the table keeps as audit records. Its cost follows the
//!   reaper's work, not the table's history. An administrator's listing of every live
//!   lease ([`LeaseStore::list_live`]) queries the same partition without the bound on
//!   `due_at`, a page at a time from an `ExclusiveStartKey` built from the previous page's
//!   last lease (`lease_id`, `due_shard`, `due_at`).
//! - While a lease is live, also `live_caller` = its `caller_arn`, the holder (S): the partition key of
//!   the global secondary index `holder` (partition `live_caller`, sort `expires_at`,
//!   projection ALL), sparse in the same way and written and removed with `due`'s keys.
//!   [`LeaseStore::list_live_by_holder`] queries it (`live_caller = :caller`, earliest
//!   expiry first), so listing a caller's leases reads that caller's live leases and
//!   nothing else. The sort key is `expires_at` itself, which every lease has: the listing
//!   is by expiry, and the index needs no attribute of its own for it. `live_caller` is left
//!   out when the ARN is empty or over [`INDEX_KEY_MAX`] bytes, which DynamoDB refuses as an
//!   index key (no caller a lease can be issued to has such an ARN; the lease would only go
//!   unlisted, never unwritten).
//!
//!   Items written before the `holder` index existed have no `live_caller`, and adding the
//!   index backfills only items that have it: such a lease is not listed until its next
//!   write (a renewal, the start of its revocation), and every one of them ends within its
//!   role's `max_ttl` (at most 24 hours) of the upgrade. Nothing but the listing reads the
//!   index, so nothing else is affected.
//! - Counter items (`kind` = `"counter"`): `lease_id` = `role#<role name>`, `live` (N), the
//!   role's live leases. Lease ids never hold `#` (they are ASCII letters and digits), so a
//!   counter never takes a lease's key.
//!
//! # Writes
//!
//! - [`LeaseStore::put_new`] is one `TransactWriteItems`: the lease, put on condition that
//!   its id is free, and `ADD live 1` on its role's counter, on condition that `live` is
//!   below `max_leases` when the role has one. Both happen or neither, and DynamoDB
//!   serialises transactions on the counter item, so concurrent issuers can never take a
//!   role past `max_leases` (a count read first and written after could). The cancellation
//!   reasons say which condition failed: the lease's (the id is taken) or the counter's (at
//!   capacity, whose current count comes back with the reason, `ALL_OLD`).
//! - [`LeaseStore::update`] puts the whole lease on condition that its state, version and
//!   role are as read (compare-and-set); the update that makes a live lease `Revoked` is a
//!   transaction with `ADD live -1` on the counter, so the count never drifts.
//! - A transaction cancelled only by a concurrent transaction on the same item
//!   (`TransactionConflict`, or throttling) wrote nothing; it is sent again a few times
//!   after a short random pause, then reported as a retryable failure.
//!
//! # Reads
//!
//! `get`, `get_many` (`BatchGetItem`, 100 keys a request, unprocessed keys sent again a
//! bounded number of times) and `count_live` are strongly consistent. `list_due` and
//! `list_live_by_holder` read an index, which is eventually consistent (a global secondary
//! index cannot be read otherwise): the reaper re-reads each lease before acting, and every
//! write is conditional; a listing may miss a lease issued, or show a lease as it was
//! before a change, in the moment (usually under a second) the index lags the table.
//! An item that lacks an attribute or holds it with the wrong type is an error naming the
//! item and the attribute ([`ItemError`]), never a panic.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, Put, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::describe_sdk_error;
use crate::lease::kind::{self, Field, Fields};
use crate::lease::store::{Expected, LeaseStore, StoreError};
use crate::lease::{Credential, Lease, LeaseState};

/// Attribute names of the table's items.
pub mod attr {
    /// The table's partition key: a lease id, or `role#<name>` for a counter.
    pub const LEASE_ID: &str = "lease_id";
    /// `"lease"` or `"counter"`.
    pub const KIND: &str = "kind";
    pub const ROLE: &str = "role";
    pub const USERNAME: &str = "username";
    /// [`crate::lease::Credential::kind`] (named before the code said "credential"); the
    /// credential's own fields are its kind's (`lease::kind::*::fields`).
    pub const CREDENTIAL_KIND: &str = "grant";
    /// [`crate::lease::Lease::holder`] (stored under its first name).
    pub const CALLER_ARN: &str = "caller_arn";
    pub const ISSUED_AT: &str = "issued_at";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const STATE: &str = "state";
    pub const ATTEMPTS: &str = "attempts";
    pub const LAST_ERROR: &str = "last_error";
    pub const VERSION: &str = "version";
    pub const RETRY_AT: &str = "retry_at";
    pub const REVOKED_AT: &str = "revoked_at";
    pub const REVOKED_BY: &str = "revoked_by";
    pub const SERVER_EXPIRY: &str = "server_expiry";
    /// The `due` index's partition key: [`super::LIVE_SHARD`] while the lease is live.
    pub const DUE_SHARD: &str = "due_shard";
    /// The `due` index's sort key: [`crate::lease::Lease::due_at`] while the lease is live.
    pub const DUE_AT: &str = "due_at";
    /// The `holder` index's partition key: the lease's holder while it is live. Its
    /// sort key is [`EXPIRES_AT`].
    pub const LIVE_CALLER: &str = "live_caller";
    /// A counter's live leases.
    pub const LIVE: &str = "live";
}

/// The global secondary index of live leases by due time.
pub const DUE_INDEX: &str = "due";
/// The one value of `due_shard`.
pub const LIVE_SHARD: &str = "live";
/// The global secondary index of live leases by holder, then expiry.
pub const HOLDER_INDEX: &str = "holder";
/// DynamoDB's limit, in bytes, on a string that is an index's partition key.
pub const INDEX_KEY_MAX: usize = 2048;
/// `kind` of a lease item.
pub const KIND_LEASE: &str = "lease";
/// `kind` of a counter item.
pub const KIND_COUNTER: &str = "counter";
/// The key of a role's counter item is this prefix and the role's name.
pub const COUNTER_PREFIX: &str = "role#";

/// What the numbers of a lease read into.
const U64: &str = "a whole number from 0 to 2^64-1";
const U32: &str = "a whole number from 0 to 2^32-1";
const U16: &str = "a whole number from 0 to 65535";

/// BatchGetItem's limit of keys per request.
const BATCH_KEYS: usize = 100;
/// Requests for one chunk of keys, the first included, while some come back unprocessed.
const BATCH_ATTEMPTS: u32 = 6;
/// Sends of a transaction cancelled by a concurrent transaction or throttling.
const TRANSACT_ATTEMPTS: u32 = 4;

/// The key of `role`'s counter item.
pub fn counter_key(role: &str) -> String {
    format!("{COUNTER_PREFIX}{role}")
}

/// An item of the lease table that does not read as its kind should.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ItemError {
    #[error("{kind} item {key:?}: attribute {attribute:?} is missing")]
    Missing { kind: &'static str, key: String, attribute: &'static str },
    #[error("{kind} item {key:?}: attribute {attribute:?} is not of type {expected}")]
    WrongType { kind: &'static str, key: String, attribute: &'static str, expected: &'static str },
    #[error("{kind} item {key:?}: attribute {attribute:?} holds {value:?}, not {expected}")]
    BadValue { kind: &'static str, key: String, attribute: &'static str, expected: &'static str, value: String },
}

impl ItemError {
    fn into_store(self, operation: &'static str) -> StoreError {
        StoreError::Backend { operation, message: self.to_string(), retryable: false }
    }
}

/// Reads the attributes of one item, each error naming the item and the attribute.
struct ItemReader<'a> {
    item: &'a HashMap<String, AttributeValue>,
    kind: &'static str,
    key: String,
}

impl<'a> ItemReader<'a> {
    fn new(item: &'a HashMap<String, AttributeValue>, kind: &'static str) -> Self {
        let key = match item.get(attr::LEASE_ID) {
            Some(AttributeValue::S(key)) => key.clone(),
            _ => "(no lease_id)".to_owned(),
        };
        Self { item, kind, key }
    }

    fn wrong_type(&self, attribute: &'static str, expected: &'static str) -> ItemError {
        ItemError::WrongType { kind: self.kind, key: self.key.clone(), attribute, expected }
    }

    fn bad_value(&self, attribute: &'static str, expected: &'static str, value: &str) -> ItemError {
        let value = match value.char_indices().nth(64) {
            Some((cut, _)) => format!("{}...", &value[..cut]),
            None => value.to_owned(),
        };
        ItemError::BadValue { kind: self.kind, key: self.key.clone(), attribute, expected, value }
    }

    fn required<T>(&self, attribute: &'static str, value: Option<T>) -> Result<T, ItemError> {
        value.ok_or_else(|| ItemError::Missing { kind: self.kind, key: self.key.clone(), attribute })
    }

    fn opt_s(&self, attribute: &'static str) -> Result<Option<String>, ItemError> {
        match self.item.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong_type(attribute, "S")),
        }
    }

    fn s(&self, attribute: &'static str) -> Result<String, ItemError> {
        self.required(attribute, self.opt_s(attribute)?)
    }

    fn opt_n<T: std::str::FromStr>(
        &self,
        attribute: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, ItemError> {
        match self.item.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::N(n)) => n.parse().map(Some).map_err(|_| self.bad_value(attribute, expected, n)),
            Some(_) => Err(self.wrong_type(attribute, "N")),
        }
    }

    fn n<T: std::str::FromStr>(&self, attribute: &'static str, expected: &'static str) -> Result<T, ItemError> {
        self.required(attribute, self.opt_n(attribute, expected)?)
    }

    fn bool(&self, attribute: &'static str) -> Result<bool, ItemError> {
        match self.item.get(attribute) {
            None => Err(ItemError::Missing { kind: self.kind, key: self.key.clone(), attribute }),
            Some(AttributeValue::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong_type(attribute, "BOOL")),
        }
    }
}

impl Fields for ItemReader<'_> {
    type Error = ItemError;

    fn s(&self, name: &'static str) -> Result<String, ItemError> {
        ItemReader::s(self, name)
    }

    fn u16(&self, name: &'static str) -> Result<u16, ItemError> {
        self.n(name, U16)
    }
}

/// The lease an item holds: `None` for a counter item, an error for anything else that is
/// not a well-formed lease item.
pub fn lease_of(item: &HashMap<String, AttributeValue>) -> Result<Option<Lease>, ItemError> {
    let r = ItemReader::new(item, "lease");
    match r.s(attr::KIND)?.as_str() {
        KIND_LEASE => {}
        KIND_COUNTER => return Ok(None),
        other => return Err(r.bad_value(attr::KIND, "\"lease\" or \"counter\"", other)),
    }
    let state = match r.s(attr::STATE)?.as_str() {
        "active" => LeaseState::Active,
        "revoking" => LeaseState::Revoking,
        "revoked" => LeaseState::Revoked,
        other => return Err(r.bad_value(attr::STATE, "active, revoking or revoked", other)),
    };
    // Items from before the AWS kinds have no kind: they are database leases.
    let kind_name = r.opt_s(attr::CREDENTIAL_KIND)?.unwrap_or_else(|| kind::database::NAME.to_owned());
    let credential = match Credential::from_fields(&kind_name, &r) {
        Some(credential) => credential?,
        None => return Err(r.bad_value(attr::CREDENTIAL_KIND, "a role kind", &kind_name)),
    };
    Ok(Some(Lease {
        lease_id: r.s(attr::LEASE_ID)?,
        role: r.s(attr::ROLE)?,
        username: r.s(attr::USERNAME)?,
        credential,
        holder: r.s(attr::CALLER_ARN)?,
        issued_at: r.n(attr::ISSUED_AT, U64)?,
        expires_at: r.n(attr::EXPIRES_AT, U64)?,
        state,
        attempts: r.n(attr::ATTEMPTS, U32)?,
        last_error: r.opt_s(attr::LAST_ERROR)?,
        version: r.n(attr::VERSION, U64)?,
        retry_at: r.opt_n(attr::RETRY_AT, U64)?,
        revoked_at: r.opt_n(attr::REVOKED_AT, U64)?,
        revoked_by: r.opt_s(attr::REVOKED_BY)?,
        server_expiry: r.bool(attr::SERVER_EXPIRY)?,
    }))
}

/// The item of a lease: every field, and the `due` and `holder` indexes' keys while it is
/// live.
pub fn lease_item(lease: &Lease) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: u64| AttributeValue::N(v.to_string());
    let mut item = HashMap::from([
        (attr::LEASE_ID.to_owned(), s(&lease.lease_id)),
        (attr::KIND.to_owned(), s(KIND_LEASE)),
        (attr::ROLE.to_owned(), s(&lease.role)),
        (attr::USERNAME.to_owned(), s(&lease.username)),
        (attr::CREDENTIAL_KIND.to_owned(), s(lease.credential.kind())),
        (attr::CALLER_ARN.to_owned(), s(&lease.holder)),
        (attr::ISSUED_AT.to_owned(), n(lease.issued_at)),
        (attr::EXPIRES_AT.to_owned(), n(lease.expires_at)),
        (attr::STATE.to_owned(), s(lease.state.as_str())),
        (attr::ATTEMPTS.to_owned(), n(lease.attempts.into())),
        (attr::VERSION.to_owned(), n(lease.version)),
        (attr::SERVER_EXPIRY.to_owned(), AttributeValue::Bool(lease.server_expiry)),
    ]);
    let optional = [
        (attr::LAST_ERROR, lease.last_error.as_deref().map(s)),
        (attr::RETRY_AT, lease.retry_at.map(n)),
        (attr::REVOKED_AT, lease.revoked_at.map(n)),
        (attr::REVOKED_BY, lease.revoked_by.as_deref().map(s)),
    ];
    item.extend(optional.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))));
    for (name, value) in lease.credential.fields() {
        let value = match value {
            Field::S(text) => AttributeValue::S(text),
            Field::N(number) => n(number),
        };
        item.insert(name.to_owned(), value);
    }
    // Both indexes hold live leases only: their keys come and go together.
    if let Some(due_at) = lease.due_at() {
        item.insert(attr::DUE_SHARD.to_owned(), s(LIVE_SHARD));
        item.insert(attr::DUE_AT.to_owned(), n(due_at));
        if is_holder_key(&lease.holder) {
            item.insert(attr::LIVE_CALLER.to_owned(), s(&lease.holder));
        }
    }
    item
}

/// Whether a caller ARN can be the `holder` index's key: DynamoDB refuses an empty one and
/// one over [`INDEX_KEY_MAX`] bytes.
fn is_holder_key(holder: &str) -> bool {
    !holder.is_empty() && holder.len() <= INDEX_KEY_MAX
}

/// The live count a counter item holds (0 when there is none yet).
fn live_of(item: Option<&HashMap<String, AttributeValue>>) -> Result<u64, ItemError> {
    match item {
        None => Ok(0),
        Some(item) => {
            let r = ItemReader::new(item, "counter");
            r.n(attr::LIVE, U64)
        }
    }
}

/// What cancelled a transaction, from its cancellation reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancellation {
    /// A condition failed: the answer, not a failure.
    ConditionFailed,
    /// Only concurrent transactions or throttling: nothing was written, worth sending again.
    Transient,
    /// Anything else (a validation error, an item too large, no reasons given).
    Other,
}

fn cancellation(reasons: &[CancellationReason]) -> Cancellation {
    let codes: Vec<&str> = reasons.iter().filter_map(|r| r.code()).filter(|c| *c != "None").collect();
    if codes.contains(&"ConditionalCheckFailed") {
        Cancellation::ConditionFailed
    } else if !codes.is_empty()
        && codes.iter().all(|c| {
            matches!(
                *c,
                "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded"
            )
        })
    {
        Cancellation::Transient
    } else {
        Cancellation::Other
    }
}

fn is_condition_failed(reason: Option<&CancellationReason>) -> bool {
    reason.and_then(|r| r.code()) == Some("ConditionalCheckFailed")
}

/// A failed transaction: the cancellation reasons when a condition failed, else the error.
enum TransactError {
    ConditionFailed(Vec<CancellationReason>),
    Store(StoreError),
}

/// The error of a request about `key` (a lease id, or empty for requests about many).
fn sdk_error<E>(operation: &'static str, key: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let (message, retryable) = describe_sdk_error(err);
    let message = if key.is_empty() { message } else { format!("lease {key:?}: {message}") };
    StoreError::Backend { operation, message, retryable }
}

fn build_error(operation: &'static str, err: BuildError) -> StoreError {
    StoreError::Backend { operation, message: format!("could not build the request: {err}"), retryable: false }
}

/// A pause before sending again: `base` doubled per attempt, half of it random.
async fn backoff(base: Duration, attempt: u32) {
    let full = base.saturating_mul(1 << attempt.min(6));
    let jitter = full.mul_f64(rand::random::<f64>() / 2.0);
    tokio::time::sleep(full / 2 + jitter).await;
}

/// The lease table.
#[derive(Clone, Debug)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
}

impl DynamoLeaseStore {
    /// A store on `table`, with a client built from the shared SDK config.
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self { client: Client::new(sdk), table: table.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `CreateTable` for this store's table, as the module documentation describes it
    /// (production tables come from the SAM template, which declares the same).
    pub fn create_table_request(&self) -> Result<CreateTableFluentBuilder, StoreError> {
        let err = |e| build_error("CreateTable", e);
        let definition = |name: &str, kind| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().map_err(err)
        };
        let key =
            |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(err);
        let index = |name: &str, partition: &str, sort: &str| {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(partition, KeyType::Hash)?)
                .key_schema(key(sort, KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(err)
        };
        Ok(self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(definition(attr::LEASE_ID, ScalarAttributeType::S)?)
            .attribute_definitions(definition(attr::DUE_SHARD, ScalarAttributeType::S)?)
            .attribute_definitions(definition(attr::DUE_AT, ScalarAttributeType::N)?)
            .attribute_definitions(definition(attr::LIVE_CALLER, ScalarAttributeType::S)?)
            .attribute_definitions(definition(attr::EXPIRES_AT, ScalarAttributeType::N)?)
            .key_schema(key(attr::LEASE_ID, KeyType::Hash)?)
            .global_secondary_indexes(index(DUE_INDEX, attr::DUE_SHARD, attr::DUE_AT)?)
            .global_secondary_indexes(index(HOLDER_INDEX, attr::LIVE_CALLER, attr::EXPIRES_AT)?))
    }

    /// Sends a transaction about lease `lease_id`; sends it again while it is cancelled only
    /// by concurrent transactions or throttling (it wrote nothing), up to
    /// [`TRANSACT_ATTEMPTS`] times.
    async fn transact(&self, lease_id: &str, items: Vec<TransactWriteItem>) -> Result<(), TransactError> {
        const OPERATION: &str = "TransactWriteItems";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let reasons = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => e.cancellation_reasons(),
                _ => return Err(TransactError::Store(sdk_error(OPERATION, lease_id, &err))),
            };
            match cancellation(reasons) {
                Cancellation::ConditionFailed => return Err(TransactError::ConditionFailed(reasons.to_vec())),
                Cancellation::Transient if attempt < TRANSACT_ATTEMPTS => {
                    backoff(Duration::from_millis(20), attempt).await;
                }
                kind => {
                    let message = describe_sdk_error(&err).0;
                    let message = format!("lease {lease_id:?}: {message} (sent {attempt} times)");
                    let retryable = kind == Cancellation::Transient;
                    return Err(TransactError::Store(StoreError::Backend { operation: OPERATION, message, retryable }));
                }
            }
        }
    }

    /// One chunk of at most [`BATCH_KEYS`] distinct ids, strongly consistent; keys that come
    /// back unprocessed are asked for again after a pause, a bounded number of times.
    async fn get_chunk(&self, ids: &[&String], leases: &mut Vec<Lease>) -> Result<(), StoreError> {
        const OPERATION: &str = "BatchGetItem";
        let mut keys: Vec<HashMap<String, AttributeValue>> = ids
            .iter()
            .map(|id| HashMap::from([(attr::LEASE_ID.to_owned(), AttributeValue::S((*id).clone()))]))
            .collect();
        for attempt in 1..=BATCH_ATTEMPTS {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| build_error(OPERATION, e))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(|e| sdk_error(OPERATION, "", &e))?;
            for item in out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                if let Some(lease) = lease_of(item).map_err(|e| e.into_store(OPERATION))? {
                    leases.push(lease);
                }
            }
            keys =
                out.unprocessed_keys().and_then(|u| u.get(&self.table)).map(|k| k.keys().to_vec()).unwrap_or_default();
            if keys.is_empty() {
                return Ok(());
            }
            if attempt < BATCH_ATTEMPTS {
                backoff(Duration::from_millis(50), attempt).await;
            }
        }
        Err(StoreError::Backend {
            operation: OPERATION,
            message: format!("{} keys still unprocessed after {BATCH_ATTEMPTS} requests", keys.len()),
            retryable: true,
        })
    }

    /// The item with that key, strongly consistent.
    async fn get_item(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LEASE_ID, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", key, &e))?;
        Ok(out.item)
    }

    /// Up to `limit` leases from an index `query`, in the index's order (ascending), page
    /// after page until the limit or the end, from after `start` (an index position).
    async fn query_leases(
        &self,
        query: QueryFluentBuilder,
        limit: usize,
        mut start: Option<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<Lease>, StoreError> {
        const OPERATION: &str = "Query";
        let mut leases = Vec::new();
        while leases.len() < limit {
            let page = i32::try_from(limit - leases.len()).unwrap_or(i32::MAX);
            let out = query
                .clone()
                .scan_index_forward(true)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error(OPERATION, "", &e))?;
            for item in out.items() {
                if let Some(lease) = lease_of(item).map_err(|e| e.into_store(OPERATION))? {
                    leases.push(lease);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        leases.truncate(limit);
        Ok(leases)
    }

    /// The conditional put of `next` that [`LeaseStore::update`] makes: the item must still be
    /// a lease of the same role, in the state and at the version expected.
    fn conditional_put(&self, next: &Lease, expected: Expected) -> Result<Put, StoreError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(lease_item(next)))
            .condition_expression("#kind = :lease AND #role = :role AND #state = :state AND #version = :version")
            .expression_attribute_names("#kind", attr::KIND)
            .expression_attribute_names("#role", attr::ROLE)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":lease", AttributeValue::S(KIND_LEASE.to_owned()))
            .expression_attribute_values(":role", AttributeValue::S(next.role.clone()))
            .expression_attribute_values(":state", AttributeValue::S(expected.state.as_str().to_owned()))
            .expression_attribute_values(":version", AttributeValue::N(expected.version.to_string()))
            .build()
            .map_err(|e| build_error("PutItem", e))
    }

    /// `ADD live <delta>` on `role`'s counter.
    fn count(&self, role: &str, delta: i64) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key(attr::LEASE_ID, AttributeValue::S(counter_key(role)))
            .update_expression("SET #kind = :counter ADD #live :delta")
            .expression_attribute_names("#kind", attr::KIND)
            .expression_attribute_names("#live", attr::LIVE)
            .expression_attribute_values(":counter", AttributeValue::S(KIND_COUNTER.to_owned()))
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()))
    }
}

impl LeaseStore for DynamoLeaseStore {
    // Each call is boxed: the SDK's futures are deep, and nested unboxed in the services and
    // handlers above, their layout runs past the compiler's default recursion limit. One
    // allocation per call is nothing beside its round trip.
    fn put_new(&self, lease: &Lease, max_live: Option<u32>) -> impl Future<Output = Result<(), StoreError>> + Send {
        Box::pin(async move {
            const OPERATION: &str = "TransactWriteItems";
            if lease.lease_id.contains('#') {
                return Err(StoreError::Backend {
                    operation: OPERATION,
                    message: format!("lease id {:?} holds '#', which counter items' keys use", lease.lease_id),
                    retryable: false,
                });
            }
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(lease_item(lease)))
                .condition_expression("attribute_not_exists(#id)")
                .expression_attribute_names("#id", attr::LEASE_ID)
                .build()
                .map_err(|e| build_error(OPERATION, e))?;
            let mut count = self.count(&lease.role, 1);
            if let Some(max) = max_live {
                // No counter yet means no live lease, which is below any cap but 0.
                let condition = if max == 0 { "#live < :max" } else { "attribute_not_exists(#live) OR #live < :max" };
                count = count
                    .condition_expression(condition)
                    .expression_attribute_values(":max", AttributeValue::N(max.to_string()))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            }
            let count = count.build().map_err(|e| build_error(OPERATION, e))?;
            let items =
                vec![TransactWriteItem::builder().put(put).build(), TransactWriteItem::builder().update(count).build()];
            let reasons = match self.transact(&lease.lease_id, items).await {
                Ok(()) => return Ok(()),
                Err(TransactError::Store(e)) => return Err(e),
                Err(TransactError::ConditionFailed(reasons)) => reasons,
            };
            if is_condition_failed(reasons.first()) {
                return Err(StoreError::AlreadyExists(lease.lease_id.clone()));
            }
            // The counter's condition failed: its count as it was (ALL_OLD), or read now.
            let live = match reasons.get(1).and_then(|r| r.item()) {
                Some(old) => live_of(Some(old)).map_err(|e| e.into_store(OPERATION))?,
                None => self.count_live(&lease.role).await?,
            };
            Err(StoreError::AtCapacity { role: lease.role.clone(), live })
        })
    }

    fn get(&self, lease_id: &str) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send {
        Box::pin(async move {
            match self.get_item(lease_id).await? {
                Some(item) => lease_of(&item).map_err(|e| e.into_store("GetItem")),
                None => Ok(None),
            }
        })
    }

    fn get_many(&self, lease_ids: &[String]) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send {
        Box::pin(async move {
            // BatchGetItem refuses a request that names a key twice.
            let ids: Vec<&String> = lease_ids.iter().collect::<BTreeSet<_>>().into_iter().collect();
            let mut leases = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(BATCH_KEYS) {
                self.get_chunk(chunk, &mut leases).await?;
            }
            Ok(leases)
        })
    }

    fn update(&self, next: &Lease, expected: Expected) -> impl Future<Output = Result<(), StoreError>> + Send {
        Box::pin(async move {
            if expected.version.checked_add(1) != Some(next.version) {
                return Err(StoreError::Backend {
                    operation: "PutItem",
                    message: format!(
                        "lease {:?}: an update from version {} must write version {}, not {}",
                        next.lease_id,
                        expected.version,
                        expected.version.wrapping_add(1),
                        next.version
                    ),
                    retryable: false,
                });
            }
            let put = self.conditional_put(next, expected)?;
            let condition_failed = || StoreError::ConditionFailed(next.lease_id.clone());
            if expected.state.is_live() && !next.state.is_live() {
                let count = self.count(&next.role, -1).build().map_err(|e| build_error("TransactWriteItems", e))?;
                let items = vec![
                    TransactWriteItem::builder().put(put).build(),
                    TransactWriteItem::builder().update(count).build(),
                ];
                return match self.transact(&next.lease_id, items).await {
                    Ok(()) => Ok(()),
                    Err(TransactError::ConditionFailed(_)) => Err(condition_failed()),
                    Err(TransactError::Store(e)) => Err(e),
                };
            }
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(put.item))
                .condition_expression(put.condition_expression.unwrap_or_default())
                .set_expression_attribute_names(put.expression_attribute_names)
                .set_expression_attribute_values(put.expression_attribute_values)
                .send()
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                    Err(condition_failed())
                }
                Err(e) => Err(sdk_error("PutItem", &next.lease_id, &e)),
            }
        })
    }

    fn list_due(&self, now: u64, limit: usize) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send {
        Box::pin(async move {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("#shard = :live AND #due <= :now")
                .expression_attribute_names("#shard", attr::DUE_SHARD)
                .expression_attribute_names("#due", attr::DUE_AT)
                .expression_attribute_values(":live", AttributeValue::S(LIVE_SHARD.to_owned()))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
            self.query_leases(query, limit, None).await
        })
    }

    fn list_live(
        &self,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send {
        Box::pin(async move {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("#shard = :live")
                .expression_attribute_names("#shard", attr::DUE_SHARD)
                .expression_attribute_values(":live", AttributeValue::S(LIVE_SHARD.to_owned()));
            // An index's position is its keys and the table's: the page starts after the
            // lease named, wherever it is now (its item need not exist any more).
            let start = after.map(|(due_at, lease_id)| {
                HashMap::from([
                    (attr::LEASE_ID.to_owned(), AttributeValue::S(lease_id)),
                    (attr::DUE_SHARD.to_owned(), AttributeValue::S(LIVE_SHARD.to_owned())),
                    (attr::DUE_AT.to_owned(), AttributeValue::N(due_at.to_string())),
                ])
            });
            self.query_leases(query, limit, start).await
        })
    }

    fn list_live_by_holder(
        &self,
        holder: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send {
        Box::pin(async move {
            // No lease is indexed under such a key, and DynamoDB refuses a Query for one.
            if !is_holder_key(holder) {
                return Ok(Vec::new());
            }
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(HOLDER_INDEX)
                .key_condition_expression("#caller = :caller")
                .expression_attribute_names("#caller", attr::LIVE_CALLER)
                .expression_attribute_values(":caller", AttributeValue::S(holder.to_owned()));
            self.query_leases(query, limit, None).await
        })
    }

    fn count_live(&self, role: &str) -> impl Future<Output = Result<u64, StoreError>> + Send {
        Box::pin(async move {
            let key = counter_key(role);
            let item = self.get_item(&key).await?;
            live_of(item.as_ref()).map_err(|e| e.into_store("GetItem"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease::example("a1", 1900)
    }

    fn error_of(item: &HashMap<String, AttributeValue>) -> String {
        lease_of(item).expect_err("not a lease").into_store("GetItem").to_string()
    }

    #[test]
    fn an_item_reads_back_as_the_lease_it_was_made_from() {
        let mut revoked = lease();
        revoked.state = LeaseState::Revoked;
        revoked.attempts = 3;
        revoked.last_error = Some("connection refused".into());
        revoked.retry_at = Some(2000);
        revoked.revoked_at = Some(2100);
        revoked.revoked_by = Some("reaper".into());
        revoked.server_expiry = false;
        for l in [lease(), revoked] {
            assert_eq!(lease_of(&lease_item(&l)).unwrap(), Some(l));
        }
    }

    #[test]
    fn every_credential_reads_back_and_an_item_from_before_the_aws_kinds_is_a_database_lease() {
        for credential in [
            Credential::AwsIamUser(kind::aws_iam_user::Credential),
            Credential::AwsSts(kind::aws_sts::Credential { role_arn: "arn:aws:iam::123456789012:role/deploy".into() }),
            Credential::RdsIamToken(kind::rds_iam_token::Credential { host: "db.internal".into(), port: 5432 }),
        ] {
            let l = Lease { credential, ..lease() };
            assert_eq!(lease_of(&lease_item(&l)).unwrap(), Some(l));
        }
        let mut old = lease_item(&lease());
        old.remove(attr::CREDENTIAL_KIND);
        assert_eq!(lease_of(&old).unwrap(), Some(lease()), "the first version's items had no grant attribute");
        let mut odd = lease_item(&lease());
        odd.insert(attr::CREDENTIAL_KIND.into(), AttributeValue::S("ldap".into()));
        assert!(error_of(&odd).contains("grant"), "{}", error_of(&odd));
        let sts_lease = Credential::AwsSts(kind::aws_sts::Credential { role_arn: "r".into() });
        let mut sts = lease_item(&Lease { credential: sts_lease, ..lease() });
        sts.remove("role_arn");
        assert!(error_of(&sts).contains("role_arn"), "{}", error_of(&sts));
    }

    /// The items in deployed tables were written before each kind kept its own fields: every
    /// kind's item is written out here attribute by attribute, as that code wrote it, so a
    /// field renamed in a kind's module cannot make live leases unreadable (and their users
    /// unrevocable) or rewrite them in another shape.
    #[test]
    fn every_kinds_item_is_stored_as_before_the_kinds_had_modules() {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: &str| AttributeValue::N(v.to_owned());
        let common = |grant: &str| {
            HashMap::from([
                ("lease_id".to_owned(), s("a1")),
                ("kind".to_owned(), s("lease")),
                ("role".to_owned(), s("ci")),
                ("username".to_owned(), s("kt_ci_a1")),
                ("grant".to_owned(), s(grant)),
                ("caller_arn".to_owned(), s("arn:aws:sts::123456789012:assumed-role/ci-runner/job-1")),
                ("issued_at".to_owned(), n("1000")),
                ("expires_at".to_owned(), n("1900")),
                ("state".to_owned(), s("active")),
                ("attempts".to_owned(), n("0")),
                ("version".to_owned(), n("1")),
                ("server_expiry".to_owned(), AttributeValue::Bool(true)),
                ("due_shard".to_owned(), s("live")),
                ("due_at".to_owned(), n("1900")),
                ("live_caller".to_owned(), s("arn:aws:sts::123456789012:assumed-role/ci-runner/job-1")),
            ])
        };
        let with = |grant: &str, own: &[(&str, AttributeValue)]| {
            let mut item = common(grant);
            item.extend(own.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
            item
        };
        let cases = [
            (
                with(
                    "database",
                    &[
                        ("admin_secret", s("arn:aws:secretsmanager:us-east-1:123456789012:secret:admin-AbCdEf")),
                        ("group_role", s("readers")),
                    ],
                ),
                lease(),
            ),
            (
                with("aws-iam-user", &[]),
                Lease { credential: Credential::AwsIamUser(kind::aws_iam_user::Credential), ..lease() },
            ),
            (
                with("aws-sts", &[("role_arn", s("arn:aws:iam::123456789012:role/deploy"))]),
                Lease {
                    credential: Credential::AwsSts(kind::aws_sts::Credential {
                        role_arn: "arn:aws:iam::123456789012:role/deploy".into(),
                    }),
                    ..lease()
                },
            ),
            (
                with("rds-iam-token", &[("host", s("db.internal")), ("port", n("5432"))]),
                Lease {
                    credential: Credential::RdsIamToken(kind::rds_iam_token::Credential {
                        host: "db.internal".into(),
                        port: 5432,
                    }),
                    ..lease()
                },
            ),
        ];
        for (item, expected) in cases {
            assert_eq!(lease_of(&item).unwrap().as_ref(), Some(&expected), "{item:?}");
            assert_eq!(lease_item(&expected), item, "{expected:?}");
        }
    }

    #[test]
    fn only_live_leases_carry_the_index_keys() {
        let mut l = lease();
        let item = lease_item(&l);
        assert_eq!(item.get(attr::DUE_SHARD), Some(&AttributeValue::S("live".into())));
        assert_eq!(item.get(attr::DUE_AT), Some(&AttributeValue::N("1900".into())));
        assert_eq!(item.get(attr::LIVE_CALLER), Some(&AttributeValue::S(l.holder.clone())));
        l.state = LeaseState::Revoking;
        l.retry_at = Some(2500);
        let item = lease_item(&l);
        assert_eq!(item.get(attr::DUE_AT), Some(&AttributeValue::N("2500".into())));
        assert_eq!(item.get(attr::LIVE_CALLER), Some(&AttributeValue::S(l.holder.clone())), "still live");
        l.state = LeaseState::Revoked;
        let item = lease_item(&l);
        assert!(!item.contains_key(attr::DUE_SHARD) && !item.contains_key(attr::DUE_AT));
        assert!(!item.contains_key(attr::LIVE_CALLER));
        assert!(!item.contains_key(attr::LAST_ERROR) && !item.contains_key(attr::REVOKED_BY), "None is absent");
        assert_eq!(lease_of(&item).unwrap(), Some(l), "the index keys are not lease fields");

        // A caller ARN DynamoDB would refuse as an index key is left out rather than have
        // the whole write refused.
        for holder in [String::new(), "a".repeat(INDEX_KEY_MAX + 1)] {
            let item = lease_item(&Lease { holder, ..lease() });
            assert!(item.contains_key(attr::DUE_SHARD) && !item.contains_key(attr::LIVE_CALLER));
        }
        let longest = lease_item(&Lease { holder: "a".repeat(INDEX_KEY_MAX), ..lease() });
        assert!(longest.contains_key(attr::LIVE_CALLER));
    }

    #[test]
    fn a_missing_or_mistyped_attribute_is_an_error_naming_it_and_the_lease() {
        let mut item = lease_item(&lease());
        item.remove(attr::EXPIRES_AT);
        assert_eq!(error_of(&item), r#"GetItem failed: lease item "a1": attribute "expires_at" is missing"#);

        let mut item = lease_item(&lease());
        item.insert(attr::VERSION.into(), AttributeValue::S("1".into()));
        assert_eq!(error_of(&item), r#"GetItem failed: lease item "a1": attribute "version" is not of type N"#);

        let mut item = lease_item(&lease());
        item.insert(attr::ATTEMPTS.into(), AttributeValue::N("4294967296".into()));
        assert_eq!(
            error_of(&item),
            r#"GetItem failed: lease item "a1": attribute "attempts" holds "4294967296", not a whole number from 0 to 2^32-1"#
        );

        let mut item = lease_item(&lease());
        item.insert(attr::STATE.into(), AttributeValue::S("expired".into()));
        assert!(error_of(&item).contains(r#"attribute "state" holds "expired""#));

        let mut item = lease_item(&lease());
        item.insert(attr::SERVER_EXPIRY.into(), AttributeValue::S("true".into()));
        assert!(error_of(&item).contains(r#"attribute "server_expiry" is not of type BOOL"#));

        let mut item = lease_item(&lease());
        item.remove(attr::KIND);
        assert!(error_of(&item).contains(r#"attribute "kind" is missing"#));

        let mut item = lease_item(&lease());
        item.remove(attr::LEASE_ID);
        assert!(error_of(&item).contains(r#"lease item "(no lease_id)": attribute "lease_id" is missing"#));

        let err = lease_of(&lease_item(&lease())).map(|_| ());
        assert_eq!(err, Ok(()));
        let mut item = lease_item(&lease());
        item.remove(attr::ROLE);
        let err = lease_of(&item).unwrap_err().into_store("Query");
        assert!(matches!(err, StoreError::Backend { retryable: false, .. }), "{err:?}");
    }

    #[test]
    fn counter_items_are_not_leases() {
        let counter = HashMap::from([
            (attr::LEASE_ID.to_owned(), AttributeValue::S(counter_key("ci"))),
            (attr::KIND.to_owned(), AttributeValue::S(KIND_COUNTER.into())),
            (attr::LIVE.to_owned(), AttributeValue::N("3".into())),
        ]);
        assert_eq!(lease_of(&counter), Ok(None));
        assert_eq!(live_of(Some(&counter)), Ok(3));
        assert_eq!(live_of(None), Ok(0));
        let mut broken = counter;
        broken.insert(attr::LIVE.into(), AttributeValue::N("-1".into()));
        assert_eq!(
            live_of(Some(&broken)).unwrap_err().to_string(),
            r#"counter item "role#ci": attribute "live" holds "-1", not a whole number from 0 to 2^64-1"#
        );
    }

    #[test]
    fn a_transaction_cancelled_only_by_concurrency_is_transient() {
        let reasons = |codes: &[&str]| -> Vec<CancellationReason> {
            codes.iter().map(|c| CancellationReason::builder().code(*c).build()).collect()
        };
        assert_eq!(cancellation(&reasons(&["None", "ConditionalCheckFailed"])), Cancellation::ConditionFailed);
        assert_eq!(
            cancellation(&reasons(&["ConditionalCheckFailed", "TransactionConflict"])),
            Cancellation::ConditionFailed
        );
        assert_eq!(cancellation(&reasons(&["None", "TransactionConflict"])), Cancellation::Transient);
        assert_eq!(cancellation(&reasons(&["ThrottlingError", "None"])), Cancellation::Transient);
        assert_eq!(cancellation(&reasons(&["ValidationError", "TransactionConflict"])), Cancellation::Other);
        assert_eq!(cancellation(&reasons(&["None", "None"])), Cancellation::Other);
        assert_eq!(cancellation(&[]), Cancellation::Other);
    }
}
