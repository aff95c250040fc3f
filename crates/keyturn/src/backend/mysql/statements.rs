//! Every statement the MySQL-family backend sends that differs by server, built by pure
//! functions of the server it goes to ([`Server`]: MariaDB, MySQL 8.0, MySQL 8.4, and older
//! releases of either), so that each flavour's text is checked in unit tests against that
//! flavour's documented grammar. Names and values are quoted here ([`literal`],
//! [`identifier`]); nothing else is written into a statement but numbers.
//!
//! Where the flavours differ:
//!
//! | | MariaDB | MySQL 8.0 / 8.4 |
//! | --- | --- | --- |
//! | statement limit | `max_statement_time` (seconds) | `max_execution_time` (milliseconds, SELECT only) |
//! | a password | the `mysql_native_password` hash, `IDENTIFIED BY PASSWORD '*…'` (MariaDB logs `IDENTIFIED BY` in cleartext) | `IDENTIFIED [WITH plugin] BY '…'` (MySQL rewrites it out of its logs; `BY PASSWORD` was removed in 8.0) |
//! | one's own password | `SET PASSWORD = '*…'` (its `ALTER USER` needs CREATE USER even on oneself) | `ALTER USER CURRENT_USER() IDENTIFIED BY` (5.7.6 on) |
//! | a default role | `SET DEFAULT ROLE r FOR user` | `SET DEFAULT ROLE r TO user` |
//! | resource limits | `MAX_STATEMENT_TIME` too | the four `MAX_…` counts |
//! | ending sessions | `KILL CONNECTION id`; `KILL CONNECTION USER` in events | `KILL CONNECTION id` (no `KILL … USER`) |
//!
//! Both: `CALL mysql.rds_kill(id)` where the admin may not `KILL` other users' sessions
//! (RDS and Aurora give their master users neither SUPER nor CONNECTION ADMIN).

use secrecy::{ExposeSecret, SecretString};

use super::grants::identifier;
use super::{literal, native_password_hash};
use crate::backend::BackendError;

/// What the server is, read once per session from `SELECT VERSION()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Server {
    pub mariadb: bool,
    pub version: (u16, u16, u16),
}

impl Server {
    /// From `SELECT VERSION()`, e.g. `10.11.6-MariaDB-0+deb12u1` or `8.0.35`.
    pub fn parse(version: &str) -> Server {
        let mut numbers = version.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u16>().ok());
        let mut next = || numbers.next().unwrap_or(0);
        let parsed = (next(), next(), next());
        Server { mariadb: version.contains("MariaDB"), version: parsed }
    }

    /// `ALTER USER` exists from MariaDB 10.2 and MySQL 5.7.6.
    pub fn has_alter_user(self) -> bool {
        match self.mariadb {
            true => self.version >= (10, 2, 0),
            false => self.version >= (5, 7, 6),
        }
    }

    /// Roles exist from MariaDB 10.0.5 and MySQL 8.0.
    pub fn has_roles(self) -> bool {
        match self.mariadb {
            true => self.version >= (10, 0, 5),
            false => self.version >= (8, 0, 0),
        }
    }

    /// `3.2.1`, for errors.
    pub fn version_text(self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }

    /// How to set `password` on an account authenticating with `plugin` (empty: the
    /// server's default), without the password appearing in the server's logs.
    pub fn auth_clause(self, plugin: &str, password: &SecretString) -> Result<String, BackendError> {
        if !self.mariadb {
            // MySQL rewrites IDENTIFIED BY in its general, slow and binary logs. A named
            // plugin is kept: CREATE USER would otherwise take the server's default
            // (caching_sha2_password on 8.0 and 8.4), not the original's.
            let by = literal(password.expose_secret());
            return match plugin {
                "" => Ok(format!("IDENTIFIED BY {by}")),
                "mysql_native_password" | "caching_sha2_password" | "sha256_password" => {
                    Ok(format!("IDENTIFIED WITH {} BY {by}", literal(plugin)))
                }
                other => {
                    Err(unsupported_plugin(other, "mysql_native_password, caching_sha2_password or sha256_password"))
                }
            };
        }
        match plugin {
            "" | "mysql_native_password" => {
                Ok(format!("IDENTIFIED BY PASSWORD {}", literal(&native_password_hash(password))))
            }
            other => Err(unsupported_plugin(other, "mysql_native_password")),
        }
    }
}

fn unsupported_plugin(plugin: &str, supported: &str) -> BackendError {
    BackendError::Database {
        operation: "choosing how to set the password",
        message: format!(
            "the account authenticates with {plugin}; keyturn sets passwords of {supported} accounts here"
        ),
        retryable: false,
    }
}

/// The session's sql_mode: none of the modes that change quoting (ANSI_QUOTES,
/// NO_BACKSLASH_ESCAPES, or ANSI/ORACLE/MSSQL/DB2/POSTGRESQL/MAXDB, which include one).
/// Both modes exist on every flavour (MySQL 8 removed NO_AUTO_CREATE_USER, not these).
const SQL_MODE: &str = "STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION";

/// The one `SET` every session starts with: the statement limit in the server's own
/// variable (MariaDB's `max_statement_time` in seconds, MySQL's `max_execution_time` in
/// milliseconds), `lock_wait_timeout` for DDL waiting on a metadata lock, a fixed sql_mode
/// for quoting, and UTC (expiry events are scheduled in the session's zone).
pub(super) fn session_setup(server: Server, statement_secs: u64) -> String {
    let timeout = match server.mariadb {
        true => format!("SESSION max_statement_time = {statement_secs}"),
        false => format!("SESSION max_execution_time = {}", statement_secs * 1000),
    };
    format!(
        "SET {timeout}, SESSION lock_wait_timeout = {statement_secs}, SESSION sql_mode = '{SQL_MODE}', \
         SESSION time_zone = '+00:00'"
    )
}

/// `'user'@'host'`.
pub(super) fn account(user: &str, host: &str) -> String {
    format!("{}@{}", literal(user), literal(host))
}

/// The statement a user changes its own password with, as its server allows (see the
/// module's table); `plugin` is the account's, from `SHOW CREATE USER` (MariaDB).
pub(super) fn own_password(server: Server, plugin: &str, password: &SecretString) -> Result<String, BackendError> {
    if server.mariadb {
        // Refuses a plugin whose stored form is not the native hash.
        server.auth_clause(plugin, password)?;
        Ok(format!("SET PASSWORD = {}", literal(&native_password_hash(password))))
    } else if server.has_alter_user() {
        // No WITH: ALTER USER keeps the account's own plugin.
        Ok(format!("ALTER USER CURRENT_USER() {}", server.auth_clause("", password)?))
    } else {
        // MySQL before 5.7.6 takes the hash as a literal.
        Ok(format!("SET PASSWORD = {}", literal(&native_password_hash(password))))
    }
}

/// `CREATE USER`, with the clause from [`Server::auth_clause`].
pub(super) fn create_user(target: &str, auth: &str) -> String {
    format!("CREATE USER {target} {auth}")
}

/// `CREATE USER` of a dynamic user: at most `connection_limit` sessions at once (at least
/// 1: 0 would mean no limit).
pub(super) fn create_dynamic_user(target: &str, auth: &str, connection_limit: u32) -> String {
    format!("CREATE USER {target} {auth} WITH MAX_USER_CONNECTIONS {}", connection_limit.max(1))
}

/// `ALTER USER … IDENTIFIED …`.
pub(super) fn alter_user_auth(target: &str, auth: &str) -> String {
    format!("ALTER USER {target} {auth}")
}

/// `DROP USER IF EXISTS` (MariaDB 10.1.3, MySQL 5.7.8).
pub(super) fn drop_user(target: &str) -> String {
    format!("DROP USER IF EXISTS {target}")
}

/// `GRANT role TO user`; a role is named as an identifier on both flavours (MySQL reads a
/// role name without a host part as `role@'%'`).
pub(super) fn grant_role(role: &str, target: &str) -> String {
    format!("GRANT {} TO {target}", identifier(role))
}

/// The role a user's sessions start with: MariaDB's `SET DEFAULT ROLE r FOR user`,
/// MySQL's `SET DEFAULT ROLE r TO user` (MySQL has no `FOR` form).
pub(super) fn set_default_role(server: Server, role: &str, target: &str) -> String {
    let keyword = if server.mariadb { "FOR" } else { "TO" };
    format!("SET DEFAULT ROLE {} {keyword} {target}", identifier(role))
}

/// Every privilege and the grant option taken away (the clone's re-synchronisation).
pub(super) fn revoke_all(target: &str) -> String {
    format!("REVOKE ALL PRIVILEGES, GRANT OPTION FROM {target}")
}

/// Resource limits back to none; MariaDB also has a per-user statement time.
pub(super) fn reset_resource_limits(server: Server, target: &str) -> String {
    let statement_time = if server.mariadb { " MAX_STATEMENT_TIME 0" } else { "" };
    format!(
        "ALTER USER {target} WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 \
         MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0{statement_time}"
    )
}

/// `ALTER USER … REQUIRE …`, `require` from keyturn's own rendering.
pub(super) fn require(target: &str, require: &str) -> String {
    format!("ALTER USER {target} REQUIRE {require}")
}

/// The sessions a deleted user may still have, in one listing of the process list (so
/// each session is read once, in one state): `id` (as text), `listed` (the PROCESSLIST's
/// `USER`), `login` (`performance_schema.threads.PROCESSLIST_USER`, NULL where that is
/// not known) and `hidden` (`1` for a session that may be running as a definer, below).
/// The username is bound twice; the server compares it without case, the caller exactly.
///
/// While a session runs a `SQL SECURITY DEFINER` routine (or a trigger, which runs as its
/// definer), the PROCESSLIST shows the definer as `USER` (a role's name for `DEFINER =
/// CURRENT_ROLE`) and the definer's host part, not the client's, in `HOST` (`%:51234`,
/// `:51234` for a role). `performance_schema.threads` keeps the login name whatever the
/// context. So a row is listed when either names the user, and also when its login is not
/// known and it may be running as a definer (`hidden`): a client's session executing a
/// statement (not `Sleep`; not `Daemon` nor `Connect`, which an event's thread and a
/// session still logging in show, never a logged-in client) under a host part that no
/// client address has (empty, or holding `%`, `_` or `/`) or that is an account's own host
/// part (`localhost`, a literal address). Those last rows cannot be told apart from the
/// definer's own sessions, so the caller must not end them, only refuse to report success
/// while they are there.
///
/// `with_threads` is false where the admin cannot read `performance_schema.threads` (a
/// server error would fail the whole listing); the login is then unknown for every row.
pub(super) fn sessions_left(with_threads: bool) -> String {
    let (login, threads) = match with_threads {
        true => ("t.PROCESSLIST_USER", " LEFT JOIN performance_schema.threads t ON t.PROCESSLIST_ID = p.ID"),
        false => ("CAST(NULL AS CHAR)", ""),
    };
    format!(
        "SELECT CAST(v.id AS CHAR) AS id, v.listed AS listed, v.login AS login, CAST(v.hidden AS CHAR) AS hidden \
         FROM (SELECT s.id AS id, s.listed AS listed, s.login AS login, (s.login IS NULL AND \
         s.command NOT IN ('Sleep', 'Daemon', 'Connect') AND (s.h = '' OR LOCATE('%', s.h) > 0 OR LOCATE('_', s.h) > 0 \
         OR LOCATE('/', s.h) > 0 OR EXISTS (SELECT 1 FROM mysql.user a WHERE a.User = s.listed \
         AND a.Host IN (s.h, s.host)))) AS hidden FROM (SELECT p.ID AS id, p.USER AS listed, p.HOST AS host, \
         p.COMMAND AS command, {login} AS login, IF(p.HOST REGEXP ':[0-9]+$', \
         LEFT(p.HOST, CHAR_LENGTH(p.HOST) - LOCATE(':', REVERSE(p.HOST))), p.HOST) AS h \
         FROM information_schema.PROCESSLIST p{threads} WHERE p.ID <> CONNECTION_ID()) s) v \
         WHERE v.listed = ? OR v.login = ? OR v.hidden ORDER BY v.id"
    )
}

/// Whether this session may read `performance_schema.threads` (a table is listed in
/// `information_schema.TABLES` to whoever holds a privilege on it). Listed even where
/// `performance_schema` is OFF: the table is empty there.
pub(super) const THREADS_READABLE: &str = "SELECT TABLE_NAME AS name FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = 'performance_schema' AND TABLE_NAME = 'threads'";

/// `n` (1 when this session's account or an enabled role holds PROCESS, without which
/// the PROCESSLIST shows only one's own sessions). Read from `mysql.user`, which holds
/// roles too (MariaDB: host `''`, named by `ENABLED_ROLES.ROLE_NAME`, which lists nested
/// roles as well; MySQL: `ROLE_NAME`@`ROLE_HOST`).
pub(super) fn sees_every_session(server: Server) -> &'static str {
    match server.mariadb {
        true => {
            "SELECT COUNT(*) AS n FROM mysql.user WHERE Process_priv = 'Y' AND \
             (CONCAT(User, '@', Host) = CURRENT_USER() \
             OR (Host = '' AND User IN (SELECT ROLE_NAME FROM information_schema.ENABLED_ROLES)))"
        }
        false => {
            "SELECT COUNT(*) AS n FROM mysql.user WHERE Process_priv = 'Y' AND \
             (CONCAT(User, '@', Host) = CURRENT_USER() \
             OR (User, Host) IN (SELECT ROLE_NAME, ROLE_HOST FROM information_schema.ENABLED_ROLES))"
        }
    }
}

/// `KILL CONNECTION id`: the same on every flavour; without CONNECTION ADMIN (or SUPER)
/// the server refuses it for another user's session.
pub(super) fn kill_connection(id: u64) -> String {
    format!("KILL CONNECTION {id}")
}

/// RDS's and Aurora's way to end another user's session, on MariaDB and MySQL alike.
pub(super) fn rds_kill(id: u64) -> String {
    format!("CALL mysql.rds_kill({id})")
}

/// Whether `mysql.rds_kill` exists where this session can see it (a routine is listed to
/// whoever may execute it).
pub(super) const RDS_KILL_EXISTS: &str = "SELECT ROUTINE_NAME AS name FROM information_schema.ROUTINES \
     WHERE ROUTINE_SCHEMA = 'mysql' AND ROUTINE_NAME = 'rds_kill' AND ROUTINE_TYPE = 'PROCEDURE'";

/// What an attempt to end one session came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KillOutcome {
    /// The server took it (the session may take a moment to go).
    Ended,
    /// No such session: it ended meanwhile.
    Gone,
    /// `KILL` refused for want of CONNECTION ADMIN or SUPER: `mysql.rds_kill` may do it.
    Denied,
    /// Refused otherwise; the reason, for the error.
    Failed(String),
}

/// ER_NO_SUCH_THREAD: "Unknown thread id".
const ER_NO_SUCH_THREAD: u16 = 1094;
/// ER_KILL_DENIED_ERROR: "You are not owner of thread" (also `KILL … USER`).
const ER_KILL_DENIED_ERROR: u16 = 1095;
/// ER_SPECIFIC_ACCESS_DENIED_ERROR: "you need (at least one of) the … privilege(s)" (MySQL,
/// for a session of an account holding SYSTEM_USER or CONNECTION_ADMIN).
const ER_SPECIFIC_ACCESS_DENIED_ERROR: u16 = 1227;
/// ER_SP_DOES_NOT_EXIST: "PROCEDURE mysql.rds_kill does not exist".
const ER_SP_DOES_NOT_EXIST: u16 = 1305;
/// ER_PROCACCESS_DENIED_ERROR: "execute command denied … for routine".
const ER_PROCACCESS_DENIED_ERROR: u16 = 1370;

/// The server's answer to [`kill_connection`]: `None` for success, else the error code and
/// what may be said of it.
pub(super) fn read_kill(answer: Option<(u16, &str)>) -> KillOutcome {
    match answer {
        None => KillOutcome::Ended,
        Some((ER_NO_SUCH_THREAD, _)) => KillOutcome::Gone,
        Some((ER_KILL_DENIED_ERROR | ER_SPECIFIC_ACCESS_DENIED_ERROR, _)) => KillOutcome::Denied,
        Some((_, reason)) => KillOutcome::Failed(format!("KILL failed: {reason}")),
    }
}

/// The server's answer to [`rds_kill`], called after `KILL` was denied.
pub(super) fn read_rds_kill(answer: Option<(u16, &str)>) -> KillOutcome {
    const DENIED: &str = "KILL of another user's session is refused (no CONNECTION ADMIN or SUPER)";
    match answer {
        None => KillOutcome::Ended,
        Some((ER_NO_SUCH_THREAD, _)) => KillOutcome::Gone,
        Some((ER_SP_DOES_NOT_EXIST, _)) => KillOutcome::Failed(format!("{DENIED} and there is no mysql.rds_kill")),
        Some((ER_PROCACCESS_DENIED_ERROR, _)) => {
            KillOutcome::Failed(format!("{DENIED} and the admin may not EXECUTE mysql.rds_kill"))
        }
        Some((_, reason)) => KillOutcome::Failed(format!("{DENIED} and mysql.rds_kill failed: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    //! Each flavour's statements as its manual writes them: the MariaDB Knowledge Base,
    //! and the MySQL 8.0 and 8.4 Reference Manuals (chapter 15.7.1, Account Management
    //! Statements; 15.7.8.4, KILL; 7.1.8, Server System Variables).
    use super::*;

    const MARIADB: &str = "10.11.6-MariaDB-0+deb12u1";
    const MYSQL_80: &str = "8.0.36";
    const MYSQL_84: &str = "8.4.3";

    fn server(version: &str) -> Server {
        Server::parse(version)
    }

    fn pw() -> SecretString {
        SecretString::from("p'w\\d")
    }

    #[test]
    fn sessions_are_listed_by_login_where_performance_schema_is_readable_and_suspected_elsewhere() {
        let with = sessions_left(true);
        assert!(with.contains("LEFT JOIN performance_schema.threads t ON t.PROCESSLIST_ID = p.ID"), "{with}");
        assert!(with.contains("t.PROCESSLIST_USER AS login"), "{with}");
        let without = sessions_left(false);
        assert!(!without.contains("performance_schema"), "a refused table would fail the listing: {without}");
        for sql in [&with, &without] {
            assert_eq!(sql.matches('?').count(), 2, "the username, bound twice: {sql}");
            assert!(sql.contains("WHERE v.listed = ? OR v.login = ? OR v.hidden"), "{sql}");
            assert!(sql.contains("p.ID <> CONNECTION_ID()"), "never the admin's own session: {sql}");
        }
    }

    #[test]
    fn versions_name_the_flavour() {
        assert_eq!(server(MARIADB), Server { mariadb: true, version: (10, 11, 6) });
        assert_eq!(server(MYSQL_80), Server { mariadb: false, version: (8, 0, 36) });
        assert_eq!(server(MYSQL_84), Server { mariadb: false, version: (8, 4, 3) });
        // Aurora MySQL 3 reports its MySQL version; RDS adds no MariaDB marker to MySQL.
        assert!(!server("8.0.mysql_aurora.3.05.2").mariadb);
        for v in [MARIADB, MYSQL_80, MYSQL_84] {
            assert!(server(v).has_alter_user() && server(v).has_roles(), "{v}");
        }
        assert!(!server("5.7.44").has_roles());
        assert!(!server("10.0.4-MariaDB").has_roles());
        assert!(!server("5.6.51-log").has_alter_user());
        assert!(!server("10.1.48-MariaDB").has_alter_user());
    }

    #[test]
    fn the_statement_limit_is_each_flavours_own_variable() {
        // MariaDB: max_statement_time, seconds. MySQL: max_execution_time, milliseconds.
        assert_eq!(
            session_setup(server(MARIADB), 5),
            "SET SESSION max_statement_time = 5, SESSION lock_wait_timeout = 5, \
             SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION', SESSION time_zone = '+00:00'"
        );
        for v in [MYSQL_80, MYSQL_84] {
            assert_eq!(
                session_setup(server(v), 5),
                "SET SESSION max_execution_time = 5000, SESSION lock_wait_timeout = 5, \
                 SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION', SESSION time_zone = '+00:00'"
            );
        }
    }

    #[test]
    fn mariadb_gets_the_hash_and_mysql_the_password_it_masks() {
        let hash = native_password_hash(&pw());
        let maria = server(MARIADB);
        assert_eq!(maria.auth_clause("", &pw()).unwrap(), format!("IDENTIFIED BY PASSWORD '{hash}'"));
        assert_eq!(
            maria.auth_clause("mysql_native_password", &pw()).unwrap(),
            format!("IDENTIFIED BY PASSWORD '{hash}'")
        );
        assert!(maria.auth_clause("ed25519", &pw()).unwrap_err().to_string().contains("ed25519"));
        for v in [MYSQL_80, MYSQL_84] {
            let mysql = server(v);
            // MySQL 8 removed IDENTIFIED BY PASSWORD: the password goes, as a string.
            let clause = mysql.auth_clause("", &pw()).unwrap();
            assert_eq!(clause, r"IDENTIFIED BY 'p\'w\\d'");
            assert!(!clause.contains("PASSWORD"));
            assert_eq!(
                mysql.auth_clause("caching_sha2_password", &pw()).unwrap(),
                r"IDENTIFIED WITH 'caching_sha2_password' BY 'p\'w\\d'"
            );
            assert_eq!(
                mysql.auth_clause("mysql_native_password", &pw()).unwrap(),
                r"IDENTIFIED WITH 'mysql_native_password' BY 'p\'w\\d'"
            );
            let iam = mysql.auth_clause("AWSAuthenticationPlugin", &pw()).unwrap_err().to_string();
            assert!(iam.contains("AWSAuthenticationPlugin"), "{iam}");
        }
    }

    #[test]
    fn a_user_changes_its_own_password_as_its_server_allows() {
        let hash = native_password_hash(&pw());
        assert_eq!(own_password(server(MARIADB), "", &pw()).unwrap(), format!("SET PASSWORD = '{hash}'"));
        assert!(own_password(server(MARIADB), "ed25519", &pw()).is_err());
        for v in [MYSQL_80, MYSQL_84] {
            // 8.x: SET PASSWORD = 'x' would take x as the cleartext password; ALTER USER
            // keeps the account's plugin.
            assert_eq!(
                own_password(server(v), "", &pw()).unwrap(),
                r"ALTER USER CURRENT_USER() IDENTIFIED BY 'p\'w\\d'"
            );
        }
        assert_eq!(own_password(server("5.6.51"), "", &pw()).unwrap(), format!("SET PASSWORD = '{hash}'"));
    }

    #[test]
    fn the_default_role_is_set_with_for_on_mariadb_and_to_on_mysql() {
        let target = account("kt_u", "%");
        assert_eq!(set_default_role(server(MARIADB), "r`1", &target), "SET DEFAULT ROLE `r``1` FOR 'kt_u'@'%'");
        for v in [MYSQL_80, MYSQL_84] {
            assert_eq!(set_default_role(server(v), "r`1", &target), "SET DEFAULT ROLE `r``1` TO 'kt_u'@'%'");
        }
    }

    #[test]
    fn account_statements_read_the_same_on_every_flavour() {
        let target = account("it's", "10.%");
        assert_eq!(target, r"'it\'s'@'10.%'");
        assert_eq!(create_user(&target, "IDENTIFIED BY 'x'"), r"CREATE USER 'it\'s'@'10.%' IDENTIFIED BY 'x'");
        assert_eq!(
            create_dynamic_user(&target, "IDENTIFIED BY 'x'", 0),
            r"CREATE USER 'it\'s'@'10.%' IDENTIFIED BY 'x' WITH MAX_USER_CONNECTIONS 1"
        );
        assert_eq!(alter_user_auth(&target, "IDENTIFIED BY 'x'"), r"ALTER USER 'it\'s'@'10.%' IDENTIFIED BY 'x'");
        assert_eq!(drop_user(&target), r"DROP USER IF EXISTS 'it\'s'@'10.%'");
        assert_eq!(grant_role("grp", &target), r"GRANT `grp` TO 'it\'s'@'10.%'");
        assert_eq!(revoke_all(&target), r"REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'it\'s'@'10.%'");
        assert_eq!(require(&target, "SSL"), r"ALTER USER 'it\'s'@'10.%' REQUIRE SSL");
    }

    #[test]
    fn only_mariadb_has_a_per_user_statement_time() {
        let target = account("c", "%");
        assert!(
            reset_resource_limits(server(MARIADB), &target).ends_with("MAX_USER_CONNECTIONS 0 MAX_STATEMENT_TIME 0")
        );
        for v in [MYSQL_80, MYSQL_84] {
            assert_eq!(
                reset_resource_limits(server(v), &target),
                "ALTER USER 'c'@'%' WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 \
                 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0"
            );
        }
    }

    #[test]
    fn sessions_are_ended_by_id_and_through_rds_kill_where_kill_is_denied() {
        // KILL [CONNECTION | QUERY] processlist_id: MySQL has no KILL ... USER, so a
        // user's sessions are ended one id at a time on every flavour.
        assert_eq!(kill_connection(42), "KILL CONNECTION 42");
        assert_eq!(rds_kill(42), "CALL mysql.rds_kill(42)");
        assert_eq!(read_kill(None), KillOutcome::Ended);
        assert_eq!(read_kill(Some((1094, "Unknown thread id: 42"))), KillOutcome::Gone);
        assert_eq!(read_kill(Some((1095, "You are not owner of thread 42"))), KillOutcome::Denied);
        assert_eq!(read_kill(Some((1227, "need CONNECTION_ADMIN"))), KillOutcome::Denied);
        assert!(matches!(read_kill(Some((2013, "lost"))), KillOutcome::Failed(_)));
        assert_eq!(read_rds_kill(None), KillOutcome::Ended);
        assert_eq!(read_rds_kill(Some((1094, ""))), KillOutcome::Gone);
        for (code, says) in [(1305, "there is no mysql.rds_kill"), (1370, "may not EXECUTE"), (1644, "failed")] {
            match read_rds_kill(Some((code, "server error"))) {
                KillOutcome::Failed(reason) => assert!(reason.contains(says), "{code}: {reason}"),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_process_check_reads_roles_as_each_flavour_lists_them() {
        assert!(sees_every_session(server(MARIADB)).contains("Host = '' AND User IN (SELECT ROLE_NAME FROM"));
        for v in [MYSQL_80, MYSQL_84] {
            assert!(sees_every_session(server(v)).contains("(User, Host) IN (SELECT ROLE_NAME, ROLE_HOST FROM"));
        }
    }
}
