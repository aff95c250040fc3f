//! The secret store the rotation engine reads and writes: Secrets Manager in production
//! ([`crate::aws::secretsmanager`]), a fake in unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use secrecy::SecretString;

/// The staging label of the version in use.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The staging label of the version being rotated in.
pub const AWSPENDING: &str = "AWSPENDING";
/// The staging label of the version that was in use before the last rotation.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// What `DescribeSecret` tells about a secret: enough to decide every step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretMetadata {
    pub arn: String,
    pub name: String,
    /// A secret never set up for rotation reports no flag at all: that reads as `false`.
    pub rotation_enabled: bool,
    /// Version id to its staging labels (versions without labels are not listed here).
    pub versions: BTreeMap<String, BTreeSet<String>>,
    /// The secret's tags (RDS marks the secrets it manages with `aws:rds:*` tags).
    pub tags: BTreeMap<String, String>,
}

impl SecretMetadata {
    /// The version that carries `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions.iter().find(|(_, stages)| stages.contains(stage)).map(|(id, _)| id.as_str())
    }
}

/// One entry of `ListSecretVersionIds`, deprecated versions included.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub id: String,
    pub stages: BTreeSet<String>,
    /// Seconds since the epoch, when the store knows it.
    pub created: Option<f64>,
}

/// Which version of a secret to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// The version carrying this staging label.
    Stage(&'a str),
    /// This version, whatever its labels.
    Version(&'a str),
    /// This version, only while it carries this label.
    VersionAndStage(&'a str, &'a str),
}

/// One call of `UpdateSecretVersionStage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageMove {
    pub stage: &'static str,
    pub move_to: Option<String>,
    pub remove_from: Option<String>,
}

/// A failure talking to the store.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub message: String,
    /// Throttling, timeouts and server errors: worth retrying as they are.
    pub retryable: bool,
}

/// The operations rotation needs from Secrets Manager.
pub trait SecretStore: Send + Sync {
    /// `DescribeSecret`.
    fn describe(&self, secret_id: &str) -> impl Future<Output = Result<SecretMetadata, StoreError>> + Send;
    /// `GetSecretValue`: `Ok(None)` when that version or label does not exist or has no value.
    fn get(
        &self,
        secret_id: &str,
        selector: Selector<'_>,
    ) -> impl Future<Output = Result<Option<SecretString>, StoreError>> + Send;
    /// `PutSecretValue` with `VersionStages = [AWSPENDING]` and the token as the version id.
    fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `UpdateSecretVersionStage`.
    fn move_stage(&self, secret_id: &str, change: &StageMove) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `ListSecretVersionIds` with deprecated versions, every page.
    fn list_versions(&self, secret_id: &str) -> impl Future<Output = Result<Vec<VersionInfo>, StoreError>> + Send;
}
