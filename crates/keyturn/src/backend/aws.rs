//! AWS credentials issued per lease, behind one interface ([`AwsCredentials`]) shaped like
//! the database users' ([`super::DynamicUsers`]): one owned request type per operation,
//! expiry as a field, a delete that removes every access it can and succeeds when the
//! user is already gone. The adapter over IAM, STS and the RDS token signer is
//! `crate::aws::credentials`.
//!
//! - An STS session ([`AssumeRole`]) and an RDS IAM token ([`RdsToken`]) expire by
//!   themselves and cannot be ended early: nothing to update or delete.
//! - An IAM user ([`NewIamUser`]) is created under keyturn's path with a permissions
//!   boundary, its policies and groups, an inline policy that denies everything after its
//!   expiry (so the key stops working then even if the reaper does not run) and one access
//!   key. [`UpdateIamUser`] moves that expiry; [`DeleteIamUser`] takes everything away and
//!   deletes it.

use std::future::Future;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

/// A failed IAM, STS or RDS call, as the adapters report it (also key rotation's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct AwsError {
    pub operation: &'static str,
    pub message: String,
    /// The user or key does not exist.
    pub not_found: bool,
    pub retryable: bool,
}

/// The tag keys keyturn puts on sessions and users: policies and CloudTrail can key on them.
pub mod tag {
    /// The lease's id.
    pub const LEASE_ID: &str = "keyturn:lease-id";
    /// The ARN of the caller the lease was issued to.
    pub const CALLER: &str = "keyturn:caller";
    /// When the lease expires, as `YYYY-MM-DDTHH:MM:SSZ` (IAM users only: a session's
    /// expiry is its own).
    pub const EXPIRES_AT: &str = "keyturn:expires-at";
    /// On a user whose keys rotate-iam-key rotates.
    pub const ROTATED: &str = "keyturn-rotated";
}

/// The name of the role's inline policy on an IAM user.
pub const ROLE_POLICY: &str = "keyturn-role";

/// `sts:AssumeRole` for one lease.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    /// `RoleSessionName`, at most 64 characters of `[\w+=,.@-]`.
    pub session_name: String,
    /// From 900 seconds to the role's maximum session duration.
    pub duration: Duration,
    pub session_policy: Option<String>,
    pub policy_arns: Vec<String>,
    pub external_id: Option<String>,
    /// Session tags (`sts:TagSession`), keys from [`tag`].
    pub tags: Vec<(String, String)>,
}

/// An access key: an STS session's (with its token and expiry) or an IAM user's.
#[derive(Debug, Clone)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
    /// The session's expiry as STS reports it (Unix seconds); `None` for a user's key.
    pub expiration: Option<u64>,
}

/// Create an IAM user with everything the role gives it, then its access key.
#[derive(Debug, Clone)]
pub struct NewIamUser {
    pub user_name: String,
    pub path: String,
    pub permissions_boundary: String,
    pub policy_arns: Vec<String>,
    pub inline_policy: Option<String>,
    pub groups: Vec<String>,
    /// User tags, keys from [`tag`].
    pub tags: Vec<(String, String)>,
    /// After this, the user's expiry policy denies every action.
    pub expires_at: SystemTime,
}

/// Move an IAM user's expiry (its expiry policy and its expiry tag).
#[derive(Debug, Clone)]
pub struct UpdateIamUser {
    pub user_name: String,
    /// The IAM path of the role's users, which the expiry policy protects.
    pub path: String,
    pub expires_at: SystemTime,
}

/// Delete an IAM user and everything that lets it in: access keys, login profile, other
/// credentials, attached and inline policies, group memberships. Succeeds when the user
/// does not exist; also cleans up a user whose creation stopped halfway.
#[derive(Debug, Clone)]
pub struct DeleteIamUser {
    pub user_name: String,
}

/// IAM users under `path` whose name starts with `prefix`.
#[derive(Debug, Clone)]
pub struct ListIamUsers {
    pub path: String,
    pub prefix: String,
}

/// An RDS IAM authentication token, signed locally with the issuer's own credentials
/// (which need `rds-db:connect` on the database user), valid 15 minutes.
#[derive(Debug, Clone)]
pub struct RdsToken {
    pub host: String,
    pub port: u16,
    pub region: String,
    pub db_user: String,
}

/// What [`AwsCredentials::delete_iam_user`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IamUserDeleted {
    /// The user existed (and is now gone).
    pub existed: bool,
}

/// AWS credentials per lease (see the module's documentation).
pub trait AwsCredentials: Send + Sync {
    fn assume_role(&self, req: AssumeRole) -> impl Future<Output = Result<AwsKeys, AwsError>> + Send;

    /// Creates the user and its key. On failure part of it may exist: the caller deletes
    /// it with [`AwsCredentials::delete_iam_user`].
    fn new_iam_user(&self, req: NewIamUser) -> impl Future<Output = Result<AwsKeys, AwsError>> + Send;

    /// `not_found` in the error when the user is gone.
    fn update_iam_user(&self, req: UpdateIamUser) -> impl Future<Output = Result<(), AwsError>> + Send;

    fn delete_iam_user(&self, req: DeleteIamUser) -> impl Future<Output = Result<IamUserDeleted, AwsError>> + Send;

    /// The names of the users listed.
    fn list_iam_users(&self, req: ListIamUsers) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send;

    fn rds_token(&self, req: RdsToken) -> impl Future<Output = Result<SecretString, AwsError>> + Send;
}
