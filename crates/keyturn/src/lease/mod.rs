//! Dynamic credentials with leases: database users, IAM users, STS sessions and RDS tokens.
//!
//! - [`kind`]: the credential kinds, one module each (`database`, `aws_sts`,
//!   `aws_iam_user`, `rds_iam_token`): a kind's roles-file keys, what its lease records,
//!   and how it is issued, renewed, revoked and swept.
//! - [`role`]: the roles file (TOML), parsed into typed, validated roles; unknown keys
//!   refused, every error naming the role and the field ([`field`]: the checks and the
//!   error the kinds share).
//! - [`parameters`]: the template parameters a roles file implies (the secrets, IAM users,
//!   roles and database users the functions may touch), derived from it.
//! - [`principal`]: the caller's IAM identity against the roles file's ARN patterns, who
//!   holds a lease; [`name`]: lease ids and the usernames that carry them.
//! - [`decide`]: the decisions, as pure functions with the clock passed in: the TTL of an
//!   issue, how far a renewal goes, whether a lease expired.
//! - [`store`]: the [`store::LeaseStore`] trait the leases are kept behind (DynamoDB in
//!   `aws::dynamodb`, an in-memory fake in unit tests).
//! - `ports`, `admin` (feature `lease`): the service's I/O as one bundle, and the admin
//!   secrets' cache.
//! - `service` (feature `lease`): issue, renew, revoke and reap, one file each, over the
//!   ports, with the clock injected.
//! - `api` (feature `lease`): the HTTP API over API Gateway's 2.0 events.
//! - `fakes` (unit tests only): the service's I/O faked, shared by the service's and the
//!   API's tests.
//!
//! Times are whole seconds since the Unix epoch (`u64`), as DynamoDB's TTL attribute and
//! the API's `issued_at`/`expires_at` use them. Nothing here does I/O.

#[cfg(feature = "lease")]
pub mod admin;
#[cfg(feature = "lease")]
pub mod api;
pub mod decide;
#[cfg(all(test, feature = "lease"))]
pub(crate) mod fakes;
pub mod field;
pub mod kind;
pub mod name;
pub mod parameters;
#[cfg(feature = "lease")]
pub mod ports;
pub mod principal;
pub mod role;
#[cfg(feature = "lease")]
pub mod service;
pub mod store;

pub use kind::Credential;

/// Where a lease is in its life. Expiry is not a state: it follows from `expires_at` and
/// the clock ([`decide::is_expired`]); the reaper turns an expired `Active` lease into
/// `Revoking`, then `Revoked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// The user exists and may log in until `expires_at`.
    Active,
    /// Revocation has started (explicitly or by expiry) and has not succeeded yet; retried
    /// by every reaper run until it does (`attempts`, `last_error`).
    Revoking,
    /// The user is gone. Kept as the audit record.
    Revoked,
}

impl LeaseState {
    /// The name stored in the table and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
        }
    }

    /// Whether the database user may still exist (counts against `max_leases`).
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Revoked)
    }
}

/// One lease: who got which user, when, until when. Everything revocation needs is here,
/// so a lease whose role was since removed from the roles file is still revocable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub lease_id: String,
    /// The role's name at issue time.
    pub role: String,
    /// The name the credential authenticates as: the database user or IAM user created for
    /// the lease, the STS session's name, or the database user an RDS token logs in as.
    pub username: String,
    /// What the lease made, with what renewal and revocation need to know about it.
    pub credential: Credential,
    /// The caller's ARN as API Gateway's IAM authorizer gave it (the lease's holder).
    pub holder: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub state: LeaseState,
    /// Revocation attempts so far.
    pub attempts: u32,
    /// The last revocation failure, kept until revocation succeeds.
    pub last_error: Option<String>,
    /// Incremented by every update; updates are conditional on it (compare-and-set).
    pub version: u64,
    /// While `Revoking`: when the next attempt is due (backoff after a failure; the time
    /// revocation started otherwise). The reaper takes leases by [`Lease::due_at`].
    pub retry_at: Option<u64>,
    /// When revocation succeeded, and who asked for it (a caller's ARN, or `reaper` for
    /// expiry): the audit record.
    pub revoked_at: Option<u64>,
    pub revoked_by: Option<String>,
    /// Whether the server itself refuses the credential after `expires_at` (PostgreSQL's
    /// `VALID UNTIL`, a MariaDB event, an IAM user's expiry policy, an STS session or RDS
    /// token's own lifetime), or only the reaper enforces expiry.
    pub server_expiry: bool,
}

impl Lease {
    /// A new active lease of role `ci` issued at 1000, for tests and examples: every field
    /// set, the username of keyturn's form.
    pub fn example(lease_id: &str, expires_at: u64) -> Self {
        Self {
            lease_id: lease_id.into(),
            role: "ci".into(),
            username: format!("kt_ci_{lease_id}"),
            credential: Credential::Database(kind::database::Credential {
                admin_secret: "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin-AbCdEf".into(),
                group: "readers".into(),
            }),
            holder: "arn:aws:sts::123456789012:assumed-role/ci-runner/job-1".into(),
            issued_at: 1000,
            expires_at,
            state: LeaseState::Active,
            attempts: 0,
            last_error: None,
            version: 1,
            retry_at: None,
            revoked_at: None,
            revoked_by: None,
            server_expiry: true,
        }
    }

    /// Whether its revocation was attempted and failed (and is being retried): `Revoking`
    /// with a recorded failure. Its credential may still work until a retry succeeds.
    pub fn is_failing(&self) -> bool {
        self.state == LeaseState::Revoking && self.last_error.is_some()
    }

    /// When the reaper should next act on the lease: its retry time while being revoked,
    /// its expiry while active. `None` once revoked.
    pub fn due_at(&self) -> Option<u64> {
        match self.state {
            LeaseState::Active => Some(self.expires_at),
            LeaseState::Revoking => Some(self.retry_at.unwrap_or(self.expires_at)),
            LeaseState::Revoked => None,
        }
    }
}

/// Why a lease operation was refused. Each variant has a stable [`code`](Self::code) and an
/// HTTP [`status`](Self::status); messages name what was wrong and carry no secret.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LeaseError {
    /// A malformed request or a TTL out of range.
    #[error("{0}")]
    BadRequest(String),
    /// The caller may not request this role or act on this lease.
    #[error("{0}")]
    Forbidden(String),
    #[error("no lease {0:?}")]
    UnknownLease(String),
    /// No such endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The lease is not in a state that allows the operation (expired, revoked, being
    /// revoked), or changed meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// A renewal that would not move `expires_at` forward (the role's max_ttl from issue
    /// time is reached, or the lease already runs longer than asked).
    #[error("lease {lease_id:?} is not extended: it expires at {expires_at} and may not run past {limit}")]
    NotExtended { lease_id: String, expires_at: u64, limit: u64 },
    #[error("role {role:?} has {live} live leases, its max_leases")]
    TooManyLeases { role: String, live: u64 },
    /// The database or the lease table could not be reached; worth retrying.
    #[error("{0}")]
    Unavailable(String),
    /// Something that is not the caller's fault and not transient (a store answer that
    /// breaks its contract).
    #[error("{0}")]
    Internal(String),
}

impl LeaseError {
    /// The stable code the API returns beside the message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) => "forbidden",
            Self::UnknownLease(_) | Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::NotExtended { .. } => "not_extended",
            Self::TooManyLeases { .. } => "too_many_leases",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Forbidden(_) => 403,
            Self::UnknownLease(_) | Self::NotFound(_) => 404,
            Self::Conflict(_) | Self::NotExtended { .. } => 409,
            Self::TooManyLeases { .. } => 429,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// Whether the same request may succeed if simply sent again.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The refusal to renew a lease whose credential (a user) no longer exists.
pub fn gone_user(lease_id: &str) -> LeaseError {
    LeaseError::Conflict(format!("lease {lease_id:?}'s user no longer exists"))
}

impl From<store::StoreError> for LeaseError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::AlreadyExists(_) | store::StoreError::ConditionFailed(_) => {
                Self::Conflict(e.to_string())
            }
            store::StoreError::AtCapacity { role, live } => Self::TooManyLeases { role, live },
            store::StoreError::Backend { retryable: true, .. } => Self::Unavailable(e.to_string()),
            store::StoreError::Backend { retryable: false, .. } => Self::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_stable_code_and_status() {
        let cases = [
            (LeaseError::BadRequest("x".into()), "bad_request", 400),
            (LeaseError::Forbidden("x".into()), "forbidden", 403),
            (LeaseError::UnknownLease("l".into()), "not_found", 404),
            (LeaseError::NotFound("/x".into()), "not_found", 404),
            (LeaseError::Conflict("x".into()), "conflict", 409),
            (LeaseError::NotExtended { lease_id: "l".into(), expires_at: 1, limit: 1 }, "not_extended", 409),
            (LeaseError::TooManyLeases { role: "r".into(), live: 3 }, "too_many_leases", 429),
            (LeaseError::Unavailable("x".into()), "unavailable", 503),
            (LeaseError::Internal("x".into()), "internal", 500),
        ];
        for (e, code, status) in cases {
            assert_eq!((e.code(), e.status()), (code, status), "{e:?}");
            assert_eq!(e.retryable(), status == 503);
        }
    }

    #[test]
    fn store_failures_map_to_conflict_unavailable_or_internal() {
        use store::StoreError;
        assert_eq!(LeaseError::from(StoreError::ConditionFailed("l".into())).status(), 409);
        assert_eq!(LeaseError::from(StoreError::AlreadyExists("l".into())).status(), 409);
        assert_eq!(LeaseError::from(StoreError::AtCapacity { role: "r".into(), live: 2 }).status(), 429);
        let backend = |retryable| StoreError::Backend { operation: "PutItem", message: "m".into(), retryable };
        assert_eq!(LeaseError::from(backend(true)).status(), 503);
        assert_eq!(LeaseError::from(backend(false)).status(), 500);
    }
}
