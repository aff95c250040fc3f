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

pub use crate::rotation::iam_key::IamError as AwsError;

/// The tag keys keyturn puts on sessions and users: policies and CloudTrail can key on them.
pub mod tag {
    /// The lease's id.
    pub const LEASE_ID: &str = "keyturn:lease-id";
    /// The ARN of the caller the lease was issued to.
    pub const CALLER: &str = "keyturn:caller";
    /// When the lease expires, as `YYYY-MM-DDTHH:MM:SSZ` (IAM users only: a session's
    /// expiry is its own).
    pub const EXPIRES_AT: &str = "keyturn:expires-at";
}

/// The name of the inline policy that denies an IAM user everything after its expiry.
pub const EXPIRY_POLICY: &str = "keyturn-expiry";
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
    /// After this, the user's [`EXPIRY_POLICY`] denies every action.
    pub expires_at: SystemTime,
}

/// Move an IAM user's expiry (its [`EXPIRY_POLICY`] and its expiry tag).
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

/// `at` as IAM's policy conditions and keyturn's tags write a time:
/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso8601(at: SystemTime) -> String {
    super::utc_datetime(at).replacen(' ', "T", 1) + "Z"
}

/// The [`EXPIRY_POLICY`] document of a user created under IAM path `path` for an expiry:
/// deny everything from then on. An explicit deny wins over every allow, so it holds
/// whatever else the user is given.
///
/// From the start it also denies the user every IAM action but reading (`iam:Get*`,
/// `iam:List*`) on the users keyturn answers for, itself included: every user under
/// `path`, every user tagged [`tag::LEASE_ID`] (a lease user of any role, under any path)
/// and every user tagged `keyturn-rotated` (a user whose keys rotate-iam-key rotates). A
/// user whose policies allow IAM (an administration role) could otherwise delete or
/// replace its own or another lease user's expiry policy or boundary (a key would then
/// outlive its lease), rename or move a user out of what revocation and the reaper look
/// for, rewrite the `keyturn:caller` tag policies key on, or give a lease user or a rotated
/// user a key or password of its own. The resources name users in any account and
/// partition (a `*` in a resource spans `/`). And it may not tag a session it makes (an
/// `AssumeRole` or federation token of its own) with keyturn's tag keys: session tags
/// override principal tags, so such a session could claim another lease's caller. Nor
/// may it change any user's group memberships: `iam:AddUserToGroup` and
/// `iam:RemoveUserFromGroup` name the group as their resource, not the member, so no
/// statement on users reaches them, and a group of the holder's own (its policy `Deny *`,
/// or `Allow iam:*`) would change what another lease user or a rotated user may do.
pub fn expiry_policy(path: &str, expires_at: SystemTime) -> String {
    crate::lease::role::expiry_policy_document(path, &iso8601(expires_at))
}

pub use crate::lease::role::expiry_policy_size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_policy_denies_iam_writes_on_keyturns_users_and_has_no_whitespace() {
        let path = "/keyturn-leases/";
        let policy = expiry_policy(path, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
        assert_eq!(policy.split_whitespace().count(), 1, "IAM counts no whitespace: {policy}");
        assert_eq!(policy.chars().count(), expiry_policy_size(path));
        assert_eq!(expiry_policy_size(path), 1071, "the README gives it");
        let value: serde_json::Value = serde_json::from_str(&policy).unwrap();
        let statements = value["Statement"].as_array().unwrap();
        assert_eq!(statements[0]["Condition"]["DateGreaterThan"]["aws:CurrentTime"], "2001-09-09T01:46:40Z");
        for statement in &statements[1..4] {
            assert_eq!(statement["Effect"], "Deny");
            assert_eq!(statement["NotAction"], serde_json::json!(["iam:Get*", "iam:List*"]));
        }
        assert_eq!(statements[1]["Resource"], "arn:*:iam::*:user/keyturn-leases/*");
        assert_eq!(statements[2]["Condition"]["Null"]["aws:ResourceTag/keyturn:lease-id"], "false");
        assert_eq!(statements[3]["Condition"]["Null"]["aws:ResourceTag/keyturn-rotated"], "false");
        // The document is built in `lease::role` (every build checks roles files), with
        // these keys written out: they must be the ones keyturn tags with.
        assert_eq!(tag::LEASE_ID, "keyturn:lease-id");
        assert_eq!(crate::rotation::iam_key::ROTATED_TAG, "keyturn-rotated");
        assert_eq!(statements[4]["Action"], "sts:TagSession");
        assert_eq!(statements[4]["Condition"]["ForAnyValue:StringLike"]["aws:TagKeys"], "keyturn:*");
        let shared = statements[5]["Action"].as_array().unwrap();
        for action in ["iam:AddUserToGroup", "iam:RemoveUserFromGroup", "iam:*GroupPolicy", "iam:CreatePolicyVersion"] {
            assert!(shared.iter().any(|a| a == action), "{action} in {shared:?}");
        }
        assert_eq!(statements[5]["Resource"], "*");
        assert!(expiry_policy_size(&format!("/{}/", "p".repeat(510))) > expiry_policy_size(path) + 490);
    }
}
