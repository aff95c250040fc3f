//! The `aws-iam-user` kind: an IAM user with one access key per lease, under keyturn's IAM
//! path, with a permissions boundary, the role's policies and groups, and keyturn's expiry
//! policy (which denies it everything after the lease's expiry, and any IAM write on
//! keyturn's users from the start); deleted with everything attached at revocation.
//!
//! ```toml
//! [[role]]
//! name = "uploader"
//! kind = "aws-iam-user"
//! permissions_boundary = "arn:aws:iam::123456789012:policy/keyturn-boundary"
//! policy_arns = ["arn:aws:iam::123456789012:policy/uploads"]
//! path = "/keyturn-leases/"   # the default
//! inline_policy = '...'        # optional
//! groups = ["uploaders"]       # optional
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::super::field::{self, err, RolesError};
use super::Field;
use crate::backend::aws::tag;

pub const NAME: &str = "aws-iam-user";
pub const KEYS: &[&str] = &["path", "permissions_boundary", "policy_arns", "inline_policy", "groups"];
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const FIXED_TTL: Option<Duration> = None;
pub const REVOCABLE: bool = true;
/// The default IAM path of the users an `aws-iam-user` role creates.
pub const DEFAULT_IAM_PATH: &str = "/keyturn-leases/";
/// IAM's limit on a user name.
pub const USERNAME_MAX: usize = 64;
/// The name of the inline policy that denies a lease's IAM user everything after its expiry.
pub const EXPIRY_POLICY: &str = "keyturn-expiry";
/// How long IAM usually takes to accept a new user's access key everywhere (IAM is
/// eventually consistent); the answer tells the caller, who should retry an authentication
/// failure within it.
pub const IAM_PROPAGATION: Duration = Duration::from_secs(10);

/// An IAM user role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The IAM path users are created under ([`DEFAULT_IAM_PATH`] by default); the issuer's
    /// IAM permissions should cover users under this path only, and the reaper's orphan
    /// sweep looks there.
    pub path: String,
    /// The managed policy every user gets as its permissions boundary (required: whatever
    /// else is attached, the user can never do more).
    pub permissions_boundary: String,
    /// Managed policies attached to the user.
    pub policy_arns: Vec<String>,
    /// An inline policy put on the user.
    pub inline_policy: Option<String>,
    /// IAM groups the user is added to.
    pub groups: Vec<String>,
}

/// What an IAM user lease records: the user is its `username`; revocation needs no more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<String>,
    permissions_boundary: Option<String>,
    policy_arns: Option<Vec<String>>,
    inline_policy: Option<String>,
    groups: Option<Vec<String>>,
}

pub fn parse(name: &str, table: toml::Table) -> Result<Role, RolesError> {
    let raw: Raw = field::read(name, table)?;
    let role = Some(name);
    let path = raw.path.clone().unwrap_or_else(|| DEFAULT_IAM_PATH.to_owned());
    // IAM's path syntax, minus the root: users under `/` could not be told from anyone's.
    let path_ok = path.len() <= 512
        && path.len() > 2
        && path.starts_with('/')
        && path.ends_with('/')
        && !path.contains("//")
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+=,.@-".contains(&b));
    if !path_ok {
        return Err(err(
            role,
            "path",
            format!("{path:?} is not an IAM path of keyturn's own (such as /keyturn/: slashes around letters, digits and _+=,.@-)"),
        ));
    }
    let boundary = raw
        .permissions_boundary
        .clone()
        .ok_or_else(|| err(role, "permissions_boundary", "is required: every IAM user keyturn creates has one"))?;
    if !field::is_iam_arn(&boundary, "policy/") {
        return Err(err(role, "permissions_boundary", format!("{boundary:?} is not a managed policy ARN")));
    }
    let groups = field::names(role, "groups", raw.groups.as_deref().unwrap_or_default(), 128, "an IAM group name")?;
    for group in &groups {
        if !group.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)) {
            return Err(err(role, "groups", format!("{group:?} is not an IAM group name")));
        }
    }
    let policy_arns = field::policy_arns(role, raw.policy_arns.as_deref())?;
    // keyturn's expiry policy takes its share first; its size depends on the path only.
    let inline_policy = field::policy(
        role,
        "inline_policy",
        raw.inline_policy.as_deref(),
        field::POLICY_MAX.saturating_sub(expiry_policy_size(&path)),
        ": IAM allows 2048 for all of a user's inline policies together, and keyturn's expiry policy is one of them",
    )?;
    if policy_arns.is_empty() && inline_policy.is_none() && groups.is_empty() {
        return Err(err(role, "policy_arns", "inline_policy or groups must give the user something to do"));
    }
    Ok(Role { path, permissions_boundary: boundary, policy_arns, inline_policy, groups })
}

pub fn check_ttl(_ttl: Duration, _text: &str) -> Result<(), String> {
    Ok(())
}

/// Nothing stored beside the kind.
pub fn fields(_: &Credential) -> Vec<(&'static str, Field)> {
    Vec::new()
}

pub fn from_fields<F: super::Fields>(_: &F) -> Result<Credential, F::Error> {
    Ok(Credential)
}

/// The users a lease user's expiry policy protects beyond its path, by tag key (with the
/// statement's Sid): lease users of any path and users rotate-iam-key rotates.
const PROTECTED_BY_TAG: [(&str, &str); 2] =
    [("KeyturnLeaseUsersAnywhere", tag::LEASE_ID), ("KeyturnRotatedUsers", tag::ROTATED)];

/// The document of keyturn's expiry policy ([`EXPIRY_POLICY`]; the adapter,
/// `aws::credentials`, writes it) on an IAM user under IAM path
/// `path` that expires at `expires_at` (`YYYY-MM-DDTHH:MM:SSZ`): deny everything from then
/// on. An explicit deny wins over every allow, so it holds whatever else the user is given.
///
/// From the start it also denies the user every IAM action but reading (`iam:Get*`,
/// `iam:List*`) on the users keyturn answers for, itself included: every user under
/// `path`, every user tagged [`tag::LEASE_ID`] (a lease user of any role, under any path)
/// and every user tagged [`tag::ROTATED`] (a user whose keys rotate-iam-key rotates). A
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
///
/// Built in every build (the CLI's `roles-check` included), so that a role's
/// `inline_policy`'s room is measured against the very document.
pub fn expiry_policy_document(path: &str, expires_at: &str) -> String {
    let not_reading = ["iam:Get*", "iam:List*"];
    let by_tag = PROTECTED_BY_TAG.map(|(sid, key)| {
        serde_json::json!({
            "Sid": sid,
            "Effect": "Deny",
            "NotAction": not_reading,
            "Resource": "arn:*:iam::*:user/*",
            "Condition": {"Null": {format!("aws:ResourceTag/{key}"): "false"}}
        })
    });
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "KeyturnLeaseExpired",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": expires_at}}
        }, {
            "Sid": "KeyturnLeaseUsers",
            "Effect": "Deny",
            "NotAction": not_reading,
            "Resource": format!("arn:*:iam::*:user{path}*")
        },
        by_tag[0],
        by_tag[1],
        {
            "Sid": "KeyturnTagsAreKeyturns",
            "Effect": "Deny",
            "Action": "sts:TagSession",
            "Resource": "*",
            "Condition": {"ForAnyValue:StringLike": {"aws:TagKeys": "keyturn:*"}}
        }, {
            // What binds every lease user but is not a user: group memberships and groups'
            // policies (these actions name the group, not its members), and managed
            // policies (a boundary or `policy_arns` shared by every lease user of the
            // deployment). IAM has no condition key for "a policy some lease user holds",
            // so a lease user changes none at all.
            "Sid": "KeyturnSharedIam",
            "Effect": "Deny",
            "Action": [
                "iam:AddUserToGroup", "iam:RemoveUserFromGroup", "iam:*GroupPolicy", "iam:DeleteGroup",
                "iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy*"
            ],
            "Resource": "*"
        }]
    })
    .to_string()
}

/// How many of the [`field::POLICY_MAX`] characters IAM allows for all of a user's inline
/// policies the expiry policy of a user under `path` takes (IAM counts no whitespace, and
/// the document has none): the rest is a role's `inline_policy`'s.
pub fn expiry_policy_size(path: &str) -> usize {
    // Every expiry is written in as many characters.
    expiry_policy_document(path, "9999-12-31T23:59:59Z").chars().count()
}

#[cfg(feature = "lease")]
pub use io::*;

#[cfg(feature = "lease")]
mod io {
    use std::time::{Duration, UNIX_EPOCH};

    use super::super::io::{
        aws_error, aws_keys_answer, lease_tags, username, Io, IssueRequest, Made, Orphans, Ports, Prepared, SweepReport,
    };
    use super::{Credential, Role, IAM_PROPAGATION, USERNAME_MAX};
    use crate::backend::aws::{tag, AwsCredentials, AwsKeys, DeleteIamUser, ListIamUsers, NewIamUser, UpdateIamUser};
    use crate::backend::DeleteOutcome;
    use crate::contract::IssuedCredential;
    use crate::lease::{gone_user, Lease, LeaseError};
    use crate::time::iso8601;

    /// The user's access key, and how long until it works everywhere.
    #[derive(Debug)]
    pub struct Secret {
        pub keys: AwsKeys,
        pub propagation: Duration,
    }

    /// The user's key, its name (the lease's username), and how long until it works.
    pub fn answer(secret: &Secret, lease: &Lease) -> IssuedCredential {
        IssuedCredential::Aws(aws_keys_answer(&secret.keys, |answer| {
            answer.username = Some(lease.username.clone());
            answer.propagation_delay_seconds = Some(secret.propagation.as_secs());
        }))
    }

    pub async fn prepare<P: Ports>(_: &Io<P>, _: &Role, req: &IssueRequest<'_>) -> Result<Prepared, LeaseError> {
        // Refused before anything is written when the caller cannot be a tag.
        lease_tags(req)?;
        Ok(Prepared {
            username: username(req, USERNAME_MAX)?,
            credential: super::super::Credential::AwsIamUser(Credential),
            server_expiry: true,
        })
    }

    pub async fn make<P: Ports>(
        io: &Io<P>,
        role: &Role,
        req: &IssueRequest<'_>,
        lease: &Lease,
    ) -> Result<Made, LeaseError> {
        let expires_at = UNIX_EPOCH + Duration::from_secs(lease.expires_at);
        let request = NewIamUser {
            user_name: lease.username.clone(),
            path: role.path.clone(),
            permissions_boundary: role.permissions_boundary.clone(),
            policy_arns: role.policy_arns.clone(),
            inline_policy: role.inline_policy.clone(),
            groups: role.groups.clone(),
            tags: lease_tags(req)?.into_iter().chain([(tag::EXPIRES_AT.to_owned(), iso8601(expires_at))]).collect(),
            expires_at,
        };
        let keys = io.aws.new_iam_user(request).await.map_err(|e| aws_error(e, req.role))?;
        Ok(Made {
            secret: super::super::Secret::AwsIamUser(Secret { keys, propagation: IAM_PROPAGATION }),
            server_expiry: None,
        })
    }

    pub async fn renew<P: Ports>(
        io: &Io<P>,
        _: &Credential,
        role: Option<&Role>,
        lease: &Lease,
        expires_at: u64,
    ) -> Result<(), LeaseError> {
        // The role's path: the new expiry policy protects the users under it.
        let Some(role) = role else {
            return Err(LeaseError::Conflict(format!(
                "lease {:?} is of role {:?}, which no longer issues IAM users: it can only be revoked",
                lease.lease_id, lease.role
            )));
        };
        let request = UpdateIamUser {
            user_name: lease.username.clone(),
            path: role.path.clone(),
            expires_at: UNIX_EPOCH + Duration::from_secs(expires_at),
        };
        match io.aws.update_iam_user(request).await {
            Ok(()) => Ok(()),
            Err(e) if e.not_found => Err(gone_user(&lease.lease_id)),
            Err(e) => Err(aws_error(e, &lease.role)),
        }
    }

    pub async fn delete<P: Ports>(io: &Io<P>, _: &Credential, lease: &Lease) -> Result<DeleteOutcome, LeaseError> {
        let deleted = io
            .aws
            .delete_iam_user(DeleteIamUser { user_name: lease.username.clone() })
            .await
            .map_err(|e| aws_error(e, &lease.role))?;
        Ok(DeleteOutcome { existed: deleted.existed, sessions_ended: 0 })
    }

    /// Under every IAM path a role names: users of keyturn's form without a live lease are
    /// deleted.
    pub async fn sweep<P: Ports>(
        io: &Io<P>,
        roles: &[(&str, &Role)],
        prefix: &str,
        orphans: &impl Orphans,
        out: &mut SweepReport,
    ) {
        let paths: std::collections::BTreeSet<&str> = roles.iter().map(|(_, r)| r.path.as_str()).collect();
        for path in paths {
            if let Err(e) = sweep_path(io, path, prefix, orphans, out).await {
                tracing::warn!(iam_path = path, error = %e, "orphan sweep failed");
                out.errors.push(format!("IAM users under {path}: {e}"));
            }
        }
    }

    async fn sweep_path<P: Ports>(
        io: &Io<P>,
        path: &str,
        prefix: &str,
        orphans: &impl Orphans,
        out: &mut SweepReport,
    ) -> Result<(), LeaseError> {
        let request = ListIamUsers { path: path.to_owned(), prefix: prefix.to_owned() };
        let listed = io.aws.list_iam_users(request).await.map_err(|e| aws_error(e, "(orphan sweep)"))?;
        for (user, _) in orphans.orphans(listed).await? {
            let request = DeleteIamUser { user_name: user.clone() };
            io.aws.delete_iam_user(request).await.map_err(|e| aws_error(e, "(orphan sweep)"))?;
            tracing::warn!(username = %user, iam_path = path, "orphan IAM user deleted: no live lease accounts for it");
            out.dropped.push(user);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_policy_denies_iam_writes_on_keyturns_users_and_has_no_whitespace() {
        let path = "/keyturn-leases/";
        let policy = expiry_policy_document(path, "2001-09-09T01:46:40Z");
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
