//! The database secret format, drop-in compatible with AWS's rotation templates:
//! `engine`, `host`, `port`, `username`, `password`, `dbname`, `masterarn`, `ssl`.
//! Keys keyturn does not know are carried over untouched: rotation rewrites only
//! `username` and `password`.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// A database engine, as named in the secret's `engine` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    AuroraPostgresql,
    Mysql,
    AuroraMysql,
    Mariadb,
}

/// Engines that speak the same protocol and SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Postgres,
    Mysql,
}

impl Engine {
    const ALL: [Engine; 5] =
        [Engine::Postgres, Engine::AuroraPostgresql, Engine::Mysql, Engine::AuroraMysql, Engine::Mariadb];

    /// Parses the `engine` key (RDS's engine names, as AWS's templates accept them).
    pub fn parse(name: &str) -> Option<Engine> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::AuroraPostgresql => "aurora-postgresql",
            Engine::Mysql => "mysql",
            Engine::AuroraMysql => "aurora-mysql",
            Engine::Mariadb => "mariadb",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Engine::Postgres | Engine::AuroraPostgresql => Family::Postgres,
            Engine::Mysql | Engine::AuroraMysql | Engine::Mariadb => Family::Mysql,
        }
    }

    /// The port used when the secret names none.
    pub fn default_port(self) -> u16 {
        match self.family() {
            Family::Postgres => 5432,
            Family::Mysql => 3306,
        }
    }

    /// The database used when the secret names none.
    pub fn default_dbname(self) -> Option<&'static str> {
        match self.family() {
            Family::Postgres => Some("postgres"),
            Family::Mysql => None,
        }
    }

    /// The longest username the engine takes: PostgreSQL's identifier limit in bytes
    /// (NAMEDATALEN - 1), MySQL's and MariaDB's in characters (MariaDB's real column width
    /// is checked on the server).
    pub fn max_username_len(self) -> usize {
        match self {
            Engine::Postgres | Engine::AuroraPostgresql => 63,
            Engine::Mysql | Engine::AuroraMysql => 32,
            Engine::Mariadb => 80,
        }
    }
}

/// How to protect the connection. There is no "prefer": keyturn never falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS, certificate chain and hostname verified (the default).
    VerifyFull,
    /// Plaintext: only when the secret says `"ssl": false`.
    Disabled,
}

/// A database username: non-empty, no NUL. Engine limits are checked by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

impl Username {
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("username is empty".into());
        }
        if name.contains('\0') {
            return Err("username contains a NUL character".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a database is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub dbname: Option<String>,
    pub tls: TlsMode,
}

/// A username and its password. Debug shows the username only.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: Username,
    pub password: SecretString,
}

/// A parsed database secret (a user's, or the admin secret a user's names). Debug shows
/// the key names of the JSON it came from, never their values.
#[derive(Clone)]
pub struct DatabaseSecret {
    pub endpoint: Endpoint,
    pub credentials: Credentials,
    /// ARN of the admin secret (key `masterarn`), which the alternating-users strategy needs.
    pub admin_arn: Option<String>,
    /// Every key of the original JSON, so unknown keys survive a rotation.
    raw: Map<String, Value>,
}

impl std::fmt::Debug for DatabaseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSecret")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("admin_arn", &self.admin_arn)
            .field("keys", &self.raw.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What is wrong with a secret's JSON. Never includes a value.
pub type FormatError = String;

impl DatabaseSecret {
    /// Parses a user secret: every connection key must be present or defaulted.
    pub fn parse(value: &SecretString) -> Result<Self, FormatError> {
        let raw: Map<String, Value> = match serde_json::from_str::<Value>(value.expose_secret()) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("not a JSON object".into()),
            // serde's message would quote part of the value: say where, not what.
            Err(e) => return Err(format!("malformed JSON at line {} column {}", e.line(), e.column())),
        };
        let engine_name = string(&raw, "engine")?.ok_or("missing key \"engine\"")?;
        let engine = Engine::parse(engine_name).ok_or_else(|| {
            let known: Vec<&str> = Engine::ALL.iter().map(|e| e.as_str()).collect();
            format!("unknown engine {engine_name:?} (expected one of {})", known.join(", "))
        })?;
        Self::from_map(raw, engine)
    }

    /// Parses an admin secret. Its connection keys may be missing: an admin secret that
    /// RDS manages holds only `username` and `password`; [`DatabaseSecret::endpoint`] is
    /// then filled in by the caller from RDS.
    pub fn parse_admin(value: &SecretString) -> Result<AdminSecret, FormatError> {
        let raw: Map<String, Value> = match serde_json::from_str::<Value>(value.expose_secret()) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("not a JSON object".into()),
            Err(e) => return Err(format!("malformed JSON at line {} column {}", e.line(), e.column())),
        };
        let engine = match string(&raw, "engine")? {
            Some(name) => Some(Engine::parse(name).ok_or_else(|| format!("unknown engine {name:?}"))?),
            None => None,
        };
        let credentials = credentials(&raw)?;
        let host = string(&raw, "host")?.map(str::to_owned);
        let port = port(&raw)?;
        let dbname = string(&raw, "dbname")?.map(str::to_owned);
        let tls = tls(&raw)?;
        Ok(AdminSecret { engine, host, port, dbname, tls, credentials })
    }

    fn from_map(raw: Map<String, Value>, engine: Engine) -> Result<Self, FormatError> {
        let host = string(&raw, "host")?.filter(|h| !h.is_empty()).ok_or("missing key \"host\"")?.to_owned();
        let port = port(&raw)?.unwrap_or(engine.default_port());
        let dbname = match string(&raw, "dbname")? {
            Some(name) => Some(name.to_owned()),
            None => engine.default_dbname().map(str::to_owned),
        };
        let credentials = credentials(&raw)?;
        // AWS's secret format calls the database admin "master": its key is `masterarn`.
        let admin_arn = string(&raw, "masterarn")?.map(str::to_owned);
        let tls = tls(&raw)?;
        Ok(Self { endpoint: Endpoint { engine, host, port, dbname, tls }, credentials, admin_arn, raw })
    }

    /// The same secret with other credentials; every other key is kept as it was.
    pub fn with_credentials(&self, username: &Username, password: SecretString) -> Self {
        let mut next = self.clone();
        next.raw.insert("username".into(), Value::String(username.as_str().to_owned()));
        next.raw.insert("password".into(), Value::String(password.expose_secret().to_owned()));
        next.credentials = Credentials { username: username.clone(), password };
        next
    }

    /// The secret's JSON, as it is stored.
    pub fn to_secret_string(&self) -> SecretString {
        SecretString::from(Value::Object(self.raw.clone()).to_string())
    }
}

/// The admin secret a user secret names (its `masterarn` key): the database admin's
/// login, and where the database is when the secret says.
#[derive(Debug, Clone)]
pub struct AdminSecret {
    pub engine: Option<Engine>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The database the admin logs in to (never the user secret's, which its writer
    /// chooses and may own).
    pub dbname: Option<String>,
    pub tls: TlsMode,
    pub credentials: Credentials,
}

fn string<'a>(raw: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, FormatError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("key {key:?} must be a string")),
    }
}

fn credentials(raw: &Map<String, Value>) -> Result<Credentials, FormatError> {
    let username = string(raw, "username")?.ok_or("missing key \"username\"")?;
    let username = Username::parse(username)?;
    let password = string(raw, "password")?.ok_or("missing key \"password\"")?;
    if password.is_empty() {
        return Err("password is empty".into());
    }
    Ok(Credentials { username, password: SecretString::from(password.to_owned()) })
}

fn port(raw: &Map<String, Value>) -> Result<Option<u16>, FormatError> {
    let bad = || "key \"port\" must be a port number (1-65535)".to_string();
    let n = match raw.get("port") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(bad()),
    }
}

fn tls(raw: &Map<String, Value>) -> Result<TlsMode, FormatError> {
    let on = match raw.get("ssl") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err("key \"ssl\" must be true or false".into()),
    };
    Ok(if on { TlsMode::VerifyFull } else { TlsMode::Disabled })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<DatabaseSecret, FormatError> {
        DatabaseSecret::parse(&SecretString::from(json.to_owned()))
    }

    #[test]
    fn defaults_follow_aws_templates() {
        let s = parse(r#"{"engine":"postgres","host":"db","username":"app","password":"pw"}"#).unwrap();
        assert_eq!(s.endpoint.port, 5432);
        assert_eq!(s.endpoint.dbname.as_deref(), Some("postgres"));
        assert_eq!(s.endpoint.tls, TlsMode::VerifyFull);
        assert_eq!(s.admin_arn, None);
    }

    #[test]
    fn port_and_ssl_accept_strings() {
        let s = parse(
            r#"{"engine":"aurora-postgresql","host":"db","port":"6543","username":"a","password":"p","ssl":"FALSE"}"#,
        )
        .unwrap();
        assert_eq!((s.endpoint.port, s.endpoint.tls), (6543, TlsMode::Disabled));
    }

    #[test]
    fn unknown_keys_survive_and_only_credentials_change() {
        let s =
            parse(r#"{"engine":"postgres","host":"db","port":5432,"username":"app","password":"old","proxy":{"x":1}}"#)
                .unwrap();
        let next = s.with_credentials(&Username::parse("app_clone").unwrap(), SecretString::from("new"));
        let v: Value = serde_json::from_str(next.to_secret_string().expose_secret()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"engine":"postgres","host":"db","port":5432,"username":"app_clone","password":"new","proxy":{"x":1}})
        );
    }

    #[test]
    fn bad_secrets_name_the_problem_without_the_value() {
        let cases = [
            (r#"{"engine":"postgres","host":"db","username":"a","password":"#, "malformed JSON"),
            (r#"["postgres"]"#, "not a JSON object"),
            (r#"{"host":"db","username":"a","password":"p"}"#, "missing key \"engine\""),
            (r#"{"engine":"oracle","host":"db","username":"a","password":"p"}"#, "unknown engine \"oracle\""),
            (r#"{"engine":"postgres","username":"a","password":"p"}"#, "missing key \"host\""),
            (r#"{"engine":"postgres","host":"db","password":"p"}"#, "missing key \"username\""),
            (r#"{"engine":"postgres","host":"db","username":"a"}"#, "missing key \"password\""),
            (r#"{"engine":"postgres","host":"db","username":"a","password":"p","port":70000}"#, "port"),
            (r#"{"engine":"postgres","host":"db","username":"a","password":"p","ssl":"maybe"}"#, "ssl"),
            (r#"{"engine":"postgres","host":"db","username":"","password":"p"}"#, "username is empty"),
        ];
        for (json, expected) in cases {
            let err = parse(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let err = parse(r#"{"engine":"postgres","host":"db","username":"a","password":"hunter2","#).unwrap_err();
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn debug_shows_no_secret_value() {
        let s =
            parse(r#"{"engine":"postgres","host":"db","username":"app","password":"hunter2-pw","token":"t0ps3cret"}"#)
                .unwrap();
        let shown =
            format!("{s:?} {:?}", s.with_credentials(&Username::parse("b").unwrap(), SecretString::from("n3w-pw")));
        for value in ["hunter2-pw", "t0ps3cret", "n3w-pw"] {
            assert!(!shown.contains(value), "{shown}");
        }
        assert!(shown.contains("\"token\""), "key names are shown: {shown}");
    }

    #[test]
    fn admin_secret_may_hold_only_credentials() {
        let m = DatabaseSecret::parse_admin(&SecretString::from(r#"{"username":"admin","password":"pw"}"#)).unwrap();
        assert_eq!((m.engine, m.host, m.port), (None, None, None));
        assert_eq!(m.credentials.username.as_str(), "admin");
    }
}
