//! MySQL, Aurora MySQL and MariaDB behind [`DatabaseBackend`].
//!
//! - MariaDB writes `SET PASSWORD` and `IDENTIFIED BY` statements to its general log in
//!   cleartext, so keyturn sends it the account's `mysql_native_password` hash
//!   (`IDENTIFIED BY PASSWORD '*…'`), computed here. MySQL rewrites passwords out of its
//!   logs itself, so there `IDENTIFIED BY '…'` keeps the account's own plugin.
//! - A user changes its own password with the statement its server allows: `SET PASSWORD =
//!   '<hash>'` on MariaDB (whose `ALTER USER` needs CREATE USER even on oneself) and on
//!   MySQL before 5.7.6, `ALTER USER CURRENT_USER()` on later MySQL. An admin uses
//!   `CREATE USER` / `ALTER USER`.
//! - TLS is verified (public roots, the RDS bundle, extra CA files) unless the secret says
//!   `"ssl": false`; a server without TLS is refused, never used in plaintext.
//! - Alternating users: the clone is created on the original's own host part, with the
//!   original's TLS requirement and every grant `SHOW GRANTS` lists (database, table and
//!   column grants, roles, default role), re-synchronised at every rotation.

use std::path::PathBuf;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use tracing::{debug, instrument};

use super::tls::{TlsSetupError, RDS_CA_BUNDLE};
use super::{
    BackendError, Credentials, DatabaseBackend, DeleteUser, Endpoint, Engine, Family, SetOwnPassword, Timeouts,
    TlsMode, UpsertOutcome, UpsertUser, Username,
};

/// MySQL's username limit, in characters.
pub const MYSQL_MAX_USERNAME: usize = 32;
/// MariaDB's username limit, in characters (the real column width is checked on the server).
pub const MARIADB_MAX_USERNAME: usize = 80;

/// `mysql_native_password`'s stored form: `*` and the upper-case hex of SHA1(SHA1(password)).
pub fn native_password_hash(password: &SecretString) -> String {
    let inner = Sha1::digest(password.expose_secret().as_bytes());
    let outer = Sha1::digest(inner);
    let hex: String = outer.iter().map(|b| format!("{b:02X}")).collect();
    format!("*{hex}")
}

/// A string literal for MySQL and MariaDB. Sessions run without NO_BACKSLASH_ESCAPES
/// (see `MysqlBackend::connect`), so backslash escaping is what the server reads.
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `'user'@'host'`.
fn account(user: &str, host: &str) -> String {
    format!("{}@{}", literal(user), literal(host))
}

/// What the server is, read once per session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Server {
    mariadb: bool,
    version: (u16, u16, u16),
}

impl Server {
    /// From `SELECT VERSION()`, e.g. `10.11.6-MariaDB-0+deb12u1` or `8.0.35`.
    fn parse(version: &str) -> Server {
        let mut numbers = version.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u16>().ok());
        let mut next = || numbers.next().unwrap_or(0);
        let parsed = (next(), next(), next());
        Server { mariadb: version.contains("MariaDB"), version: parsed }
    }

    /// `ALTER USER` exists from MariaDB 10.2 and MySQL 5.7.6.
    fn has_alter_user(self) -> bool {
        match self.mariadb {
            true => self.version >= (10, 2, 0),
            false => self.version >= (5, 7, 6),
        }
    }

    /// How to set `password` on an account authenticating with `plugin` (empty: the
    /// server's default), without the password appearing in the server's logs.
    fn auth_clause(self, plugin: &str, password: &SecretString) -> Result<String, BackendError> {
        if !self.mariadb {
            // MySQL rewrites IDENTIFIED BY in its general, slow and binary logs.
            return Ok(format!("IDENTIFIED BY {}", literal(password.expose_secret())));
        }
        match plugin {
            "" | "mysql_native_password" => {
                Ok(format!("IDENTIFIED BY PASSWORD {}", literal(&native_password_hash(password))))
            }
            other => Err(BackendError::Database {
                operation: "choosing how to set the password",
                message: format!(
                    "the account authenticates with {other}; keyturn sets mysql_native_password accounts on MariaDB"
                ),
                retryable: false,
            }),
        }
    }
}

/// An open session and what it is connected to.
struct Session {
    conn: Conn,
    server: Server,
}

/// The MySQL-family backend: TLS roots and timeouts, built once per container.
#[derive(Clone)]
pub struct MysqlBackend {
    ssl: SslOpts,
    timeouts: Timeouts,
}

impl MysqlBackend {
    /// `extra_ca_files` are PEM files trusted besides the public roots and the RDS bundle.
    pub fn new(extra_ca_files: &[PathBuf], timeouts: Timeouts) -> Result<Self, TlsSetupError> {
        let mut roots = vec![RDS_CA_BUNDLE.to_vec().into()];
        for path in extra_ca_files {
            let pem = std::fs::read(path).map_err(|source| TlsSetupError::Read { path: path.clone(), source })?;
            roots.push(pem.into());
        }
        Ok(Self { ssl: SslOpts::default().with_root_certs(roots), timeouts })
    }

    /// Opens a session as `login`, learns the server's flavour and version, and sets the
    /// statement timeout and a predictable `sql_mode` for escaping.
    #[instrument(skip_all, fields(host = %endpoint.host, port = endpoint.port, user = %login.username))]
    async fn connect(&self, endpoint: &Endpoint, login: &Credentials) -> Result<Session, BackendError> {
        let ssl = match endpoint.tls {
            TlsMode::VerifyFull => Some(self.ssl.clone()),
            TlsMode::Disabled => None,
        };
        let opts = OptsBuilder::default()
            .ip_or_hostname(endpoint.host.clone())
            .tcp_port(endpoint.port)
            .user(Some(login.username.as_str()))
            .pass(Some(login.password.expose_secret()))
            .db_name(endpoint.dbname.clone())
            .prefer_socket(false)
            .ssl_opts(ssl);
        let seconds = self.timeouts.connect.as_secs();
        let mut conn = match tokio::time::timeout(self.timeouts.connect, Conn::new(opts)).await {
            Ok(result) => result.map_err(|e| classify(e, endpoint, login, "login"))?,
            Err(_) => return Err(BackendError::Timeout { operation: "login", seconds }),
        };
        let version: Option<String> =
            conn.query_first("SELECT VERSION()").await.map_err(|e| classify(e, endpoint, login, "SELECT VERSION()"))?;
        let server = Server::parse(version.as_deref().unwrap_or_default());
        let statement_secs = self.timeouts.statement.as_secs();
        let timeout = match server.mariadb {
            true => format!("SET SESSION max_statement_time = {statement_secs}"),
            false => format!("SET SESSION max_execution_time = {}", statement_secs * 1000),
        };
        let setup = format!("{timeout}; SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')");
        conn.query_drop(setup).await.map_err(|e| classify(e, endpoint, login, "session setup"))?;
        Ok(Session { conn, server })
    }
}

/// Maps a driver error to what the caller can act on.
fn classify(e: mysql_async::Error, endpoint: &Endpoint, login: &Credentials, operation: &'static str) -> BackendError {
    use mysql_async::{DriverError, Error, IoError};
    let (host, port) = (endpoint.host.clone(), endpoint.port);
    match e {
        // 1045: access denied (wrong password or no such account).
        Error::Server(s) if s.code == 1045 => BackendError::LoginRefused { username: login.username.to_string() },
        Error::Server(s) => BackendError::Database {
            operation,
            message: format!("{} ({})", s.message, s.code),
            // Lock wait timeout, deadlock, too many connections, server shutting down.
            retryable: matches!(s.code, 1205 | 1213 | 1040 | 1053),
        },
        Error::Io(IoError::Tls(t)) => BackendError::Tls { host, port, message: t.to_string() },
        Error::Driver(d @ DriverError::NoClientSslFlagFromServer) => {
            BackendError::Tls { host, port, message: format!("{d}: the server does not offer TLS") }
        }
        // The TLS stream reports certificate failures as I/O errors wrapping rustls's.
        Error::Io(IoError::Io(io)) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            BackendError::Tls { host, port, message: io.to_string() }
        }
        Error::Io(IoError::Io(io)) => BackendError::Unreachable { host, port, message: io.to_string() },
        other => BackendError::Database { operation, message: other.to_string(), retryable: false },
    }
}

/// Rewrites one `SHOW GRANTS` line of `from` for `to`: the grantee is replaced, and the
/// account's authentication and TLS clauses (set separately) are dropped, keeping `WITH
/// GRANT OPTION`, `WITH ADMIN OPTION` and resource limits. `None` for a line without the
/// grantee (nothing to copy).
pub fn retarget_grant(line: &str, from: (&str, &str), to: (&str, &str)) -> Option<String> {
    let quoted = |(u, h): (&str, &str), q: char| {
        let double = |s: &str| s.replace(q, &format!("{q}{q}"));
        format!("{q}{}{q}@{q}{}{q}", double(u), double(h))
    };
    let (grantee, at) =
        ['`', '\''].into_iter().map(|q| quoted(from, q)).find_map(|g| line.rfind(&g).map(|at| (g, at)))?;
    let head = &line[..at];
    if !(head.ends_with(" TO ") || head.ends_with(" FOR ")) {
        return None;
    }
    let tail = &line[at + grantee.len()..];
    let keep = tail.find(" WITH ").map(|i| &tail[i..]).unwrap_or("");
    Some(format!("{head}{}{keep}", account(to.0, to.1)))
}

impl DatabaseBackend for MysqlBackend {
    fn serves(&self, engine: Engine) -> bool {
        engine.family() == Family::Mysql
    }

    fn check_username(&self, engine: Engine, username: &Username) -> Result<(), String> {
        let name = username.as_str();
        if let Some(c) = name.chars().find(|c| matches!(c, '\'' | '"' | '`' | '\\') || c.is_control()) {
            return Err(format!("contains {c:?}, which keyturn does not accept in {} account names", engine.as_str()));
        }
        let max = match engine {
            Engine::Mariadb => MARIADB_MAX_USERNAME,
            _ => MYSQL_MAX_USERNAME,
        };
        let len = name.chars().count();
        match len > max {
            true => Err(format!("is {len} characters, over the {max}-character limit of {}", engine.as_str())),
            false => Ok(()),
        }
    }

    #[instrument(skip_all, fields(user = %login.username))]
    async fn verify(&self, endpoint: &Endpoint, login: &Credentials) -> Result<(), BackendError> {
        let session = self.connect(endpoint, login).await?;
        session.conn.disconnect().await.ok();
        Ok(())
    }

    #[instrument(skip_all, fields(user = %req.login.username))]
    async fn set_own_password(&self, endpoint: &Endpoint, req: SetOwnPassword<'_>) -> Result<(), BackendError> {
        let Session { mut conn, server } = self.connect(endpoint, req.login).await?;
        let err = |op| move |e| classify(e, endpoint, req.login, op);
        let sql = if server.mariadb {
            // MariaDB's ALTER USER needs CREATE USER even on oneself; SET PASSWORD does not.
            // The account's plugin decides the hash, and SHOW CREATE USER works on oneself.
            let create: Option<(String,)> =
                conn.query_first("SHOW CREATE USER CURRENT_USER()").await.map_err(err("SHOW CREATE USER"))?;
            let plugin = plugin_of(&create.map(|(c,)| c).unwrap_or_default());
            server.auth_clause(&plugin, req.new_password)?;
            format!("SET PASSWORD = {}", literal(&native_password_hash(req.new_password)))
        } else if server.has_alter_user() {
            format!("ALTER USER CURRENT_USER() {}", server.auth_clause("", req.new_password)?)
        } else {
            // MySQL before 5.7.6 takes the hash as a literal.
            format!("SET PASSWORD = {}", literal(&native_password_hash(req.new_password)))
        };
        conn.query_drop(sql).await.map_err(err("changing the password"))?;
        conn.disconnect().await.ok();
        Ok(())
    }

    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username, template = %req.template))]
    async fn upsert_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: UpsertUser<'_>,
    ) -> Result<UpsertOutcome, BackendError> {
        let Session { mut conn, server } = self.connect(endpoint, admin).await?;
        let err = |op| move |e| classify(e, endpoint, admin, op);
        let invalid =
            |message: String| BackendError::Database { operation: "checking the accounts", message, retryable: false };

        // The template's accounts: keyturn rotates a user that has exactly one host part.
        type AccountRow = (String, String, String, String, String, String);
        let rows: Vec<AccountRow> = conn
            .exec(
                "SELECT Host, plugin, ssl_type, CAST(ssl_cipher AS CHAR), CAST(x509_issuer AS CHAR), \
                 CAST(x509_subject AS CHAR) FROM mysql.user WHERE User = ?",
                (req.template.as_str(),),
            )
            .await
            .map_err(err("reading the template account"))?;
        let (host, plugin, ssl_type, cipher, issuer, subject) = match rows.len() {
            0 => return Err(BackendError::NoSuchUser { username: req.template.to_string() }),
            1 => rows.into_iter().next().expect("one row"),
            n => {
                let hosts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                return Err(invalid(format!(
                    "{:?} has {n} accounts ({}); keyturn rotates a user with one host part",
                    req.template.as_str(),
                    hosts.join(", ")
                )));
            }
        };
        if !server.has_alter_user() {
            let (a, b, c) = server.version;
            return Err(invalid(format!(
                "server version {a}.{b}.{c} has no ALTER USER (MariaDB 10.2 or MySQL 5.7.6 needed for alternating users)"
            )));
        }
        let auth = server.auth_clause(&plugin, req.password)?;
        let target = account(req.username.as_str(), &host);
        if req.username == req.template {
            conn.query_drop(format!("ALTER USER {target} {auth}")).await.map_err(err("ALTER USER"))?;
            conn.disconnect().await.ok();
            return Ok(UpsertOutcome { created: false });
        }

        // The server's own limit (MariaDB's column is wider than MySQL's 32).
        let width: Option<u64> = conn
            .query_first(
                "SELECT CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'mysql' \
                 AND TABLE_NAME IN ('global_priv', 'user') AND COLUMN_NAME = 'User' ORDER BY TABLE_NAME LIMIT 1",
            )
            .await
            .map_err(err("reading the username width"))?;
        if let Some(width) = width {
            let len = req.username.as_str().chars().count() as u64;
            if len > width {
                return Err(invalid(format!(
                    "{:?} is {len} characters, over this server's {width}-character limit",
                    req.username.as_str()
                )));
            }
        }
        let exists: Option<String> = conn
            .exec_first("SELECT Host FROM mysql.user WHERE User = ? AND Host = ?", (req.username.as_str(), &host))
            .await
            .map_err(err("looking up the clone"))?;
        let grants: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {}", account(req.template.as_str(), &host)))
            .await
            .map_err(err("SHOW GRANTS"))?;

        let require = match ssl_type.as_str() {
            "ANY" => "SSL".to_owned(),
            "X509" => "X509".to_owned(),
            "SPECIFIED" => {
                let parts: Vec<String> = [("ISSUER", &issuer), ("SUBJECT", &subject), ("CIPHER", &cipher)]
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| format!("{k} {}", literal(v)))
                    .collect();
                parts.join(" AND ")
            }
            _ => "NONE".to_owned(),
        };
        let mut statements = Vec::new();
        match exists {
            None => statements.push(format!("CREATE USER {target} {auth}")),
            Some(_) => {
                statements.push(format!("ALTER USER {target} {auth}"));
                // Re-synchronise: what the original no longer has, the clone loses too.
                statements.push(format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {target}"));
            }
        }
        statements.push(format!("ALTER USER {target} REQUIRE {require}"));
        statements.extend(
            live_grants(&grants)
                .filter_map(|g| retarget_grant(g, (req.template.as_str(), &host), (req.username.as_str(), &host))),
        );
        for statement in &statements {
            conn.query_drop(statement).await.map_err(err("creating or updating the clone"))?;
        }
        conn.disconnect().await.ok();
        debug!(created = exists.is_none(), grants = grants.len(), "account upserted");
        Ok(UpsertOutcome { created: exists.is_none() })
    }

    #[instrument(skip_all, fields(admin = %admin.username, user = %req.username))]
    async fn delete_user(
        &self,
        endpoint: &Endpoint,
        admin: &Credentials,
        req: DeleteUser<'_>,
    ) -> Result<(), BackendError> {
        let Session { mut conn, .. } = self.connect(endpoint, admin).await?;
        let hosts: Vec<String> = conn
            .exec("SELECT Host FROM mysql.user WHERE User = ?", (req.username.as_str(),))
            .await
            .map_err(|e| classify(e, endpoint, admin, "looking up the account"))?;
        for host in hosts {
            conn.query_drop(format!("DROP USER IF EXISTS {}", account(req.username.as_str(), &host)))
                .await
                .map_err(|e| classify(e, endpoint, admin, "DROP USER"))?;
        }
        conn.disconnect().await.ok();
        Ok(())
    }
}

/// `SHOW GRANTS` lines worth copying. MariaDB keeps a default role after the role itself
/// is revoked and still lists `SET DEFAULT ROLE` for it; copying that line would fail, so a
/// default role is kept only while it is granted.
fn live_grants(lines: &[String]) -> impl Iterator<Item = &String> {
    let granted: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("GRANT ") && !l.contains(" ON "))
        .filter_map(|l| l.strip_prefix("GRANT ")?.split(" TO ").next())
        .collect();
    lines.iter().filter(move |l| match l.strip_prefix("SET DEFAULT ROLE ") {
        Some(rest) => {
            let role = rest.split(" FOR ").next().unwrap_or_default();
            role == "NONE" || granted.contains(&role)
        }
        None => true,
    })
}

/// The authentication plugin named in a `SHOW CREATE USER` line ("" when it only shows a
/// password hash, which is mysql_native_password).
fn plugin_of(create_user: &str) -> String {
    for keyword in [" IDENTIFIED VIA ", " IDENTIFIED WITH "] {
        if let Some(at) = create_user.find(keyword) {
            let rest = &create_user[at + keyword.len()..];
            let name = rest.split_whitespace().next().unwrap_or_default();
            return name.trim_matches(|c| c == '\'' || c == '`').to_owned();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_the_server_function() {
        // SELECT PASSWORD('password') on MariaDB and MySQL 5.7.
        let hash = native_password_hash(&SecretString::from("password"));
        assert_eq!(hash, "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
    }

    #[test]
    fn literals_escape_everything_that_ends_or_bends_a_string() {
        assert_eq!(literal(r#"a'b\c"d"#), r#"'a\'b\\c"d'"#);
        assert_eq!(literal("x\0y\nz"), r"'x\0y\nz'");
    }

    #[test]
    fn versions_pick_the_statement() {
        let maria = Server::parse("10.11.6-MariaDB-0+deb12u1");
        assert_eq!((maria.mariadb, maria.version), (true, (10, 11, 6)));
        assert!(maria.has_alter_user());
        assert!(!Server::parse("10.1.48-MariaDB").has_alter_user());
        let mysql = Server::parse("8.0.35");
        assert_eq!((mysql.mariadb, mysql.version), (false, (8, 0, 35)));
        assert!(mysql.has_alter_user());
        assert!(!Server::parse("5.6.51-log").has_alter_user());
    }

    #[test]
    fn grants_are_retargeted_without_credentials() {
        let from = ("app", "%");
        let to = ("app_clone", "%");
        let cases = [
            (
                "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' REQUIRE SSL",
                Some("GRANT USAGE ON *.* TO 'app_clone'@'%'"),
            ),
            (
                "GRANT SELECT, INSERT ON `shop`.* TO `app`@`%` WITH GRANT OPTION",
                Some("GRANT SELECT, INSERT ON `shop`.* TO 'app_clone'@'%' WITH GRANT OPTION"),
            ),
            (
                "GRANT SELECT (`id`), UPDATE (`name`) ON `shop`.`items` TO 'app'@'%'",
                Some("GRANT SELECT (`id`), UPDATE (`name`) ON `shop`.`items` TO 'app_clone'@'%'"),
            ),
            ("GRANT `reader` TO `app`@`%`", Some("GRANT `reader` TO 'app_clone'@'%'")),
            ("SET DEFAULT ROLE `reader` FOR `app`@`%`", Some("SET DEFAULT ROLE `reader` FOR 'app_clone'@'%'")),
            ("GRANT SELECT ON `db`.* TO `other`@`%`", None),
        ];
        for (line, expected) in cases {
            assert_eq!(retarget_grant(line, from, to).as_deref(), expected, "{line}");
        }
    }

    #[test]
    fn a_default_role_is_copied_only_while_granted() {
        let lines: Vec<String> = [
            "GRANT USAGE ON *.* TO `app`@`%`",
            "GRANT `reader` TO `app`@`%`",
            "SET DEFAULT ROLE `reader` FOR `app`@`%`",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(live_grants(&lines).count(), 3);
        let revoked = [lines[0].clone(), lines[2].clone()];
        assert_eq!(live_grants(&revoked).cloned().collect::<Vec<_>>(), vec![lines[0].clone()]);
    }

    #[test]
    fn plugins_are_read_from_show_create_user() {
        assert_eq!(plugin_of("CREATE USER `a`@`%` IDENTIFIED BY PASSWORD '*ABC'"), "");
        assert_eq!(plugin_of("CREATE USER `a`@`%` IDENTIFIED VIA ed25519 USING 'x'"), "ed25519");
        assert_eq!(
            plugin_of("CREATE USER 'a'@'%' IDENTIFIED WITH 'caching_sha2_password' AS 'x'"),
            "caching_sha2_password"
        );
    }

    #[test]
    fn usernames_with_quotes_or_over_the_limit_are_refused() {
        let backend = MysqlBackend::new(&[], Timeouts::default()).unwrap();
        let user = |n: &str| Username::parse(n).unwrap();
        assert!(backend.check_username(Engine::Mysql, &user("app_clone")).is_ok());
        for bad in ["o'brien", "back`tick", "dq\"", "bs\\"] {
            assert!(backend.check_username(Engine::Mariadb, &user(bad)).is_err(), "{bad}");
        }
        let long = "u".repeat(33);
        assert!(backend.check_username(Engine::Mysql, &user(&long)).unwrap_err().contains("32-character"));
        assert!(backend.check_username(Engine::Mariadb, &user(&long)).is_ok());
    }
}
