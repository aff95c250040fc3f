//! Configuration read once per container from the environment into typed values.
//!
//! AWS's templates' variable names are honoured as they are (`PASSWORD_LENGTH`,
//! `EXCLUDE_CHARACTERS`, `SECRETS_MANAGER_ENDPOINT`) so keyturn is a drop-in replacement;
//! keyturn's own settings start with `KEYTURN_`, and an unknown `KEYTURN_` variable is
//! refused rather than silently ignored (a typo must not change behaviour unseen).

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::postgres::Timeouts;
use crate::password::{PasswordPolicy, DEFAULT_EXCLUDE, DEFAULT_LENGTH};
use crate::rotation::database::Strategy;

/// A setting that could not be used. Names the variable and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

/// Accepted range for the timeouts, in seconds.
pub const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u64> = 1..=60;

const KNOWN: [&str; 4] =
    ["KEYTURN_STRATEGY", "KEYTURN_EXTRA_CA_FILES", "KEYTURN_CONNECT_TIMEOUT_SECS", "KEYTURN_STATEMENT_TIMEOUT_SECS"];

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
}

impl RotateDatabaseConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables (the process environment in production).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let vars: std::collections::HashMap<String, String> = vars.into_iter().collect();
        if let Some(unknown) = vars.keys().filter(|k| k.starts_with("KEYTURN_") && !KNOWN.contains(&k.as_str())).min() {
            return Err(ConfigError {
                variable: unknown.clone(),
                problem: format!("unknown setting (known: {})", KNOWN.join(", ")),
            });
        }
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let err = |variable: &str, problem: String| ConfigError { variable: variable.into(), problem };

        let strategy = match get("KEYTURN_STRATEGY") {
            None | Some("single-user") => Strategy::SingleUser,
            Some("alternating-users") => Strategy::AlternatingUsers,
            Some(other) => {
                return Err(err("KEYTURN_STRATEGY", format!("{other:?} is not single-user or alternating-users")))
            }
        };
        let length = match get("PASSWORD_LENGTH") {
            None => DEFAULT_LENGTH,
            Some(v) => v.parse().map_err(|_| err("PASSWORD_LENGTH", format!("{v:?} is not a whole number")))?,
        };
        // An empty EXCLUDE_CHARACTERS means "exclude nothing", as with AWS's API.
        let exclude = vars.get("EXCLUDE_CHARACTERS").map(String::as_str).unwrap_or(DEFAULT_EXCLUDE);
        let passwords = PasswordPolicy::new(length, exclude).map_err(|e| err("PASSWORD_LENGTH", e.to_string()))?;
        let seconds = |k: &str| -> Result<Duration, ConfigError> {
            let Some(v) = get(k) else {
                return Ok(Duration::from_secs(5));
            };
            match v.parse::<u64>() {
                Ok(n) if TIMEOUT_RANGE_SECS.contains(&n) => Ok(Duration::from_secs(n)),
                _ => Err(err(k, format!("{v:?} is not a whole number of seconds from 1 to 60"))),
            }
        };
        let timeouts = Timeouts {
            connect: seconds("KEYTURN_CONNECT_TIMEOUT_SECS")?,
            statement: seconds("KEYTURN_STATEMENT_TIMEOUT_SECS")?,
        };
        let extra_ca_files = get("KEYTURN_EXTRA_CA_FILES")
            .map(|v| v.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect())
            .unwrap_or_default();
        let secrets_manager_endpoint = get("SECRETS_MANAGER_ENDPOINT").map(str::to_owned);
        Ok(Self { strategy, passwords, timeouts, extra_ca_files, secrets_manager_endpoint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let c = RotateDatabaseConfig::from_vars(vars(&[("PATH", "/bin")])).unwrap();
        assert_eq!(c.strategy, Strategy::SingleUser);
        assert_eq!(c.passwords, PasswordPolicy::default());
        assert_eq!(c.timeouts, Timeouts::default());
        assert!(c.extra_ca_files.is_empty());
    }

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
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (pairs, variable) in [
            (vec![("KEYTURN_STRATEGY", "both")], "KEYTURN_STRATEGY"),
            (vec![("KEYTURN_STRATEGIE", "single-user")], "KEYTURN_STRATEGIE"),
            (vec![("PASSWORD_LENGTH", "long")], "PASSWORD_LENGTH"),
            (vec![("PASSWORD_LENGTH", "3")], "PASSWORD_LENGTH"),
            (vec![("KEYTURN_STATEMENT_TIMEOUT_SECS", "0")], "KEYTURN_STATEMENT_TIMEOUT_SECS"),
            (vec![("KEYTURN_CONNECT_TIMEOUT_SECS", "600")], "KEYTURN_CONNECT_TIMEOUT_SECS"),
        ] {
            let err = RotateDatabaseConfig::from_vars(vars(&pairs)).unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
    }
}
