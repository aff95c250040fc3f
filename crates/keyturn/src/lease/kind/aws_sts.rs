//! The `aws-sts` kind: an STS session of an IAM role per lease (`sts:AssumeRole`), tagged
//! with its lease and holder. AWS cannot end a session early or extend it: it lives its TTL
//! (15 minutes to an hour) whatever keyturn does, and its lease is closed once it expired.
//!
//! ```toml
//! [[role]]
//! name = "deploy"
//! kind = "aws-sts"
//! role_arn = "arn:aws:iam::123456789012:role/deploy"
//! session_policy = '{"Version":"2012-10-17","Statement":[...]}'   # optional
//! policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]          # optional
//! external_id = "..."                                               # optional
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::super::field::{self, err, RolesError, POLICY_MAX};
use super::Field;

pub const NAME: &str = "aws-sts";
pub const KEYS: &[&str] = &["role_arn", "session_policy", "policy_arns", "external_id"];
/// The shortest session STS issues.
pub const MIN_TTL: Duration = Duration::from_secs(900);
pub const FIXED_TTL: Option<Duration> = None;
pub const REVOCABLE: bool = false;
/// The longest session keyturn asks for. The issuer runs with a role's session (a Lambda
/// execution role), and AWS caps a session assumed from a session (role chaining) at one
/// hour whatever the target role's maximum.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// An STS role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role assumed. Its trust policy must let the issuer's role `sts:AssumeRole` and
    /// `sts:TagSession`.
    pub role_arn: String,
    /// An inline session policy: the session gets what both it and the role allow.
    pub session_policy: Option<String>,
    /// Managed session policies, likewise narrowing the session.
    pub policy_arns: Vec<String>,
    /// Sent as `ExternalId`, for a trust policy that requires one.
    pub external_id: Option<String>,
}

/// What an STS lease records: the session's name is its `username`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub role_arn: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    role_arn: Option<String>,
    session_policy: Option<String>,
    policy_arns: Option<Vec<String>>,
    external_id: Option<String>,
}

pub fn parse(name: &str, table: toml::Table) -> Result<Role, RolesError> {
    let raw: Raw = field::read(name, table)?;
    let role = Some(name);
    let role_arn = raw.role_arn.ok_or_else(|| err(role, "role_arn", "is required"))?;
    if !field::is_iam_arn(&role_arn, "role/") {
        return Err(err(
            role,
            "role_arn",
            format!("{role_arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
        ));
    }
    let external_id = match raw.external_id {
        // STS's own limits: 2 to 1224 characters of [\w+=,.@:/-].
        Some(id)
            if !(2..=1224).contains(&id.len())
                || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b)) =>
        {
            return Err(err(role, "external_id", "must be 2 to 1224 letters, digits or _+=,.@:/- characters"));
        }
        other => other,
    };
    Ok(Role {
        role_arn,
        session_policy: field::policy(role, "session_policy", raw.session_policy.as_deref(), POLICY_MAX, "")?,
        policy_arns: field::policy_arns(role, raw.policy_arns.as_deref())?,
        external_id,
    })
}

pub fn check_ttl(ttl: Duration, text: &str) -> Result<(), String> {
    if ttl < MIN_TTL {
        return Err(format!("{text:?} is under 15m, the shortest STS session"));
    }
    if ttl > MAX_TTL {
        return Err(format!(
            "{text:?} is over 1h: the issuer's own credentials are a role session, and AWS limits a session \
             assumed from one (role chaining) to an hour"
        ));
    }
    Ok(())
}

/// Stored as `role_arn`.
pub fn fields(c: &Credential) -> Vec<(&'static str, Field)> {
    vec![("role_arn", Field::S(c.role_arn.clone()))]
}

pub fn from_fields<F: super::Fields>(f: &F) -> Result<Credential, F::Error> {
    Ok(Credential { role_arn: f.s("role_arn")? })
}

#[cfg(feature = "lease")]
pub use io::*;

#[cfg(feature = "lease")]
mod io {
    pub use super::super::io::self_expiring::{delete, renew, sweep};
    use super::super::io::{aws_error, aws_keys_answer, lease_tags, Io, IssueRequest, Made, Ports, Prepared};
    use super::{Credential, Role};
    use crate::backend::aws::{AssumeRole, AwsCredentials, AwsKeys};
    use crate::contract::IssuedCredential;
    use crate::lease::{principal, Lease, LeaseError};

    /// The session's access key, secret key and token, and its expiry as STS reports it.
    pub type Secret = AwsKeys;

    /// The session's keys, its name (the lease's username) and the role assumed.
    pub fn answer(keys: &Secret, lease: &Lease) -> IssuedCredential {
        let role_arn = match &lease.credential {
            super::super::Credential::AwsSts(Credential { role_arn }) => Some(role_arn.clone()),
            _ => None,
        };
        IssuedCredential::Aws(aws_keys_answer(keys, |answer| {
            answer.session_name = Some(lease.username.clone());
            answer.role_arn = role_arn;
        }))
    }

    pub async fn prepare<P: Ports>(_: &Io<P>, role: &Role, req: &IssueRequest<'_>) -> Result<Prepared, LeaseError> {
        // Refused before anything is written when the caller cannot be a tag.
        lease_tags(req)?;
        Ok(Prepared {
            username: principal::session_name(req.caller, req.lease_id),
            credential: super::super::Credential::AwsSts(Credential { role_arn: role.role_arn.clone() }),
            server_expiry: true,
        })
    }

    pub async fn make<P: Ports>(
        io: &Io<P>,
        role: &Role,
        req: &IssueRequest<'_>,
        lease: &Lease,
    ) -> Result<Made, LeaseError> {
        let request = AssumeRole {
            role_arn: role.role_arn.clone(),
            session_name: lease.username.clone(),
            duration: req.ttl,
            session_policy: role.session_policy.clone(),
            policy_arns: role.policy_arns.clone(),
            external_id: role.external_id.clone(),
            tags: lease_tags(req)?,
        };
        let keys = io.aws.assume_role(request).await.map_err(|e| aws_error(e, req.role))?;
        Ok(Made { secret: super::super::Secret::AwsSts(keys), server_expiry: None })
    }
}
