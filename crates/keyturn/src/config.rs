//! Configuration read once per container from the environment into typed values.
//!
//! AWS's templates' variable names are honoured as they are (`PASSWORD_LENGTH`,
//! `EXCLUDE_CHARACTERS`, `SECRETS_MANAGER_ENDPOINT`) so keyturn is a drop-in replacement;
//! keyturn's own settings start with `KEYTURN_`, and an unknown `KEYTURN_` variable is
//! refused rather than silently ignored (a typo must not change behaviour unseen).

#[cfg(feature = "database")]
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "database")]
use crate::backend::Timeouts;
#[cfg(feature = "database")]
use crate::password::{PasswordPolicy, DEFAULT_EXCLUDE, DEFAULT_LENGTH};
#[cfg(feature = "database")]
use crate::rotation::database::{AdminSecrets, Strategy};
#[cfg(feature = "iam")]
use crate::rotation::iam_key::Scope;

/// A setting that could not be used. Names the variable and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

#[cfg(feature = "database")]
/// Accepted range for the timeouts, in seconds.
pub const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=60;

#[cfg(feature = "database")]
const KNOWN: [&str; 5] = [
    "KEYTURN_STRATEGY",
    "KEYTURN_EXTRA_CA_FILES",
    "KEYTURN_CONNECT_TIMEOUT_SECS",
    "KEYTURN_STATEMENT_TIMEOUT_SECS",
    "KEYTURN_ADMIN_SECRET_ARNS",
];

#[cfg(feature = "database")]
/// Settings of the rotate-database function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateDatabaseConfig {
    /// `KEYTURN_STRATEGY`: `single-user` (default) or `alternating-users`.
    pub strategy: Strategy,
    /// `PASSWORD_LENGTH` (default 32) and `EXCLUDE_CHARACTERS` (default `:/@"'\`).
    pub passwords: PasswordPolicy,
    /// `KEYTURN_CONNECT_TIMEOUT_SECS` and `KEYTURN_STATEMENT_TIMEOUT_SECS`, 1-60, default 5.
    pub timeouts: Timeouts,
    /// `KEYTURN_EXTRA_CA_FILES`: colon-separated PEM files trusted besides the system's and
    /// RDS's roots.
    pub extra_ca_files: Vec<PathBuf>,
    /// `SECRETS_MANAGER_ENDPOINT`: a Secrets Manager endpoint override (VPC endpoints).
    pub secrets_manager_endpoint: Option<String>,
    /// `KEYTURN_ADMIN_SECRET_ARNS`: comma-separated ARNs (a trailing `*` makes a prefix) of
    /// the admin secrets a user secret may name (`masterarn`); any readable one when unset.
    pub admin_secrets: AdminSecrets,
}

#[cfg(feature = "database")]
impl RotateDatabaseConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (the process environment in production).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = Vars::new(vars, &KNOWN)?;
        let strategy = match vars.get("KEYTURN_STRATEGY") {
            None | Some("single-user") => Strategy::SingleUser,
            Some("alternating-users") => Strategy::AlternatingUsers,
            Some(other) => {
                return Err(error("KEYTURN_STRATEGY", format!("{other:?} is not single-user or alternating-users")))
            }
        };
        let length = match vars.get("PASSWORD_LENGTH") {
            None => DEFAULT_LENGTH,
            Some(v) => v.parse().map_err(|_| error("PASSWORD_LENGTH", format!("{v:?} is not a whole number")))?,
        };
        // An empty EXCLUDE_CHARACTERS means "exclude nothing", as with AWS's API.
        let exclude = vars.raw("EXCLUDE_CHARACTERS").unwrap_or(DEFAULT_EXCLUDE);
        let passwords = PasswordPolicy::new(length, exclude).map_err(|e| error("PASSWORD_LENGTH", e.to_string()))?;
        let (timeouts, extra_ca_files) = vars.database_access()?;
        let secrets_manager_endpoint = vars.get("SECRETS_MANAGER_ENDPOINT").map(str::to_owned);
        let admin_secrets = match vars.get("KEYTURN_ADMIN_SECRET_ARNS") {
            None => AdminSecrets::any(),
            Some(list) => {
                let patterns: Vec<String> =
                    list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect();
                if let Some(bad) = patterns.iter().find(|p| !p.starts_with("arn:") || p[..p.len() - 1].contains('*')) {
                    return Err(error(
                        "KEYTURN_ADMIN_SECRET_ARNS",
                        format!("{bad:?} is not a secret ARN (a trailing * may make it a prefix)"),
                    ));
                }
                AdminSecrets::only(patterns)
            }
        };
        Ok(Self { strategy, passwords, timeouts, extra_ca_files, secrets_manager_endpoint, admin_secrets })
    }
}

#[cfg(feature = "database")]
const LEASE_KNOWN: [&str; 9] = [
    "KEYTURN_ROLES_FILE",
    "KEYTURN_LEASE_TABLE",
    "KEYTURN_EXTRA_CA_FILES",
    "KEYTURN_CONNECT_TIMEOUT_SECS",
    "KEYTURN_STATEMENT_TIMEOUT_SECS",
    "KEYTURN_SCRAM_ITERATIONS",
    "KEYTURN_REAP_BATCH",
    "KEYTURN_REAP_CONCURRENCY",
    // Set by the test harness only; never in a deployment (see `LeaseConfig::clock_offset`).
    "KEYTURN_TEST_CLOCK_OFFSET_SECS",
];

#[cfg(feature = "database")]
/// Accepted SCRAM iteration counts of generated passwords (PostgreSQL accepts any count
/// from 1; over 100,000 would make each issue take most of a second).
pub const SCRAM_ITERATIONS_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;
#[cfg(feature = "database")]
/// Accepted reaper batch sizes (due leases taken per run).
pub const REAP_BATCH_RANGE: std::ops::RangeInclusive<u64> = 1..=10_000;
#[cfg(feature = "database")]
/// Accepted reaper concurrency.
pub const REAP_CONCURRENCY_RANGE: std::ops::RangeInclusive<u64> = 1..=64;

#[cfg(feature = "database")]
/// Settings of the issue-credentials and reap-leases functions (one struct: they serve the
/// same roles from the same table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// `KEYTURN_ROLES_FILE`: the roles file (required).
    pub roles_file: PathBuf,
    /// `KEYTURN_LEASE_TABLE`: the DynamoDB table of leases (required).
    pub lease_table: String,
    /// As for rotate-database.
    pub timeouts: Timeouts,
    pub extra_ca_files: Vec<PathBuf>,
    pub secrets_manager_endpoint: Option<String>,
    /// `KEYTURN_SCRAM_ITERATIONS`: SCRAM-SHA-256 iterations of generated PostgreSQL
    /// passwords, default 4096 (see `backend::postgres::scram`).
    pub scram_iterations: u32,
    /// `KEYTURN_REAP_BATCH`, default 1000: due leases one reaper run takes.
    pub reap_batch: usize,
    /// `KEYTURN_REAP_CONCURRENCY`, default 16: revocations in flight at once.
    pub reap_concurrency: usize,
    /// `KEYTURN_TEST_CLOCK_OFFSET_SECS`: seconds added to the clock, so the end-to-end
    /// tests can expire leases without waiting for them. Zero in a deployment.
    pub clock_offset: u64,
}

#[cfg(feature = "database")]
impl LeaseConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (the process environment in production).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = Vars::new(vars, &LEASE_KNOWN)?;
        let required = |key: &str| vars.get(key).map(str::to_owned).ok_or_else(|| error(key, "is required".into()));
        let roles_file = PathBuf::from(required("KEYTURN_ROLES_FILE")?);
        let lease_table = required("KEYTURN_LEASE_TABLE")?;
        let (timeouts, extra_ca_files) = vars.database_access()?;
        let scram_iterations = vars.number(
            "KEYTURN_SCRAM_ITERATIONS",
            SCRAM_ITERATIONS_RANGE,
            u64::from(crate::backend::postgres::scram::GENERATED_PASSWORD_ITERATIONS),
        )? as u32;
        Ok(Self {
            roles_file,
            lease_table,
            timeouts,
            extra_ca_files,
            secrets_manager_endpoint: vars.get("SECRETS_MANAGER_ENDPOINT").map(str::to_owned),
            scram_iterations,
            reap_batch: vars.number("KEYTURN_REAP_BATCH", REAP_BATCH_RANGE, 1000)? as usize,
            reap_concurrency: vars.number("KEYTURN_REAP_CONCURRENCY", REAP_CONCURRENCY_RANGE, 16)? as usize,
            clock_offset: vars.number("KEYTURN_TEST_CLOCK_OFFSET_SECS", 0..=u64::from(u32::MAX), 0)?,
        })
    }
}

#[cfg(feature = "iam")]
const IAM_KNOWN: [&str; 4] =
    ["KEYTURN_IAM_PATH_PREFIX", "KEYTURN_IAM_TAG", "KEYTURN_IAM_TEST_TIMEOUT_SECS", "KEYTURN_IAM_DEACTIVATE_PREVIOUS"];

#[cfg(feature = "iam")]
/// Accepted range for testSecret's bound on IAM's eventual consistency, in seconds.
pub const IAM_TEST_TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=600;

#[cfg(feature = "iam")]
/// Settings of the rotate-iam-key function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateIamKeyConfig {
    /// `KEYTURN_IAM_PATH_PREFIX` (e.g. `/keyturn/`) and/or `KEYTURN_IAM_TAG` (`key` or
    /// `key=value`): the users the function may touch. At least one is required.
    pub scope: Scope,
    /// `KEYTURN_IAM_TEST_TIMEOUT_SECS`, 1-600, default 30: how long testSecret waits for a
    /// new key to be accepted.
    pub test_timeout: Duration,
    /// `KEYTURN_IAM_DEACTIVATE_PREVIOUS`: `true` marks the previous key Inactive at
    /// finishSecret; `false` (default) leaves it valid until the next rotation deletes it.
    pub deactivate_previous: bool,
    /// `SECRETS_MANAGER_ENDPOINT`: a Secrets Manager endpoint override (VPC endpoints).
    pub secrets_manager_endpoint: Option<String>,
}

#[cfg(feature = "iam")]
impl RotateIamKeyConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (the process environment in production).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars = Vars::new(vars, &IAM_KNOWN)?;
        let path_prefix = vars.get("KEYTURN_IAM_PATH_PREFIX").map(str::to_owned);
        if let Some(prefix) = &path_prefix {
            if !prefix.starts_with('/') || !prefix.ends_with('/') {
                return Err(error("KEYTURN_IAM_PATH_PREFIX", format!("{prefix:?} is not an IAM path (/.../)")));
            }
        }
        let tag = vars.get("KEYTURN_IAM_TAG").map(|t| match t.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (t.to_owned(), None),
        });
        if path_prefix.is_none() && tag.is_none() {
            return Err(error(
                "KEYTURN_IAM_PATH_PREFIX",
                "set it or KEYTURN_IAM_TAG: the function only rotates keys of users in a declared scope".into(),
            ));
        }
        let test_timeout = vars.seconds("KEYTURN_IAM_TEST_TIMEOUT_SECS", IAM_TEST_TIMEOUT_RANGE_SECS, 30)?;
        let deactivate_previous = match vars.get("KEYTURN_IAM_DEACTIVATE_PREVIOUS") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(error("KEYTURN_IAM_DEACTIVATE_PREVIOUS", format!("{other:?} is not true or false")))
            }
        };
        let secrets_manager_endpoint = vars.get("SECRETS_MANAGER_ENDPOINT").map(str::to_owned);
        Ok(Self { scope: Scope { path_prefix, tag }, test_timeout, deactivate_previous, secrets_manager_endpoint })
    }
}

fn error(variable: &str, problem: String) -> ConfigError {
    ConfigError { variable: variable.into(), problem }
}

/// The environment, checked for unknown `KEYTURN_` settings.
struct Vars(std::collections::HashMap<String, String>);

impl Vars {
    fn new(vars: impl IntoIterator<Item = (String, String)>, known: &[&str]) -> Result<Self, ConfigError> {
        let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
        if let Some(unknown) = vars.keys().filter(|k| k.starts_with("KEYTURN_") && !known.contains(&k.as_str())).min() {
            return Err(error(unknown, format!("unknown setting (known: {})", known.join(", "))));
        }
        Ok(Self(vars))
    }

    /// A set, non-empty value.
    fn get(&self, key: &str) -> Option<&str> {
        self.raw(key).filter(|v| !v.is_empty())
    }

    /// A set value, possibly empty.
    fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The database settings every database function shares: timeouts and extra CAs.
    #[cfg(feature = "database")]
    fn database_access(&self) -> Result<(Timeouts, Vec<PathBuf>), ConfigError> {
        let timeouts = Timeouts {
            connect: self.seconds("KEYTURN_CONNECT_TIMEOUT_SECS", TIMEOUT_RANGE_SECS, 5)?,
            statement: self.seconds("KEYTURN_STATEMENT_TIMEOUT_SECS", TIMEOUT_RANGE_SECS, 5)?,
        };
        let extra_ca_files = self
            .get("KEYTURN_EXTRA_CA_FILES")
            .map(|v| v.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default();
        Ok((timeouts, extra_ca_files))
    }

    #[cfg(feature = "database")]
    fn number(&self, key: &str, range: std::ops::RangeInclusive<u64>, default: u64) -> Result<u64, ConfigError> {
        let Some(v) = self.get(key) else { return Ok(default) };
        match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(error(key, format!("{v:?} is not a whole number from {} to {}", range.start(), range.end()))),
        }
    }

    fn seconds(&self, key: &str, range: std::ops::RangeInclusive<u64>, default: u64) -> Result<Duration, ConfigError> {
        let Some(v) = self.get(key) else { return Ok(Duration::from_secs(default)) };
        match v.parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(Duration::from_secs(n)),
            _ => Err(error(
                key,
                format!("{v:?} is not a whole number of seconds from {} to {}", range.start(), range.end()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[cfg(feature = "database")]
    #[test]
    fn defaults() {
        let c = RotateDatabaseConfig::from_vars(vars(&[("PATH", "/bin")])).unwrap();
        assert_eq!(c.strategy, Strategy::SingleUser);
        assert_eq!(c.passwords, PasswordPolicy::default());
        assert_eq!(c.timeouts, Timeouts::default());
        assert!(c.extra_ca_files.is_empty());
    }

    #[cfg(feature = "database")]
    #[test]
    fn settings_are_read() {
        let c = RotateDatabaseConfig::from_vars(vars(&[
            ("KEYTURN_STRATEGY", "alternating-users"),
            ("PASSWORD_LENGTH", "40"),
            ("KEYTURN_CONNECT_TIMEOUT_SECS", "2"),
            ("KEYTURN_EXTRA_CA_FILES", "/a.pem:/b.pem"),
            ("SECRETS_MANAGER_ENDPOINT", "https://vpce.example"),
        ]))
        .unwrap();
        assert_eq!(c.strategy, Strategy::AlternatingUsers);
        assert_eq!(c.passwords.length(), 40);
        assert_eq!(c.timeouts.connect, Duration::from_secs(2));
        assert_eq!(c.extra_ca_files, vec![PathBuf::from("/a.pem"), PathBuf::from("/b.pem")]);
        assert_eq!(c.secrets_manager_endpoint.as_deref(), Some("https://vpce.example"));
        assert_eq!(c.admin_secrets, AdminSecrets::any());
        let c = RotateDatabaseConfig::from_vars(vars(&[(
            "KEYTURN_ADMIN_SECRET_ARNS",
            "arn:aws:secretsmanager:us-east-1:1:secret:a-AbC, arn:aws:secretsmanager:us-east-1:1:secret:prod/*",
        )]))
        .unwrap();
        assert!(c.admin_secrets.check("arn:aws:secretsmanager:us-east-1:1:secret:prod/x").is_ok());
        assert!(c.admin_secrets.check("arn:aws:secretsmanager:us-east-1:1:secret:b").is_err());
    }

    #[cfg(feature = "database")]
    #[test]
    fn bad_settings_name_the_variable() {
        for (pairs, variable) in [
            (vec![("KEYTURN_STRATEGY", "both")], "KEYTURN_STRATEGY"),
            (vec![("KEYTURN_STRATEGIE", "single-user")], "KEYTURN_STRATEGIE"),
            (vec![("PASSWORD_LENGTH", "long")], "PASSWORD_LENGTH"),
            (vec![("PASSWORD_LENGTH", "3")], "PASSWORD_LENGTH"),
            (vec![("KEYTURN_STATEMENT_TIMEOUT_SECS", "0")], "KEYTURN_STATEMENT_TIMEOUT_SECS"),
            (vec![("KEYTURN_CONNECT_TIMEOUT_SECS", "600")], "KEYTURN_CONNECT_TIMEOUT_SECS"),
            (vec![("KEYTURN_ADMIN_SECRET_ARNS", "prod/admin")], "KEYTURN_ADMIN_SECRET_ARNS"),
            (vec![("KEYTURN_ADMIN_SECRET_ARNS", "arn:aws:*:admin")], "KEYTURN_ADMIN_SECRET_ARNS"),
        ] {
            let err = RotateDatabaseConfig::from_vars(vars(&pairs)).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
    }

    #[cfg(feature = "database")]
    #[test]
    fn lease_config_needs_the_roles_file_and_table_and_checks_ranges() {
        let base = [("KEYTURN_ROLES_FILE", "/opt/roles.toml"), ("KEYTURN_LEASE_TABLE", "leases")];
        let c = LeaseConfig::from_vars(vars(&base)).unwrap();
        assert_eq!((c.scram_iterations, c.reap_batch, c.reap_concurrency, c.clock_offset), (4096, 1000, 16, 0));
        assert_eq!(LeaseConfig::from_vars(vars(&base[..1])).unwrap_err().variable, "KEYTURN_LEASE_TABLE");
        assert_eq!(LeaseConfig::from_vars(vars(&base[1..])).unwrap_err().variable, "KEYTURN_ROLES_FILE");
        for (key, value) in [
            ("KEYTURN_SCRAM_ITERATIONS", "0"),
            ("KEYTURN_SCRAM_ITERATIONS", "1000000"),
            ("KEYTURN_REAP_BATCH", "0"),
            ("KEYTURN_REAP_CONCURRENCY", "65"),
            ("KEYTURN_STRATEGY", "single-user"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((key, value));
            assert_eq!(LeaseConfig::from_vars(vars(&pairs)).unwrap_err().variable, key);
        }
    }

    #[cfg(feature = "iam")]
    #[test]
    fn iam_config_needs_a_scope() {
        let err = RotateIamKeyConfig::from_vars(vars(&[])).unwrap_err();
        assert!(err.problem.contains("declared scope"), "{err}");
        let c = RotateIamKeyConfig::from_vars(vars(&[("KEYTURN_IAM_TAG", "rotate=keyturn")])).unwrap();
        assert_eq!(c.scope.tag, Some(("rotate".into(), Some("keyturn".into()))));
        assert_eq!(c.test_timeout, Duration::from_secs(30));
        let c = RotateIamKeyConfig::from_vars(vars(&[("KEYTURN_IAM_PATH_PREFIX", "/keyturn/")])).unwrap();
        assert_eq!(c.scope.path_prefix.as_deref(), Some("/keyturn/"));
        for (pairs, variable) in [
            (vec![("KEYTURN_IAM_PATH_PREFIX", "keyturn")], "KEYTURN_IAM_PATH_PREFIX"),
            (vec![("KEYTURN_IAM_TAG", "t"), ("KEYTURN_IAM_TEST_TIMEOUT_SECS", "0")], "KEYTURN_IAM_TEST_TIMEOUT_SECS"),
            (vec![("KEYTURN_IAM_TAG", "t"), ("KEYTURN_STRATEGY", "single-user")], "KEYTURN_STRATEGY"),
        ] {
            assert_eq!(RotateIamKeyConfig::from_vars(vars(&pairs)).unwrap_err().variable, variable);
        }
    }
}
