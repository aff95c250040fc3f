//! A credential as `keyturn creds` prints it and `keyturn exec` hands it to a command.
//!
//! The API's 201 body is read into the contract's [`IssuedAnswer`] and then a
//! [`Credential`] first: a body that lacks a field, or holds a value an environment variable
//! cannot carry (a NUL), is an error naming the field, never a half-printed credential. The API is keyturn's own, but what it relays
//! (a host from an admin secret, a name from a roles file) was written by others, so
//! every value is quoted or encoded for the format it lands in:
//!
//! - `env`: `export NAME='value'` lines for a POSIX shell (`eval "$(keyturn creds ...)"`),
//!   each value single-quoted, a `'` written `'\''`: a shell expands nothing inside.
//! - `dotenv`: `NAME='value'` lines, which python-dotenv and Node's dotenv both take
//!   literally (no escapes they disagree on, no `${...}` expansion); a value holding a `'`,
//!   a `\` or a line break cannot be written so and is refused (keyturn's passwords, keys
//!   and tokens hold none).
//! - `uri`: `postgresql://` or `mysql://` with user, password and database
//!   percent-encoded (everything but RFC 3986's unreserved characters).
//! - `pgpass`: one `host:port:database:user:password` line, `\` and `:` escaped with `\`,
//!   and a field that is just `*` written `\*` (libpq reads a bare `*` as "any").
//! - `json`: the API's answer as it came.
//!
//! The variables: PostgreSQL's `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`
//! (and `PGSSLMODE=verify-full`, `PGGSSENCMODE=disable` when the server takes TLS);
//! MySQL's `MYSQL_HOST`, `MYSQL_TCP_PORT`, `MYSQL_USER`, `MYSQL_PWD`, `MYSQL_DATABASE`;
//! both with `DATABASE_URL`; AWS's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`. Before they are set, the caller's own variables that would send
//! the credential elsewhere or weaken its protection are removed ([`Credential::displaced`],
//! one list per kind of client): `exec` removes them from its command's environment, the
//! `env` format begins with an `unset` line.

use std::fmt::Write as _;
use std::str::FromStr;

use keyturn::backend::{Engine, Family};
use keyturn::contract::{IssuedAnswer, IssuedCredential, ReadError};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// How to print a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Env,
    Dotenv,
    Uri,
    Pgpass,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "env" => Ok(Self::Env),
            "dotenv" => Ok(Self::Dotenv),
            "uri" => Ok(Self::Uri),
            "pgpass" => Ok(Self::Pgpass),
            other => Err(format!("{other:?} is not a format (json, env, dotenv, uri, pgpass)")),
        }
    }
}

/// Why a credential could not be read or printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The API's answer lacks a field or holds one of the wrong type (by its path).
    #[error("the API's answer has no valid {0:?}")]
    Missing(String),
    #[error("the API's answer is not a JSON object")]
    NotAnObject,
    #[error("the API's answer holds a NUL in {0:?}, which no environment can carry")]
    Nul(&'static str),
    #[error("the API's answer is of kind {0:?}, which this version of keyturn does not know")]
    UnknownKind(String),
    #[error("the API's answer names engine {0:?}, which this version of keyturn does not know")]
    UnknownEngine(String),
    /// A host that is neither a DNS name nor an IP address: in a URL it could add
    /// parameters (`?sslmode=disable`) or another host.
    #[error("the API's answer names host {0:?}, which is not a host name or an IP address")]
    BadHost(String),
    #[error("the dotenv format cannot hold the quote, backslash or line break in {0:?}")]
    Dotenv(&'static str),
    /// A line-based format cannot hold a value with a line break.
    #[error("the {format} format cannot hold the line break in {field:?}")]
    LineBreak { format: &'static str, field: &'static str },
    /// The format does not apply to this kind of credential.
    #[error("the {format} format is for {applies_to} credentials")]
    NotApplicable { format: &'static str, applies_to: &'static str },
}

impl From<ReadError> for FormatError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotAnObject => Self::NotAnObject,
            ReadError::Field(path) => Self::Missing(path),
            ReadError::UnknownKind(kind) => Self::UnknownKind(kind),
        }
    }
}

/// A credential the API issued, checked.
#[derive(Debug)]
pub struct Credential {
    /// The answer as the contract reads it (the lease's id, expiry and TTL).
    pub issued: IssuedAnswer,
    pub secret: Secret,
    /// The answer as it came, for `json`.
    body: Value,
}

/// What the credential is, by the families of clients that use it.
#[derive(Debug)]
pub enum Secret {
    /// A database login: a database user's password, or an RDS IAM token.
    Database {
        family: Family,
        host: String,
        port: u16,
        dbname: Option<String>,
        username: String,
        password: SecretString,
        /// The server takes verified TLS (keyturn itself reaches it so): clients must too.
        tls: bool,
    },
    /// An access key, with its session token for an STS session.
    Aws { access_key_id: String, secret_access_key: SecretString, session_token: Option<SecretString> },
}

/// A field's value, which must hold no NUL (no environment can carry one).
fn no_nul(field: &'static str, value: &str) -> Result<String, FormatError> {
    if value.contains('\0') {
        return Err(FormatError::Nul(field));
    }
    Ok(value.to_owned())
}

/// A database login, checked: an engine this CLI knows, a host that is a name or an address.
fn database(
    engine: &str,
    host: &str,
    port: u16,
    dbname: Option<&str>,
    username: &str,
    password: &SecretString,
    tls: bool,
) -> Result<Secret, FormatError> {
    let engine = Engine::parse(engine).ok_or_else(|| FormatError::UnknownEngine(engine.to_owned()))?;
    let host = no_nul("host", host)?;
    // `_` is not DNS's but is common in container networks (a compose service
    // `pg_primary`) and means nothing in a URL's authority.
    let is_name = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !host.starts_with(['.', '-']);
    if !is_name && host.parse::<std::net::IpAddr>().is_err() {
        return Err(FormatError::BadHost(host));
    }
    Ok(Secret::Database {
        family: engine.family(),
        host,
        port,
        dbname: dbname.map(|db| no_nul("dbname", db)).transpose()?,
        username: no_nul("username", username)?,
        password: no_nul("password", password.expose_secret())?.into(),
        tls,
    })
}

/// libpq's variables (and so psql's, psycopg's, pgx's...) that choose the server, the
/// transport's protection or the login, other than those keyturn sets: an inherited
/// `PGSERVICE` (with `PGSERVICEFILE` or `PGSYSCONFDIR`'s `pg_service.conf`) takes
/// precedence over `PGHOST` and the rest, `PGHOSTADDR` over the host's address,
/// `PGSSLMODE=disable` or a lower TLS version drops or weakens TLS, `PGPASSFILE`,
/// `PGSSLCERT`/`PGSSLKEY`, `PGCHANNELBINDING`, `PGREQUIREAUTH` and the GSSAPI settings
/// choose how it authenticates, `PGOPTIONS` what the session runs with (`role`,
/// `search_path`), `PGTARGETSESSIONATTRS` and `PGLOADBALANCEHOSTS` which of several hosts.
/// Kept: where the CA certificates are (`PGSSLROOTCERT`, `PGSSLCRL`, `PGSSLCRLDIR`, which
/// verify-full needs and which the caller knows best), and what only shapes the session's
/// output or waits (`PGAPPNAME`, `PGCLIENTENCODING`, `PGCONNECT_TIMEOUT`, `PGTZ`, ...).
pub const POSTGRES_DISPLACED: &[&str] = &[
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGHOSTADDR",
    "PGPASSFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLNEGOTIATION",
    "PGSSLCOMPRESSION",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCERTMODE",
    "PGCHANNELBINDING",
    "PGREQUIREAUTH",
    "PGGSSENCMODE",
    "PGGSSLIB",
    "PGKRBSRVNAME",
    "PGGSSDELEGATION",
    "PGREQUIREPEER",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
];

/// The MySQL and MariaDB clients' variables that choose the server or the login, other than
/// those keyturn sets: `MYSQL_UNIX_PORT` (a socket for `localhost`), `MARIADB_HOST` (newer
/// MariaDB clients read it before `MYSQL_HOST`), `MYSQL_HOME`, `MYSQL_TEST_LOGIN_FILE`
/// and `MYSQL_GROUP_SUFFIX` (more option files and groups, whose `host`, `port`, `password`
/// or `ssl` settings take precedence over the environment), and
/// `LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN` (sends the password as it is when a server asks).
/// The client's default option files (`/etc/my.cnf`, `~/.my.cnf`) are still read, and no
/// variable makes it require TLS: see docs/cli.md (`exec`'s MySQL and MariaDB list).
pub const MYSQL_DISPLACED: &[&str] = &[
    "MYSQL_UNIX_PORT",
    "MARIADB_HOST",
    "MYSQL_HOME",
    "MYSQL_TEST_LOGIN_FILE",
    "MYSQL_GROUP_SUFFIX",
    "LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN",
];

/// The AWS SDKs' variables that would pick another identity than the credential's in a
/// client that reads both: the AWS SDK for JavaScript (v3, and so the CDK) uses
/// `AWS_PROFILE` over the key in the environment, botocore takes `AWS_CREDENTIAL_EXPIRATION`
/// as the key's expiry, boto2 reads `AWS_SECURITY_TOKEN`.
pub const AWS_DISPLACED: &[&str] =
    &["AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CREDENTIAL_EXPIRATION", "AWS_SECURITY_TOKEN"];

impl Credential {
    /// Reads the API's answer to `POST /v1/credentials/{role}`.
    pub fn from_body(body: Value) -> Result<Self, FormatError> {
        let issued = IssuedAnswer::from_value(&body)?;
        let secret = match &issued.credential {
            IssuedCredential::Database(login) => database(
                &login.engine,
                &login.host,
                login.port,
                login.dbname.as_deref(),
                &login.username,
                &login.password,
                login.tls,
            )?,
            IssuedCredential::RdsToken(login) => {
                database(&login.engine, &login.host, login.port, None, &login.username, &login.password, login.tls)?
            }
            IssuedCredential::Aws(keys) => Secret::Aws {
                access_key_id: no_nul("access_key_id", &keys.access_key_id)?,
                secret_access_key: no_nul("secret_access_key", keys.secret_access_key.expose_secret())?.into(),
                session_token: keys
                    .session_token
                    .as_ref()
                    .map(|token| no_nul("session_token", token.expose_secret()).map(SecretString::from))
                    .transpose()?,
            },
        };
        if !is_lease_id(&issued.lease.lease_id) {
            return Err(FormatError::Missing("lease_id".into()));
        }
        Ok(Self { issued, secret, body })
    }

    /// The environment variables a client of this credential reads, in a fixed order.
    pub fn variables(&self) -> Vec<(&'static str, SecretString)> {
        let plain = |v: &str| SecretString::from(v.to_owned());
        match &self.secret {
            Secret::Database { family, host, port, dbname, username, password, tls } => {
                let names = match family {
                    Family::Postgres => ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"],
                    Family::Mysql => ["MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_USER", "MYSQL_PWD", "MYSQL_DATABASE"],
                };
                let mut vars = vec![
                    (names[0], plain(host)),
                    (names[1], plain(&port.to_string())),
                    (names[2], plain(username)),
                    (names[3], password.clone()),
                ];
                if let Some(db) = dbname {
                    vars.push((names[4], plain(db)));
                }
                if *tls && matches!(family, Family::Postgres) {
                    // verify-full: the chain and the host name, never a fallback to
                    // plaintext. libpq uses GSSAPI encryption over TLS whenever it can,
                    // whatever sslmode says, unless gssencmode is disable.
                    vars.push(("PGSSLMODE", plain("verify-full")));
                    vars.push(("PGGSSENCMODE", plain("disable")));
                }
                vars.push(("DATABASE_URL", SecretString::from(self.uri().unwrap_or_default())));
                vars
            }
            Secret::Aws { access_key_id, secret_access_key, session_token } => {
                let mut vars = vec![
                    ("AWS_ACCESS_KEY_ID", plain(access_key_id)),
                    ("AWS_SECRET_ACCESS_KEY", secret_access_key.clone()),
                ];
                if let Some(token) = session_token {
                    vars.push(("AWS_SESSION_TOKEN", token.clone()));
                }
                vars
            }
        }
    }

    /// The caller's own variables that `exec` removes from its command's environment, and
    /// the `env` format unsets, before the credential's own are set (some of them again,
    /// with keyturn's values): one list per kind of client, each variable that would send
    /// the credential to another server, weaken or drop its protection, or make the client
    /// log in as someone else. See [`POSTGRES_DISPLACED`], [`MYSQL_DISPLACED`] and, for an
    /// AWS credential, [`AWS_DISPLACED`] (with `AWS_SESSION_TOKEN` for an IAM user's key,
    /// which an inherited token would be sent with, and refused).
    pub fn displaced(&self) -> Vec<&'static str> {
        match &self.secret {
            Secret::Database { family: Family::Postgres, .. } => POSTGRES_DISPLACED.to_vec(),
            Secret::Database { family: Family::Mysql, .. } => MYSQL_DISPLACED.to_vec(),
            Secret::Aws { session_token, .. } => {
                let mut names = AWS_DISPLACED.to_vec();
                if session_token.is_none() {
                    names.push("AWS_SESSION_TOKEN");
                }
                names
            }
        }
    }

    /// The credential in `format`. The text holds the secret: print it only where asked.
    pub fn render(&self, format: Format) -> Result<String, FormatError> {
        match format {
            Format::Json => Ok(json_text(&self.body) + "\n"),
            Format::Env => {
                let displaced = self.displaced();
                let unset =
                    if displaced.is_empty() { String::new() } else { format!("unset {}\n", displaced.join(" ")) };
                Ok(unset + &self.lines(|name, value| format!("export {name}={}\n", shell_quote(value))))
            }
            Format::Dotenv => {
                let vars = self.variables();
                if let Some((name, _)) = vars.iter().find(|(_, v)| v.expose_secret().contains(['\'', '\\', '\n', '\r']))
                {
                    return Err(FormatError::Dotenv(name));
                }
                Ok(self.lines(|name, value| format!("{name}='{value}'\n")))
            }
            Format::Uri => self.uri().map(|uri| uri + "\n"),
            Format::Pgpass => match &self.secret {
                Secret::Database { family: Family::Postgres, host, port, dbname, username, password, .. } => {
                    let fields =
                        [("host", host.as_str()), ("username", username), ("password", password.expose_secret())];
                    let dbname_field = ("dbname", dbname.as_deref().unwrap_or_default());
                    if let Some((field, _)) =
                        fields.iter().chain([&dbname_field]).find(|(_, v)| v.contains(['\n', '\r']))
                    {
                        return Err(FormatError::LineBreak { format: "pgpass", field });
                    }
                    Ok(format!(
                        "{}:{port}:{}:{}:{}\n",
                        pgpass_escape(host),
                        dbname.as_deref().map_or_else(|| "*".to_owned(), pgpass_escape),
                        pgpass_escape(username),
                        pgpass_escape(password.expose_secret())
                    ))
                }
                _ => Err(FormatError::NotApplicable { format: "pgpass", applies_to: "PostgreSQL" }),
            },
        }
    }

    fn lines(&self, line: impl Fn(&str, &str) -> String) -> String {
        self.variables().iter().map(|(name, value)| line(name, value.expose_secret())).collect()
    }

    /// `postgresql://` or `mysql://user:password@host:port/database`, encoded.
    fn uri(&self) -> Result<String, FormatError> {
        let Secret::Database { family, host, port, dbname, username, password, .. } = &self.secret else {
            return Err(FormatError::NotApplicable { format: "uri", applies_to: "database" });
        };
        let scheme = match family {
            Family::Postgres => "postgresql",
            Family::Mysql => "mysql",
        };
        // An IPv6 address is bracketed; a host name is kept as it is (DNS names need no
        // encoding, and the issuer's roles and admin secrets name hosts, not URLs).
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("[{v6}]"),
            Err(_) => host.clone(),
        };
        let mut uri = format!(
            "{scheme}://{}:{}@{host}:{port}",
            percent_encode(username),
            percent_encode(password.expose_secret())
        );
        if let Some(db) = dbname {
            let _ = write!(uri, "/{}", percent_encode(db));
        }
        Ok(uri)
    }
}

/// Whether a lease id from the API can go into the paths of renew and revoke: one
/// segment, nothing to encode.
pub fn is_lease_id(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `value` as indented JSON with every control character escaped: serde_json escapes
/// U+0000 to U+001F only, and a terminal acts on U+007F to U+009F too (U+009B is a CSI).
/// Outside strings JSON is ASCII without them, so only strings change, and stay equal.
pub fn json_text(value: &Value) -> String {
    let text = format!("{value:#}");
    text.chars()
        .map(
            |c| if c.is_control() && !c.is_ascii_whitespace() { format!("\\u{:04x}", c as u32) } else { c.to_string() },
        )
        .collect()
}

/// A POSIX shell word holding exactly `value`.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

fn pgpass_escape(value: &str) -> String {
    if value == "*" {
        return r"\*".to_owned();
    }
    value.replace('\\', r"\\").replace(':', r"\:")
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pg(password: &str) -> Value {
        json!({
            "lease_id": "abcdefghij0123456789", "kind": "database", "expires_at": 1000, "engine": "postgres",
            "host": "db.example.com", "port": 5432, "dbname": "app", "username": "kt_ci_x", "password": password,
        })
    }

    #[test]
    fn formats_are_named_and_unknown_ones_refused() {
        assert_eq!("env".parse(), Ok(Format::Env));
        assert!("yaml".parse::<Format>().unwrap_err().contains("json, env, dotenv, uri, pgpass"));
    }

    #[test]
    fn a_postgres_credential_in_each_format() {
        let c = Credential::from_body(pg("p'w:d@/%")).unwrap();
        let env = c.render(Format::Env).unwrap();
        assert!(env.contains("export PGPASSWORD='p'\\''w:d@/%'\n"), "{env}");
        assert!(env.contains("export DATABASE_URL='postgresql://kt_ci_x:p%27w%3Ad%40%2F%25@db.example.com:5432/app'\n"));
        assert_eq!(c.render(Format::Pgpass).unwrap(), "db.example.com:5432:app:kt_ci_x:p'w\\:d@/%\n");
        assert_eq!(c.render(Format::Dotenv).unwrap_err(), FormatError::Dotenv("PGPASSWORD"));
        let plain = Credential::from_body(pg("pw$x")).unwrap().render(Format::Dotenv).unwrap();
        assert_eq!(plain.lines().next(), Some("PGHOST='db.example.com'"));
        assert!(plain.contains("PGPASSWORD='pw$x'\n"), "{plain}");
        assert_eq!(serde_json::from_str::<Value>(&c.render(Format::Json).unwrap()).unwrap(), pg("p'w:d@/%"));
    }

    #[test]
    fn mysql_and_aws_credentials_use_their_clients_variables() {
        let mut body = pg("pw");
        body["engine"] = json!("mariadb");
        let names: Vec<_> = Credential::from_body(body).unwrap().variables().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["MYSQL_HOST", "MYSQL_TCP_PORT", "MYSQL_USER", "MYSQL_PWD", "MYSQL_DATABASE", "DATABASE_URL"]
        );
        let sts = json!({"lease_id": "l", "kind": "aws-sts", "expires_at": 1, "access_key_id": "ASIA1",
                         "secret_access_key": "s", "session_token": "t"});
        let c = Credential::from_body(sts).unwrap();
        let names: Vec<_> = c.variables().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]);
        assert_eq!(c.render(Format::Uri).unwrap_err().to_string(), "the uri format is for database credentials");
        assert!(c.render(Format::Pgpass).is_err());
    }

    #[test]
    fn an_aws_credential_displaces_the_callers_own_identity_settings() {
        let sts = json!({"lease_id": "l", "kind": "aws-sts", "expires_at": 1, "access_key_id": "ASIA1",
                         "secret_access_key": "s", "session_token": "t"});
        let env = Credential::from_body(sts).unwrap().render(Format::Env).unwrap();
        assert!(
            env.starts_with("unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_CREDENTIAL_EXPIRATION AWS_SECURITY_TOKEN\n"),
            "{env}"
        );
        let user = json!({"lease_id": "l", "kind": "aws-iam-user", "expires_at": 1, "access_key_id": "AKIA1",
                          "secret_access_key": "s"});
        let c = Credential::from_body(user).unwrap();
        assert_eq!(c.displaced().last(), Some(&"AWS_SESSION_TOKEN"), "an inherited token would be sent with the key");
    }

    /// The settings a caller's environment may hold that would send the password to
    /// another server, drop TLS or change the login, by client.
    const PG_HOSTILE: [&str; 8] = [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGHOSTADDR",
        "PGSSLMODE",
        "PGOPTIONS",
        "PGPASSFILE",
        "PGGSSENCMODE",
        "PGREQUIRESSL",
    ];
    const MYSQL_HOSTILE: [&str; 5] = [
        "MYSQL_UNIX_PORT",
        "MYSQL_HOME",
        "MYSQL_TEST_LOGIN_FILE",
        "MYSQL_GROUP_SUFFIX",
        "LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN",
    ];

    /// What a real `/bin/sh` has after evaluating `env` output in an environment holding
    /// each of `inherited` set to `x`: `NAME=value` lines of every variable named.
    fn after_eval(c: &Credential, inherited: &[&str], names: &[&str]) -> String {
        let print: String = names.iter().map(|n| format!("printf '%s=%s\\n' {n} \"${{{n}-unset}}\"\n")).collect();
        let script = format!("{}{print}", c.render(Format::Env).unwrap());
        let mut sh = std::process::Command::new("/bin/sh");
        sh.arg("-c").arg(&script).env_clear();
        for name in inherited {
            sh.env(name, "x");
        }
        let out = sh.output().expect("run sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_database_credential_displaces_the_callers_server_tls_and_password_settings() {
        let c = Credential::from_body(pg("pw")).unwrap();
        let env = after_eval(&c, &PG_HOSTILE, &PG_HOSTILE);
        for name in PG_HOSTILE {
            let expected = match name {
                "PGSSLMODE" => "verify-full",
                "PGGSSENCMODE" => "disable",
                _ => "unset",
            };
            assert!(env.contains(&format!("{name}={expected}\n")), "{name}: {env}");
        }
        // The caller's CA for verify-full is theirs to name: kept.
        assert!(!c.displaced().contains(&"PGSSLROOTCERT"));
        // A server keyturn itself reaches without TLS (`"ssl": false`): no TLS mode is forced,
        // and the caller's is removed all the same.
        let mut body = pg("pw");
        body["tls"] = json!(false);
        let plain = Credential::from_body(body).unwrap();
        assert!(!plain.variables().iter().any(|(n, _)| n.starts_with("PGSSL") || *n == "PGGSSENCMODE"));
        assert!(after_eval(&plain, &["PGSSLMODE"], &["PGSSLMODE"]).contains("PGSSLMODE=unset\n"));
        let mut body = pg("pw");
        body["tls"] = json!("yes");
        assert_eq!(Credential::from_body(body).unwrap_err(), FormatError::Missing("tls".into()));

        let mut body = pg("pw");
        body["engine"] = json!("mariadb");
        let c = Credential::from_body(body).unwrap();
        let env = after_eval(&c, &MYSQL_HOSTILE, &MYSQL_HOSTILE);
        for name in MYSQL_HOSTILE {
            assert!(env.contains(&format!("{name}=unset\n")), "{name}: {env}");
        }
        assert!(!c.displaced().iter().any(|n| n.starts_with("PG") || n.starts_with("AWS")));
    }

    #[test]
    fn json_for_a_terminal_escapes_every_control_character_and_parses_back_the_same() {
        let value = json!({"m": "a\u{9b}31mb\u{1b}c\u{7f}d\ne", "n": 1});
        let text = json_text(&value);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn bad_answers_are_errors_naming_the_field() {
        let mut body = pg("pw");
        body["password"] = json!("a\0b");
        assert_eq!(Credential::from_body(body).unwrap_err(), FormatError::Nul("password"));
        let mut body = pg("pw");
        body["port"] = json!(70000);
        assert_eq!(Credential::from_body(body).unwrap_err(), FormatError::Missing("port".into()));
        let mut body = pg("pw");
        body["kind"] = json!("ldap");
        assert!(matches!(Credential::from_body(body), Err(FormatError::UnknownKind(_))));
        // A value of the wrong type is named, never quoted: it may be a secret misplaced.
        let mut body = pg("pw");
        body["port"] = json!("the-password");
        let e = Credential::from_body(body).unwrap_err();
        assert_eq!(e, FormatError::Missing("port".into()));
        assert!(!e.to_string().contains("the-password"), "{e}");
        let mut body = pg("pw");
        body.as_object_mut().unwrap().remove("password");
        assert_eq!(Credential::from_body(body).unwrap_err(), FormatError::Missing("password".into()));
    }

    /// Every printable ASCII character, a newline, a tab and some beyond ASCII.
    fn hostile() -> String {
        let mut s: String = (0x20u8..0x7f).map(char::from).collect();
        s.push_str("\n\t'\"$(id)`id`\\é✓");
        s
    }

    #[test]
    fn env_output_evaluates_back_to_the_exact_value_in_a_real_shell() {
        let c = Credential::from_body(pg(&hostile())).unwrap();
        let script = format!("{}printf '%s' \"$PGPASSWORD\"", c.render(Format::Env).unwrap());
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(&script).output().expect("run sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile());
    }

    #[test]
    fn uri_and_pgpass_encode_every_character_and_decode_back() {
        let c = Credential::from_body(pg(&hostile())).unwrap();
        let uri = c.render(Format::Uri).unwrap();
        let userinfo = uri.trim_end().strip_prefix("postgresql://kt_ci_x:").unwrap().rsplit_once('@').unwrap().0;
        assert!(userinfo.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{userinfo}");
        let mut decoded = Vec::new();
        let mut bytes = userinfo.bytes();
        while let Some(b) = bytes.next() {
            if b == b'%' {
                let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()].iter().map(|&b| b as char).collect();
                decoded.push(u8::from_str_radix(&hex, 16).unwrap());
            } else {
                decoded.push(b);
            }
        }
        assert_eq!(String::from_utf8(decoded).unwrap(), hostile());
        assert_eq!(
            c.render(Format::Pgpass).unwrap_err(),
            FormatError::LineBreak { format: "pgpass", field: "password" },
            "a line break cannot be in a .pgpass line"
        );
        // libpq's reading: a backslash takes the next character literally.
        let one_line = hostile().replace(['\n', '\t'], "");
        let line = Credential::from_body(pg(&one_line)).unwrap().render(Format::Pgpass).unwrap();
        let mut fields = vec![String::new()];
        let mut chars = line.strip_suffix('\n').unwrap().chars();
        while let Some(ch) = chars.next() {
            match ch {
                '\\' => fields.last_mut().unwrap().push(chars.next().unwrap()),
                ':' => fields.push(String::new()),
                ch => fields.last_mut().unwrap().push(ch),
            }
        }
        assert_eq!(fields.len(), 5, "{line}");
        assert_eq!(fields[4], one_line);
    }

    #[test]
    fn dotenv_refuses_what_it_cannot_write_literally() {
        for bad in ["a'b", "a\\", "a\rEVIL=x", "a\nb"] {
            let c = Credential::from_body(pg(bad)).unwrap();
            assert_eq!(c.render(Format::Dotenv).unwrap_err(), FormatError::Dotenv("PGPASSWORD"), "{bad:?}");
        }
    }

    #[test]
    fn a_host_that_could_change_a_url_is_refused_and_addresses_are_written_right() {
        for bad in ["db.example.com/app?sslmode=disable&x=", "h?host=evil", "a b", "", "-h", "[::1]", "*"] {
            let mut body = pg("pw");
            body["host"] = json!(bad);
            assert!(matches!(Credential::from_body(body), Err(FormatError::BadHost(_))), "{bad:?}");
        }
        let mut body = pg("pw");
        body["host"] = json!("::1");
        let uri = Credential::from_body(body).unwrap().render(Format::Uri).unwrap();
        assert_eq!(uri, "postgresql://kt_ci_x:pw@[::1]:5432/app\n");
        let mut body = pg("pw");
        body["host"] = json!("pg_primary");
        let uri = Credential::from_body(body).unwrap().render(Format::Uri).unwrap();
        assert_eq!(uri, "postgresql://kt_ci_x:pw@pg_primary:5432/app\n", "a container network's name");
    }

    #[test]
    fn a_pgpass_field_that_is_just_a_star_matches_only_itself() {
        let mut body = pg("*");
        body["dbname"] = Value::Null;
        let line = Credential::from_body(body).unwrap().render(Format::Pgpass).unwrap();
        assert_eq!(line, "db.example.com:5432:*:kt_ci_x:\\*\n", "the missing dbname stays a wildcard");
    }
}
