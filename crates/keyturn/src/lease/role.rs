//! The roles file: which credentials may be requested, by whom, for how long.
//!
//! ```toml
//! admin_principals = ["arn:aws:iam::123456789012:role/keyturn-admin"]
//! username_prefix = "kt_"   # the default
//!
//! [[role]]
//! name = "ci-reader"
//! kind = "database"
//! admin_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pg-admin-AbCdEf"
//! groups = ["app_read"]
//! default_ttl = "15m"
//! max_ttl = "1h"
//! allowed_principals = ["arn:aws:iam::123456789012:role/ci-*"]
//! max_leases = 50
//! ```
//!
//! Unknown keys are refused (a typo must not change behaviour unseen), and so is anything
//! this version cannot honour; every error names the role and the field.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::decide::{ArnPattern, DEFAULT_USERNAME_PREFIX};

/// The longest `max_ttl` a role may have: these are short-lived credentials, and a user
/// that outlives a working day is what keyturn is there to prevent.
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// The longest duration [`parse_ttl`] reads (about 31 years); roles are held to
/// [`MAX_TTL_LIMIT`] on top of it.
pub const TTL_PARSE_MAX: Duration = Duration::from_secs(1_000_000_000);
/// The longest `username_prefix` without its `_`.
pub const USERNAME_PREFIX_MAX: usize = 8;
/// The longest role name: it goes into usernames (see [`super::decide::username`]).
pub const ROLE_NAME_MAX: usize = 32;
/// The longest group role name (PostgreSQL's identifier limit; MySQL's is lower and is
/// checked by the server when the role is granted).
const GROUP_NAME_MAX: usize = 63;

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

fn err(role: Option<&str>, field: &str, problem: impl Into<String>) -> RolesError {
    RolesError { role: role.map(str::to_owned), field: field.into(), problem: problem.into() }
}

/// Every role of the file, and who may act on any lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Principals allowed to renew and revoke any lease (not to request credentials).
    pub admin_principals: Vec<ArnPattern>,
    /// What every username this deployment creates starts with (default `kt_`). The
    /// reaper drops users of this form that no live lease of this deployment accounts for,
    /// so two deployments sharing a database must use different prefixes.
    pub username_prefix: String,
    roles: Vec<Role>,
}

/// One role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub kind: RoleKind,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Who may request credentials of this role; empty means nobody.
    pub allowed_principals: Vec<ArnPattern>,
    /// The most live (not yet revoked) leases the role may have at once.
    pub max_leases: Option<u32>,
}

/// What kind of credential a role issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleKind {
    Database(DatabaseRole),
}

/// A database user created per lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRole {
    /// The Secrets Manager ARN of the admin secret (the rotation functions' JSON format),
    /// which says which database to create the user in.
    pub admin_secret: String,
    /// The group roles the user joins. With one, the user acts as it (its default role),
    /// so what it creates belongs to the group; with several it keeps every group's rights
    /// (acting as one would drop the others') and what it creates is given to the first
    /// when the lease ends. Either way nothing it made blocks revocation.
    pub groups: Vec<String>,
    /// The database callers are told to connect to; the admin secret's `dbname` when
    /// absent. Users are server-wide on both engines: this names where the group's grants
    /// are, it does not confine the user.
    pub dbname: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    admin_principals: Vec<String>,
    username_prefix: Option<String>,
    #[serde(default)]
    role: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: String,
    kind: String,
    admin_secret: Option<String>,
    groups: Option<Vec<String>>,
    dbname: Option<String>,
    creation_statements: Option<toml::Value>,
    default_ttl: String,
    max_ttl: String,
    #[serde(default)]
    allowed_principals: Vec<String>,
    max_leases: Option<i64>,
}

impl Roles {
    /// Reads and validates a roles file.
    pub fn load(path: &Path) -> Result<Self, RolesError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(None, "roles file", format!("{} could not be read: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses and validates the text of a roles file.
    pub fn from_toml(text: &str) -> Result<Self, RolesError> {
        let raw: RawFile =
            toml::from_str(text).map_err(|e| err(None, "roles file", format!("is not valid: {}", e.message())))?;
        let admin_principals = patterns(None, "admin_principals", &raw.admin_principals)?;
        let username_prefix = raw.username_prefix.unwrap_or_else(|| DEFAULT_USERNAME_PREFIX.to_owned());
        let body = username_prefix.strip_suffix('_').unwrap_or("");
        if body.is_empty()
            || body.len() > USERNAME_PREFIX_MAX
            || !body.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            || !body.as_bytes()[0].is_ascii_lowercase()
        {
            return Err(err(
                None,
                "username_prefix",
                format!(
                    "{username_prefix:?} must be a lowercase letter, up to {} more lowercase letters or digits, then _",
                    USERNAME_PREFIX_MAX - 1
                ),
            ));
        }
        let mut roles = Vec::with_capacity(raw.role.len());
        let mut names = BTreeSet::new();
        for (i, table) in raw.role.into_iter().enumerate() {
            let label = match table.get("name").and_then(toml::Value::as_str) {
                Some(name) => name.to_owned(),
                None => format!("#{}", i + 1),
            };
            let raw: RawRole = toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| err(Some(&label), "", e.message().trim().to_owned()))
                .map_err(|mut e| {
                    e.field = "definition".into();
                    e.problem = format!("is not valid: {}", e.problem);
                    e
                })?;
            let role = Role::from_raw(raw)?;
            if !names.insert(role.name.clone()) {
                return Err(err(Some(&role.name), "name", "is used by another role"));
            }
            roles.push(role);
        }
        Ok(Self { admin_principals, username_prefix, roles })
    }

    /// The role of that name.
    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// Every role, in the file's order.
    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.roles.iter()
    }
}

impl Role {
    fn from_raw(raw: RawRole) -> Result<Self, RolesError> {
        let name = raw.name;
        if name.is_empty()
            || name.len() > ROLE_NAME_MAX
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(err(
                Some(&name),
                "name",
                format!("must be 1 to {ROLE_NAME_MAX} letters, digits, _ or - (it goes into usernames)"),
            ));
        }
        let role = Some(name.as_str());
        if raw.creation_statements.is_some() {
            return Err(err(
                role,
                "creation_statements",
                "is not supported yet: give the role's privileges to a group role and list it in groups",
            ));
        }
        let kind = match raw.kind.as_str() {
            "database" => {
                let admin_secret = raw.admin_secret.ok_or_else(|| err(role, "admin_secret", "is required"))?;
                if !is_secret_arn(&admin_secret) {
                    return Err(err(
                        role,
                        "admin_secret",
                        format!("{admin_secret:?} is not a Secrets Manager secret ARN"),
                    ));
                }
                let groups = raw.groups.unwrap_or_default();
                if groups.is_empty() {
                    return Err(err(role, "groups", "must name at least one group role for the user to join"));
                }
                let mut seen = BTreeSet::new();
                for group in &groups {
                    if group.is_empty()
                        || group.len() > GROUP_NAME_MAX
                        || group.chars().any(char::is_control)
                        || group.trim() != group
                    {
                        return Err(err(
                            role,
                            "groups",
                            format!("{group:?} is not a role name (1 to {GROUP_NAME_MAX} bytes, no control characters, no leading or trailing space)"),
                        ));
                    }
                    if !seen.insert(group) {
                        return Err(err(role, "groups", format!("{group:?} is listed twice")));
                    }
                }
                if let Some(db) = &raw.dbname {
                    if db.is_empty() || db.len() > GROUP_NAME_MAX || db.chars().any(char::is_control) {
                        return Err(err(
                            role,
                            "dbname",
                            format!(
                                "{db:?} is not a database name (1 to {GROUP_NAME_MAX} bytes, no control characters)"
                            ),
                        ));
                    }
                }
                RoleKind::Database(DatabaseRole { admin_secret, groups, dbname: raw.dbname })
            }
            other => return Err(err(role, "kind", format!("{other:?} is not supported (known: database)"))),
        };
        let ttl = |field: &str, text: &str| -> Result<Duration, RolesError> {
            let d = parse_ttl(text).map_err(|p| err(role, field, format!("{text:?} {p}")))?;
            if d.is_zero() {
                return Err(err(role, field, format!("{text:?} is zero")));
            }
            if d > MAX_TTL_LIMIT {
                return Err(err(role, field, format!("{text:?} is over the 24h limit")));
            }
            Ok(d)
        };
        let default_ttl = ttl("default_ttl", &raw.default_ttl)?;
        let max_ttl = ttl("max_ttl", &raw.max_ttl)?;
        if default_ttl > max_ttl {
            return Err(err(role, "default_ttl", format!("{:?} is over max_ttl {:?}", raw.default_ttl, raw.max_ttl)));
        }
        let allowed_principals = patterns(role, "allowed_principals", &raw.allowed_principals)?;
        let max_leases = match raw.max_leases {
            None => None,
            Some(n) => match u32::try_from(n) {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(err(role, "max_leases", format!("{n} is not a whole number from 1 to {}", u32::MAX))),
            },
        };
        Ok(Self { name, kind, default_ttl, max_ttl, allowed_principals, max_leases })
    }
}

fn patterns(role: Option<&str>, field: &str, list: &[String]) -> Result<Vec<ArnPattern>, RolesError> {
    list.iter().map(|p| ArnPattern::parse(p).map_err(|problem| err(role, field, format!("{p:?} {problem}")))).collect()
}

/// `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`, no wildcards.
fn is_secret_arn(arn: &str) -> bool {
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

/// A duration as people write it: one or more `<digits><unit>` parts, units `d`, `h`, `m`,
/// `s`, each at most once and from the largest down (`15m`, `1h`, `900s`, `1h30m`). No sign,
/// no fraction, no exponent, no space, no bare number (is `5` seconds or minutes?), nothing
/// over [`TTL_PARSE_MAX`] (so later arithmetic on Unix times cannot overflow).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("is empty: write a duration such as 15m, 1h or 900s".into());
    }
    let mut total: u64 = 0;
    let mut last_unit = u64::MAX;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("is not a duration: write digits then a unit (s, m, h or d), such as 15m".into());
        }
        let Some(unit) = rest[digits..].chars().next() else {
            return Err("has no unit: write s, m, h or d after the number".into());
        };
        let scale = match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            other => return Err(format!("has an unknown unit {other:?} (known: s, m, h, d)")),
        };
        if scale >= last_unit {
            return Err("repeats a unit or puts a smaller one first (write 1h30m)".into());
        }
        last_unit = scale;
        let value = rest[..digits]
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .and_then(|n| total.checked_add(n))
            .filter(|n| *n <= TTL_PARSE_MAX.as_secs())
            .ok_or_else(|| "is too large".to_owned())?;
        total = value;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn role_toml(extra: &str) -> String {
        format!(
            r#"
[[role]]
name = "ci-reader"
kind = "database"
admin_secret = "arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:pg-admin-AbCdEf"
groups = ["app_read"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::{ACCOUNT}:role/ci-*"]
{extra}
"#
        )
    }

    fn error_of(text: &str) -> String {
        Roles::from_toml(text).unwrap_err().to_string()
    }

    /// Replaces one `key = value` line of the good role.
    fn with(key: &str, line: &str) -> String {
        role_toml("")
            .lines()
            .map(|l| if l.starts_with(&format!("{key} =")) { line.to_owned() } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn username_prefix_defaults_to_kt_and_is_checked() {
        assert_eq!(Roles::from_toml("").unwrap().username_prefix, "kt_");
        assert_eq!(Roles::from_toml("username_prefix = \"kt2_\"").unwrap().username_prefix, "kt2_");
        for bad in ["", "_", "kt", "KT_", "k-t_", "2kt_", "abcdefghi_", "kt__", "k t_"] {
            let e = Roles::from_toml(&format!("username_prefix = {bad:?}")).unwrap_err();
            assert_eq!(e.field, "username_prefix", "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_good_role_parses() {
        let roles = Roles::from_toml(&role_toml("max_leases = 5")).unwrap();
        let role = roles.get("ci-reader").unwrap();
        assert_eq!(role.default_ttl, Duration::from_secs(900));
        assert_eq!(role.max_ttl, Duration::from_secs(3600));
        assert_eq!(role.max_leases, Some(5));
        assert_eq!(role.allowed_principals.len(), 1);
        let RoleKind::Database(db) = &role.kind;
        assert_eq!(db.groups, ["app_read"]);
        assert!(roles.admin_principals.is_empty());
        assert!(roles.get("nope").is_none());
    }

    #[test]
    fn the_example_file_parses() {
        let roles = Roles::from_toml(include_str!("../../../../infra/roles.example.toml")).unwrap();
        assert!(roles.iter().count() >= 2);
        assert!(!roles.admin_principals.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_everywhere() {
        let e = error_of(&role_toml("max_lease = 5"));
        assert!(e.starts_with(r#"role "ci-reader": definition is not valid: unknown field `max_lease`"#), "{e}");
        let e = error_of(&format!("admin_principal = []\n{}", role_toml("")));
        assert!(e.contains("unknown field `admin_principal`"), "{e}");
        let e = error_of(&role_toml("").replace("[[role]]", "[[roles]]"));
        assert!(e.contains("unknown field `roles`"), "{e}");
    }

    #[test]
    fn creation_statements_are_refused_with_the_reason() {
        let e = error_of(&role_toml(r#"creation_statements = ["CREATE ROLE {{name}}"]"#));
        assert!(e.starts_with(r#"role "ci-reader": creation_statements is not supported yet"#), "{e}");
    }

    #[test]
    fn errors_name_the_role_and_the_field() {
        assert_eq!(
            error_of(&with("max_ttl", r#"max_ttl = "2d""#)),
            r#"role "ci-reader": max_ttl "2d" is over the 24h limit"#
        );
        assert_eq!(
            error_of(&with("default_ttl", r#"default_ttl = "2h""#)),
            r#"role "ci-reader": default_ttl "2h" is over max_ttl "1h""#
        );
        assert_eq!(error_of(&with("max_ttl", r#"max_ttl = "0s""#)), r#"role "ci-reader": max_ttl "0s" is zero"#);
        assert!(
            error_of(&with("kind", r#"kind = "iam""#)).starts_with(r#"role "ci-reader": kind "iam" is not supported"#)
        );
        assert!(error_of(&with("groups", "groups = []")).starts_with(r#"role "ci-reader": groups must name"#));
        assert!(error_of(&with("groups", r#"groups = ["a", "a"]"#)).contains(r#""a" is listed twice"#));
        assert!(error_of(&with("groups", r#"groups = ["a "]"#)).contains("is not a role name"));
        assert!(error_of(&with("admin_secret", r#"admin_secret = "arn:aws:secretsmanager:us-east-1:1:secret:*""#))
            .starts_with(r#"role "ci-reader": admin_secret"#));
        assert!(error_of(&with("admin_secret", "")).starts_with(r#"role "ci-reader": admin_secret is required"#));
        assert!(error_of(&role_toml("max_leases = 0")).starts_with(r#"role "ci-reader": max_leases 0"#));
        assert!(error_of(&role_toml("max_leases = -1")).starts_with(r#"role "ci-reader": max_leases -1"#));
        let e = error_of(&with("default_ttl", "default_ttl = 900"));
        assert!(e.starts_with(r#"role "ci-reader": definition is not valid"#), "{e}");
        let e = error_of(&with("allowed_principals", r#"allowed_principals = ["*"]"#));
        assert!(e.starts_with(r#"role "ci-reader": allowed_principals "*""#), "{e}");
    }

    #[test]
    fn role_names_must_fit_usernames() {
        for bad in ["", "a b", "ci.reader", "é", "x;drop", &"a".repeat(33)] {
            let e = error_of(&with("name", &format!("name = {bad:?}")));
            assert!(e.contains("name must be 1 to 32 letters"), "{bad:?}: {e}");
        }
        assert!(Roles::from_toml(&with("name", &format!("name = {:?}", "A_b-9".repeat(6) + "ab"))).is_ok());
        let e = error_of(&with("name", ""));
        assert!(e.starts_with(r##"role "#1": definition is not valid: missing field `name`"##), "{e}");
    }

    #[test]
    fn duplicate_role_names_are_refused() {
        let e = error_of(&format!("{}{}", role_toml(""), role_toml("")));
        assert_eq!(e, r#"role "ci-reader": name is used by another role"#);
    }

    #[test]
    fn no_principals_means_nobody() {
        let roles = Roles::from_toml(&with("allowed_principals", "")).unwrap();
        assert!(roles.get("ci-reader").unwrap().allowed_principals.is_empty());
    }

    #[test]
    fn ttls_parse_as_people_write_them() {
        let ok = |t: &str| parse_ttl(t).unwrap().as_secs();
        assert_eq!(ok("15m"), 900);
        assert_eq!(ok("1h"), 3600);
        assert_eq!(ok("900s"), 900);
        assert_eq!(ok("1h30m"), 5400);
        assert_eq!(ok("1d2h3m4s"), 93_784);
        assert_eq!(ok("0s"), 0);
        assert_eq!(ok("007m"), 420);
        assert_eq!(ok("1000000000s"), 1_000_000_000);
    }

    #[test]
    fn hostile_ttls_are_refused() {
        for bad in [
            "",
            "5",
            "-5m",
            "+5m",
            "1e9s",
            "10x",
            "1.5h",
            " 5m",
            "5m ",
            "5 m",
            "m",
            "5M",
            "1h1h",
            "1m1h",
            "5ms",
            "18446744073709551615s",
            "18446744073709551616s",
            "999999999999999999d",
            "1d18446744073709551615s",
            "٣m",
            "5m\0",
            "1000000001s",
            "11575d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} parsed as {:?}", parse_ttl(bad));
        }
    }
}
