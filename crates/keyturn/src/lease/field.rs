//! The checks of roles-file values that more than one part of the file shares (lists of
//! names, ARNs, policy documents), and the error every roles-file check gives, naming the
//! role and the key. Each kind's own keys are checked in its module under [`super::kind`].

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;

/// IAM's limit on an inline session policy's text, and on all of a user's inline policies
/// together, in characters.
pub const POLICY_MAX: usize = 2048;
/// IAM's limit on managed policies attached to a user and on managed session policies.
const POLICY_ARNS_MAX: usize = 10;
/// The longest database role or user name (PostgreSQL's identifier limit; MySQL's is lower
/// and is checked by the server when the role is granted).
pub const DB_NAME_MAX: usize = 63;

/// A roles file that could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}{field} {problem}", role.as_ref().map(|r| format!("role {r:?}: ")).unwrap_or_default())]
pub struct RolesError {
    /// The role the error is in (its name, or `#N` when it has none), if any.
    pub role: Option<String>,
    /// The key (or `roles file` for the file as a whole).
    pub field: String,
    pub problem: String,
}

/// The error about `field` of `role` (of the file as a whole when `None`).
pub fn err(role: Option<&str>, field: &str, problem: impl Into<String>) -> RolesError {
    RolesError { role: role.map(str::to_owned), field: field.into(), problem: problem.into() }
}

/// A role's table read into `T` (a kind's keys): a key of the wrong type is named as TOML
/// names it.
pub fn read<T: DeserializeOwned>(role: &str, table: toml::Table) -> Result<T, RolesError> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| err(Some(role), "definition", format!("is not valid: {}", e.message().trim())))
}

/// A list of names: each non-empty, at most `max` bytes, no control characters or outer
/// space, none twice.
pub fn names(
    role: Option<&str>,
    field: &str,
    list: &[String],
    max: usize,
    what: &str,
) -> Result<Vec<String>, RolesError> {
    let mut seen = BTreeSet::new();
    for name in list {
        if name.is_empty() || name.len() > max || name.chars().any(char::is_control) || name.trim() != name {
            return Err(err(
                role,
                field,
                format!(
                    "{name:?} is not {what} (1 to {max} bytes, no control characters, no leading or trailing space)"
                ),
            ));
        }
        if !seen.insert(name) {
            return Err(err(role, field, format!("{name:?} is listed twice")));
        }
    }
    Ok(list.to_vec())
}

/// A policy document: a JSON object with a `Statement`, of characters IAM and STS take, at
/// most `max` characters (`why` explains a `max` under IAM's own 2048). IAM checks the
/// grammar; this catches what would otherwise fail at the first issue.
pub fn policy(
    role: Option<&str>,
    field: &str,
    text: Option<&str>,
    max: usize,
    why: &str,
) -> Result<Option<String>, RolesError> {
    let Some(text) = text else { return Ok(None) };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(role, field, format!("is not JSON: {e}")))?;
    if value.get("Statement").is_none() {
        return Err(err(role, field, "is not a policy document (a JSON object with a Statement)"));
    }
    // IAM counts the policy without its whitespace.
    let packed = value.to_string();
    // Control characters come out escaped; anything above U+00FF would be refused.
    if let Some(c) = packed.chars().find(|c| u32::from(*c) > 0xFF) {
        return Err(err(role, field, format!("has {c:?}: IAM takes policy text of Latin-1 characters only")));
    }
    if packed.chars().count() > max {
        return Err(err(role, field, format!("is over {max} characters{why}")));
    }
    Ok(Some(packed))
}

pub fn policy_arns(role: Option<&str>, list: Option<&[String]>) -> Result<Vec<String>, RolesError> {
    let list = names(role, "policy_arns", list.unwrap_or_default(), 2048, "a policy ARN")?;
    if list.len() > POLICY_ARNS_MAX {
        return Err(err(role, "policy_arns", format!("lists {} policies; IAM allows {POLICY_ARNS_MAX}", list.len())));
    }
    for arn in &list {
        if !is_iam_arn(arn, "policy/") {
            return Err(err(role, "policy_arns", format!("{arn:?} is not a managed policy ARN")));
        }
    }
    Ok(list)
}

/// `arn:<partition>:iam::<account>:<resource_type><name>`, where the account is 12 digits,
/// or `aws` for AWS managed policies; no wildcards.
pub fn is_iam_arn(arn: &str, resource_type: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && ((parts[4].len() == 12 && parts[4].bytes().all(|b| b.is_ascii_digit()))
            || (parts[4] == "aws" && resource_type == "policy/"))
        && parts[5].strip_prefix(resource_type).is_some_and(|name| !name.is_empty() && !name.ends_with('/'))
        && arn.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?')
}

/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`, no wildcards.
pub fn is_secret_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    parts.len() == 7
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "secretsmanager"
        && !parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5] == "secret"
        && !parts[6].is_empty()
        && arn.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'?')
}
