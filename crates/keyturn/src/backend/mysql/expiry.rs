//! Server-side expiry of MariaDB's dynamic users: MariaDB has no account expiry a user
//! cannot outlive (`PASSWORD EXPIRE` still lets the user in to change its password), so
//! where the event scheduler runs, [`DynamicUsers::new_user`](crate::backend::DynamicUsers)
//! also creates a one-shot event that drops the user at its expiry, even if every Lambda
//! is down.
//!
//! What the event does, as its definer (the admin): `DROP USER IF EXISTS 'user'@'%'`, so no
//! new login succeeds, then ends the user's open sessions, because a session already open
//! outlives `DROP USER` and keeps the privileges of its active role. How it ends them is
//! chosen when the event is made, by what the server offers ([`Kill`]): where
//! `mysql.rds_kill` exists (Amazon RDS, whose master user may not `KILL` another user's
//! session), a loop over the user's sessions in the PROCESSLIST calling it for each (a
//! session that ends meanwhile does not stop the loop); elsewhere `KILL CONNECTION USER
//! 'user'@'%'`, which needs CONNECTION ADMIN (SUPER before 10.5). Both find sessions by
//! the PROCESSLIST's `USER`, which shows a routine's definer while a session runs a `SQL
//! SECURITY DEFINER` routine or a trigger; so the event then also ends every session
//! `performance_schema.threads` lists under the user's login name. It runs once and then
//! removes itself (`ON COMPLETION NOT PRESERVE`). What it does not do: drop host parts
//! other than `%` (the only one `new_user` creates; `delete_user` drops them all), run
//! at all when its definer has since been dropped or lost those privileges, or, where
//! performance_schema is OFF (MariaDB's default), see a session that is inside a definer
//! routine when it runs: that session goes on once the routine returns, until the reaper
//! deletes the user, which ends it or fails (retryably) for as long as it cannot be told.
//!
//! Where the scheduler is OFF (RDS's default) or DISABLED no event is made and the reaper
//! alone enforces expiry. MySQL gets no event: keyturn's tests run MariaDB only, and its
//! events would need a cursor loop of their own (MySQL has no `KILL ... USER` nor MariaDB's
//! `FOR ... IN (SELECT ...)`).

use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::grants::identifier;
use super::statements::RDS_KILL_EXISTS;
use super::{account, literal, required, text, unexpected, Session};
use crate::backend::{BackendError, Username};
use crate::time::utc_datetime;

/// The schema that holds the expiry events, created by the admin when missing. Not the
/// endpoint's database: an application role may hold EVENT there (`ALL PRIVILEGES ON
/// app.*`), which lets its holder alter or drop any event of that schema, so a user could
/// cancel its own expiry; and dropping the application's database would drop the events
/// with it. Only the admin needs rights here: EVENT, and CREATE unless the schema is made
/// beforehand.
pub const EVENT_SCHEMA: &str = "keyturn";

/// The event that drops `username`: `expire_` and 40 hex digits of the name's SHA-256.
/// Not the name itself: event names are at most 64 characters (MariaDB usernames 80), and
/// compared without case (usernames with), so `kt_A_x` and `kt_a_x` would share one.
pub fn event_name(username: &Username) -> String {
    let digest = Sha256::digest(username.as_str().as_bytes());
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("expire_{hex}")
}

/// Whether `@@event_scheduler` says events run: `ON`; `OFF` and `DISABLED` (or nothing)
/// mean an event would never fire.
fn scheduler_runs(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("ON"))
}

/// `schema`.`event`, both quoted.
fn qualified(username: &Username) -> String {
    format!("{}.{}", identifier(EVENT_SCHEMA), identifier(&event_name(username)))
}

/// When the event fires: `at` in UTC (every session sets `time_zone = '+00:00'`, the zone
/// the server reads `AT` in and stores with the event), rounded up to the second (the user
/// keeps its login until its expiry, not less), and never in the past: an event due
/// already is dropped at creation without running, which would leave the user alive.
fn schedule(at: SystemTime) -> String {
    let fraction = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let at = match fraction {
        0 => at,
        nanos => at + Duration::from_nanos(u64::from(1_000_000_000 - nanos)),
    };
    format!("AT GREATEST(TIMESTAMP {}, NOW() + INTERVAL 1 SECOND)", literal(&utc_datetime(at)))
}

/// How an expiry event ends the user's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kill {
    /// `KILL CONNECTION USER`: needs CONNECTION ADMIN or SUPER.
    User,
    /// `CALL mysql.rds_kill(id)` for each session in the PROCESSLIST: RDS's way.
    RdsKill,
}

/// The event's statement. Its body is parsed again when it runs, in the sql_mode stored
/// with it (the session's fixed one), so [`literal`]'s backslash escapes read the same then.
/// In the `RdsKill` body, a CONTINUE handler lets the loop go on past a session that ended
/// between the listing and its `rds_kill` (error 1094); `FOR … IN (SELECT …)` is MariaDB's
/// cursor loop (10.3 on).
///
/// A second loop ends the sessions `performance_schema.threads` lists under the user's
/// login name: those running a `SQL SECURITY DEFINER` routine or a trigger, which the
/// PROCESSLIST (and `KILL … USER`) show under the definer's name ([`super::sessions`]).
/// Where performance_schema is OFF the table is empty, and where the admin may not read
/// it the loop's error is swallowed by its own handler, after the first loop has run.
fn create_statement(username: &Username, at: SystemTime, kill: Kill) -> String {
    let target = account(username.as_str(), "%");
    let name = literal(username.as_str());
    let each = |ids: &str, end: &str| {
        format!("BEGIN DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; FOR s IN ({ids}) DO {end}; END FOR; END;")
    };
    let by_login =
        format!("SELECT PROCESSLIST_ID AS id FROM performance_schema.threads WHERE PROCESSLIST_USER = {name}");
    let end_sessions = match kill {
        Kill::User => {
            format!("KILL CONNECTION USER {target}; {}", each(&by_login, "KILL CONNECTION s.id"))
        }
        Kill::RdsKill => format!(
            "{} {}",
            each(
                &format!("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = {name}"),
                "CALL mysql.rds_kill(s.id)"
            ),
            each(&by_login, "CALL mysql.rds_kill(s.id)")
        ),
    };
    format!(
        "CREATE DEFINER = CURRENT_USER EVENT {} ON SCHEDULE {} ON COMPLETION NOT PRESERVE \
         DO BEGIN DROP USER IF EXISTS {target}; {end_sessions} END",
        qualified(username),
        schedule(at)
    )
}

impl Session {
    /// Whether this server would drop a user at its expiry: MariaDB with its event
    /// scheduler ON. Read at every `new_user`: `SET GLOBAL event_scheduler` may change it
    /// while the admin session stays open.
    pub(super) async fn server_expiry(&mut self) -> Result<bool, BackendError> {
        if !self.server.mariadb {
            return Ok(false);
        }
        let operation = "reading @@event_scheduler";
        let rows = self.rows("SELECT @@event_scheduler AS scheduler", Vec::new(), operation).await?;
        let value = rows.first().map(|r| text(r, "scheduler")).transpose().map_err(|m| unexpected(operation, m))?;
        Ok(scheduler_runs(value.flatten().as_deref()))
    }

    /// Creates the event that drops `username` at `at` (see the module's documentation).
    pub(super) async fn create_expiry_event(
        &mut self,
        username: &Username,
        at: SystemTime,
    ) -> Result<(), BackendError> {
        self.ensure_event_schema().await?;
        let kill = self.event_kill().await?;
        self.run_event_statement(&create_statement(username, at, kill), "creating the expiry event").await
    }

    /// How this server lets an event end sessions: through `mysql.rds_kill` where it
    /// exists and the admin may call it (it is listed to those who may), else `KILL`.
    async fn event_kill(&mut self) -> Result<Kill, BackendError> {
        let rows = self.rows(RDS_KILL_EXISTS, Vec::new(), "looking up mysql.rds_kill").await?;
        Ok(if rows.is_empty() { Kill::User } else { Kill::RdsKill })
    }

    /// Moves `username`'s event to `at`; `false` when it has none (the scheduler was off
    /// when the user was made, or the event already ran).
    pub(super) async fn move_expiry_event(
        &mut self,
        username: &Username,
        at: SystemTime,
    ) -> Result<bool, BackendError> {
        if !self.expiry_event_exists(username).await? {
            return Ok(false);
        }
        let sql = format!("ALTER EVENT {} ON SCHEDULE {}", qualified(username), schedule(at));
        self.run_event_statement(&sql, "moving the expiry event").await?;
        Ok(true)
    }

    /// Drops `username`'s event; `false` when it has none. Looked up first, so an admin
    /// that never made events (scheduler off) needs no EVENT privilege to delete users.
    pub(super) async fn drop_expiry_event(&mut self, username: &Username) -> Result<bool, BackendError> {
        if !self.expiry_event_exists(username).await? {
            return Ok(false);
        }
        let sql = format!("DROP EVENT IF EXISTS {}", qualified(username));
        self.run_event_statement(&sql, "dropping the expiry event").await?;
        Ok(true)
    }

    /// Whether the event exists; the admin sees the events of schemas where it holds EVENT.
    async fn expiry_event_exists(&mut self, username: &Username) -> Result<bool, BackendError> {
        let rows = self
            .rows(
                "SELECT EVENT_NAME AS name FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? AND EVENT_NAME = ?",
                vec![EVENT_SCHEMA.into(), event_name(username).into()],
                "looking up the expiry event",
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Creates [`EVENT_SCHEMA`] when the admin cannot see it, once per session. Looked up
    /// first because `CREATE DATABASE IF NOT EXISTS` needs CREATE even when the schema
    /// exists, and an operator may have made it and granted EVENT alone.
    async fn ensure_event_schema(&mut self) -> Result<(), BackendError> {
        if self.event_schema_seen {
            return Ok(());
        }
        let operation = "looking up the event schema";
        let rows = self
            .rows(
                "SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                vec![EVENT_SCHEMA.into()],
                operation,
            )
            .await?;
        if let Some(row) = rows.first() {
            required(row, "name").map_err(|m| unexpected(operation, m))?;
        } else {
            let sql = format!("CREATE DATABASE IF NOT EXISTS {}", identifier(EVENT_SCHEMA));
            self.run(&sql, "creating the event schema").await?;
        }
        self.event_schema_seen = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn events_run_only_where_the_scheduler_is_on() {
        assert!(scheduler_runs(Some("ON")));
        assert!(scheduler_runs(Some("on")));
        for off in [Some("OFF"), Some("DISABLED"), Some(""), None] {
            assert!(!scheduler_runs(off), "{off:?}");
        }
    }

    #[test]
    fn event_names_fit_and_tell_apart_names_that_differ_in_case_only() {
        let long = user(&"k".repeat(80));
        assert!(event_name(&long).len() <= 64);
        assert_ne!(event_name(&user("kt_A_x")), event_name(&user("kt_a_x")));
        assert_eq!(event_name(&user("kt_a_x")), event_name(&user("kt_a_x")));
        assert!(event_name(&user("it's `me`")).chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn the_event_runs_at_the_first_whole_second_not_before_the_expiry() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_795_989_906);
        assert!(schedule(at).contains("'2026-11-29 22:05:06'"), "{}", schedule(at));
        let later = at + Duration::from_millis(1);
        assert!(schedule(later).contains("'2026-11-29 22:05:07'"), "{}", schedule(later));
    }

    #[test]
    fn the_event_drops_and_disconnects_the_quoted_user_at_a_utc_time() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_795_989_906);
        let sql = create_statement(&user("kt_r_it's\\"), at, Kill::User);
        let name = event_name(&user("kt_r_it's\\"));
        assert_eq!(
            sql,
            format!(
                "CREATE DEFINER = CURRENT_USER EVENT `keyturn`.`{name}` ON SCHEDULE \
                 AT GREATEST(TIMESTAMP '2026-11-29 22:05:06', NOW() + INTERVAL 1 SECOND) ON COMPLETION NOT PRESERVE \
                 DO BEGIN DROP USER IF EXISTS 'kt_r_it\\'s\\\\'@'%'; KILL CONNECTION USER 'kt_r_it\\'s\\\\'@'%'; \
                 BEGIN DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; \
                 FOR s IN (SELECT PROCESSLIST_ID AS id FROM performance_schema.threads \
                 WHERE PROCESSLIST_USER = 'kt_r_it\\'s\\\\') DO KILL CONNECTION s.id; END FOR; END; END"
            )
        );
    }

    #[test]
    fn on_rds_the_event_ends_each_session_through_rds_kill() {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_795_989_906);
        let sql = create_statement(&user("kt_r_it's\\"), at, Kill::RdsKill);
        let name = event_name(&user("kt_r_it's\\"));
        assert_eq!(
            sql,
            format!(
                "CREATE DEFINER = CURRENT_USER EVENT `keyturn`.`{name}` ON SCHEDULE \
                 AT GREATEST(TIMESTAMP '2026-11-29 22:05:06', NOW() + INTERVAL 1 SECOND) ON COMPLETION NOT PRESERVE \
                 DO BEGIN DROP USER IF EXISTS 'kt_r_it\\'s\\\\'@'%'; \
                 BEGIN DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; \
                 FOR s IN (SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = 'kt_r_it\\'s\\\\') \
                 DO CALL mysql.rds_kill(s.id); END FOR; END; \
                 BEGIN DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; \
                 FOR s IN (SELECT PROCESSLIST_ID AS id FROM performance_schema.threads \
                 WHERE PROCESSLIST_USER = 'kt_r_it\\'s\\\\') DO CALL mysql.rds_kill(s.id); END FOR; END; END"
            )
        );
        assert!(!sql.contains("KILL CONNECTION USER"), "RDS refuses its master user KILL of other sessions");
    }
}
