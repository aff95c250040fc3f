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
//! connection_limit = 10   # the default
//! ```
//!
//! Unknown keys are refused (a typo must not change behaviour unseen), and so is anything
//! this version cannot honour; every error names the role and the field. This module reads
//! what every role has; each kind's own keys are its module's, under [`super::kind`].

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::field::err;
pub use super::field::RolesError;
use super::kind::{self, RoleKind};
use super::name::DEFAULT_USERNAME_PREFIX;
use super::principal::ArnPattern;

/// The longest `max_ttl` a role may have: these are short-lived credentials, and a user
/// that outlives a working day is what keyturn is there to prevent.
pub const MAX_TTL_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// The longest duration [`parse_ttl`] reads (about 31 years); roles are held to
/// [`MAX_TTL_LIMIT`] on top of it.
pub const TTL_PARSE_MAX: Duration = Duration::from_secs(1_000_000_000);
/// The longest `username_prefix` without its `_`.
pub const USERNAME_PREFIX_MAX: usize = 8;
/// The longest role name: it goes into usernames (see [`super::name::username`]).
pub const ROLE_NAME_MAX: usize = 32;
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
    /// The kind's own settings.
    pub kind: RoleKind,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Who may request credentials of this role; empty means nobody.
    pub allowed_principals: Vec<ArnPattern>,
    /// The most live (not yet revoked) leases the role may have at once.
    pub max_leases: Option<u32>,
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

/// What every role has; the rest of its keys are its kind's.
#[derive(Deserialize)]
struct RawRole {
    name: String,
    kind: String,
    creation_statements: Option<toml::Value>,
    default_ttl: Option<String>,
    max_ttl: Option<String>,
    #[serde(default)]
    allowed_principals: Vec<String>,
    max_leases: Option<i64>,
    #[serde(flatten)]
    rest: toml::Table,
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
        let name = raw.name.clone();
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
        // Each kind's own keys; another kind's key is refused rather than ignored (a
        // `session_policy` on an IAM-user role would otherwise narrow nothing, unseen).
        let kind_name = raw.kind.as_str();
        let own = kind::keys(kind_name).ok_or_else(|| {
            err(role, "kind", format!("{kind_name:?} is not supported (known: {})", kind::NAMES.join(", ")))
        })?;
        for key in raw.rest.keys() {
            if own.contains(&key.as_str()) {
                continue;
            }
            if kind::is_kind_key(key) {
                return Err(err(role, key, format!("is not a key of kind {kind_name:?}")));
            }
            return Err(err(role, "definition", format!("is not valid: unknown field `{key}`")));
        }
        let kind = kind::parse(kind_name, &name, raw.rest)?;
        let ttl = |field: &str, text: Option<&str>| -> Result<Duration, RolesError> {
            let text = match (text, kind.fixed_ttl()) {
                (Some(text), _) => text,
                (None, Some(fixed)) => return Ok(fixed),
                (None, None) => return Err(err(role, field, "is required")),
            };
            let d = parse_ttl(text).map_err(|p| err(role, field, format!("{text:?} {p}")))?;
            if kind.fixed_ttl().is_some() {
                kind.check_ttl(d, text).map_err(|p| err(role, field, p))?;
            }
            if d.is_zero() {
                return Err(err(role, field, format!("{text:?} is zero")));
            }
            if d > MAX_TTL_LIMIT {
                return Err(err(role, field, format!("{text:?} is over the 24h limit")));
            }
            kind.check_ttl(d, text).map_err(|p| err(role, field, p))?;
            Ok(d)
        };
        let default_ttl = ttl("default_ttl", raw.default_ttl.as_deref())?;
        let max_ttl = ttl("max_ttl", raw.max_ttl.as_deref())?;
        if default_ttl > max_ttl {
            return Err(err(
                role,
                "default_ttl",
                format!(
                    "{:?} is over max_ttl {:?}",
                    raw.default_ttl.unwrap_or_default(),
                    raw.max_ttl.unwrap_or_default()
                ),
            ));
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

/// Checks roles files as the issuer does at cold start ([`Roles::load`]), for CI of the
/// repository that holds them (`issue-credentials check`, `keyturn roles-check`): a line
/// per file on `out` when it is valid, the error naming role and field on `err` when not.
/// Whether every file is valid.
pub fn check_files(
    files: &[String],
    out: &mut impl std::io::Write,
    err: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    let mut ok = true;
    for file in files {
        match Roles::load(Path::new(file)) {
            Ok(roles) => writeln!(out, "{file}: {} roles, valid", roles.iter().count())?,
            Err(e) => {
                writeln!(err, "{file}: {e}")?;
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn patterns(role: Option<&str>, field: &str, list: &[String]) -> Result<Vec<ArnPattern>, RolesError> {
    list.iter().map(|p| ArnPattern::parse(p).map_err(|problem| err(role, field, format!("{p:?} {problem}")))).collect()
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
    use crate::lease::kind::aws_iam_user::{expiry_policy_size, DEFAULT_IAM_PATH};
    use crate::lease::kind::database::DEFAULT_CONNECTION_LIMIT;

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
        let RoleKind::Database(db) = &role.kind else { panic!("{:?}", role.kind) };
        assert_eq!(db.groups, ["app_read"]);
        assert_eq!(db.connection_limit, DEFAULT_CONNECTION_LIMIT);
        assert!(roles.admin_principals.is_empty());
        assert!(roles.get("nope").is_none());
    }

    #[test]
    fn a_connection_limit_is_a_whole_number_in_range() {
        let roles = Roles::from_toml(&role_toml("connection_limit = 3")).unwrap();
        let RoleKind::Database(db) = &roles.get("ci-reader").unwrap().kind else { panic!() };
        assert_eq!(db.connection_limit, 3);
        assert!(Roles::from_toml(&role_toml("connection_limit = 1000")).is_ok());
        for bad in ["0", "-1", "1001", "4294967297"] {
            let e = error_of(&role_toml(&format!("connection_limit = {bad}")));
            assert!(e.starts_with(&format!(r#"role "ci-reader": connection_limit {bad} is not"#)), "{e}");
        }
        for bad in ["\"10\"", "2.5", "true"] {
            let e = error_of(&role_toml(&format!("connection_limit = {bad}")));
            assert!(e.starts_with(r#"role "ci-reader": definition is not valid"#), "{e}");
        }
    }

    /// The default roles file a stack deploys: comments only.
    #[test]
    fn a_file_of_comments_only_has_no_roles_and_no_admin_principals() {
        for text in ["", "# No roles yet: see roles.example.toml.\n#\n# [[role]]\n# name = \"ci\"\n"] {
            let roles = Roles::from_toml(text).unwrap();
            assert_eq!(roles.iter().count(), 0, "{text:?}");
            assert!(roles.admin_principals.is_empty());
            assert_eq!(roles.username_prefix, DEFAULT_USERNAME_PREFIX);
        }
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

    const STS: &str = r#"
[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/deploy"
default_ttl = "15m"
max_ttl = "1h"
"#;
    const IAM_USER: &str = r#"
[[role]]
name = "legacy"
kind = "aws-iam-user"
permissions_boundary = "arn:aws:iam::123456789012:policy/boundary"
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
default_ttl = "1h"
max_ttl = "4h"
"#;
    const RDS: &str = r#"
[[role]]
name = "pg-iam"
kind = "rds-iam-token"
engine = "postgres"
host = "db.example.us-east-1.rds.amazonaws.com"
port = 5432
region = "us-east-1"
db_user = "app_iam"
"#;

    /// `base` with `key = value` set (replacing the key's line, or added).
    fn set(base: &str, key: &str, line: &str) -> String {
        let mut out: Vec<String> =
            base.lines().filter(|l| !l.starts_with(&format!("{key} ="))).map(str::to_owned).collect();
        if !line.is_empty() {
            out.push(line.to_owned());
        }
        out.join("\n")
    }

    #[test]
    fn the_aws_kinds_parse_with_their_defaults() {
        let roles = Roles::from_toml(&format!("{STS}{IAM_USER}{RDS}")).unwrap();
        let RoleKind::AwsSts(sts) = &roles.get("deploy").unwrap().kind else { panic!() };
        assert_eq!((sts.external_id.as_deref(), sts.session_policy.as_deref()), (None, None));
        let legacy = roles.get("legacy").unwrap();
        let RoleKind::AwsIamUser(iam) = &legacy.kind else { panic!() };
        assert_eq!(iam.path, "/keyturn-leases/");
        let rds = roles.get("pg-iam").unwrap();
        assert_eq!((rds.default_ttl.as_secs(), rds.max_ttl.as_secs()), (900, 900), "fixed at 15 minutes");
        assert_eq!(rds.kind.min_ttl().as_secs(), 900);
    }

    /// IAM's 2048 characters are for all of a user's inline policies together, and
    /// keyturn's expiry policy is one of them: an inline policy that leaves it no room
    /// would fail every issue at PutUserPolicy.
    #[test]
    fn an_iam_users_inline_policy_leaves_room_for_the_expiry_policy() {
        let sized = |chars: usize| {
            let base = r#"{"Statement":[{"Sid":"","Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
            let sid = "x".repeat(chars - base.len());
            format!("inline_policy = '{}'", base.replace(r#""Sid":"""#, &format!(r#""Sid":"{sid}""#)))
        };
        let e = Roles::from_toml(&set(IAM_USER, "inline_policy", &sized(2000))).unwrap_err();
        assert_eq!(e.field, "inline_policy", "{e}");
        assert!(e.problem.contains("expiry policy"), "{e}");
        let reserve = expiry_policy_size(DEFAULT_IAM_PATH);
        assert!(Roles::from_toml(&set(IAM_USER, "inline_policy", &sized(2048 - reserve))).is_ok());
        assert!(Roles::from_toml(&set(IAM_USER, "inline_policy", &sized(2049 - reserve))).is_err());
        // A longer path takes more of the room: the expiry policy names it.
        let long = format!("/{}/", "p".repeat(100));
        let with_path = |chars| set(IAM_USER, "inline_policy", &sized(chars)) + &format!("\npath = \"{long}\"");
        assert!(Roles::from_toml(&with_path(2048 - reserve)).is_err());
        assert!(Roles::from_toml(&with_path(2048 - expiry_policy_size(&long))).is_ok());
        // A session policy has the 2048 characters to itself.
        assert!(Roles::from_toml(&set(STS, "session_policy", &sized(2000).replace("inline_policy", "session_policy")))
            .is_ok());
    }

    #[test]
    fn policies_with_characters_iam_refuses_are_refused() {
        let with = |sid: &str| {
            format!(
                r#"inline_policy = '{{"Statement":[{{"Sid":"{sid}","Effect":"Allow","Action":"s3:GetObject","Resource":"*"}}]}}'"#
            )
        };
        assert!(Roles::from_toml(&set(IAM_USER, "inline_policy", &with(r"caf\u00e9"))).is_ok(), "Latin-1 is fine");
        for bad in [r"\u20ac", r"\u65e5", r"\ud83d\ude00"] {
            let e = Roles::from_toml(&set(IAM_USER, "inline_policy", &with(bad))).unwrap_err();
            assert!(e.problem.contains("Latin-1"), "{bad}: {e}");
        }
    }

    #[test]
    fn each_kind_refuses_the_keys_of_another() {
        for (base, line, key) in [
            (STS, r#"admin_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:a""#, "admin_secret"),
            (STS, r#"groups = ["g"]"#, "groups"),
            (RDS, "connection_limit = 5", "connection_limit"),
            (IAM_USER, r#"session_policy = "{}""#, "session_policy"),
            (RDS, r#"role_arn = "arn:aws:iam::123456789012:role/x""#, "role_arn"),
            (&role_toml(""), r#"db_user = "x""#, "db_user"),
        ] {
            let e = Roles::from_toml(&set(base, key, line)).unwrap_err();
            assert_eq!(e.field, key, "{e}");
            assert!(e.problem.starts_with("is not a key of kind"), "{e}");
        }
    }

    #[test]
    fn bad_aws_roles_are_refused_naming_the_field() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (STS, "role_arn", "", "is required"),
            (STS, "role_arn", r#"role_arn = "arn:aws:iam::123456789012:role/*""#, "is not an IAM role ARN"),
            (STS, "role_arn", r#"role_arn = "arn:aws:iam::123456789012:user/bob""#, "is not an IAM role ARN"),
            (STS, "max_ttl", r#"max_ttl = "2h""#, "role chaining"),
            (STS, "default_ttl", r#"default_ttl = "5m""#, "under 15m"),
            (STS, "external_id", r#"external_id = "a b""#, "must be 2 to 1224"),
            (STS, "session_policy", r#"session_policy = "not json""#, "is not JSON"),
            (STS, "session_policy", r#"session_policy = "{}""#, "is not a policy document"),
            (IAM_USER, "permissions_boundary", "", "is required"),
            (IAM_USER, "path", r#"path = "/""#, "is not an IAM path"),
            (IAM_USER, "path", r#"path = "keyturn""#, "is not an IAM path"),
            (IAM_USER, "policy_arns", r#"policy_arns = ["arn:aws:iam::aws:policy/*"]"#, "not a managed policy ARN"),
            (IAM_USER, "policy_arns", "", "must give the user something to do"),
            (RDS, "host", r#"host = "db/x?y""#, "is not a host name"),
            (RDS, "port", "port = 70000", "is not a port"),
            (RDS, "db_user", r#"db_user = "a&DBUser=admin""#, "is not a database user name"),
            (RDS, "max_ttl", r#"max_ttl = "1h""#, "is not 15m"),
            (RDS, "region", "", "is required"),
            (RDS, "engine", "", "is required"),
            (RDS, "engine", r#"engine = "oracle""#, "is not an RDS engine"),
        ];
        for (base, field, line, problem) in cases {
            let e = Roles::from_toml(&set(base, field, line)).unwrap_err();
            assert_eq!(e.field, *field, "{line}: {e}");
            assert!(e.problem.contains(problem), "{line}: {e}");
        }
        let big = format!("session_policy = '{{\"Statement\": [{{\"Sid\": \"{}\"}}]}}'", "x".repeat(2100));
        assert!(Roles::from_toml(&set(STS, "session_policy", &big)).unwrap_err().problem.contains("2048"));
    }
}
