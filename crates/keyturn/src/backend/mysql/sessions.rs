//! Ending a deleted user's open sessions: a session outlives `DROP USER` and keeps the
//! privileges of its active role, so a revocation is done only when none is left.
//!
//! Each session is ended with `KILL CONNECTION id`; where the server refuses that for
//! want of CONNECTION ADMIN or SUPER (Amazon RDS and Aurora give their master users
//! neither), with `CALL mysql.rds_kill(id)`, RDS's procedure for it. The user's sessions
//! are then listed again until none is left: `KILL` only marks a session, which ends when
//! it next checks (at once for an idle one). A session that could not be ended, or is
//! still there after [`SESSIONS_GONE_WITHIN`], fails the deletion (retryably: the user is
//! dropped already, and the next attempt lists and ends its sessions again).
//!
//! An admin without PROCESS sees only its own sessions, so an empty list from it proves
//! nothing: that is an error too, checked once per admin session.
//!
//! A session is found by its login name, which no security context changes. The
//! PROCESSLIST's `USER` shows the definer while a session runs a `SQL SECURITY DEFINER`
//! routine or a trigger (a lease's own `DEFINER = CURRENT_ROLE` procedure, or an admin's
//! procedure it may execute, left waiting on a lock), so that alone would miss the session,
//! which would go on with its role's privileges once the routine returns.
//! `performance_schema.threads` keeps the login name: where it is ON (MySQL's default;
//! MariaDB's is OFF) and the admin may read it, such sessions are listed and ended too.
//! Where it is not, a session that may be running as a definer cannot be told from the
//! definer's own sessions and is not ended (it may be anyone's): while one is there the
//! deletion fails, retryably, rather than report the user's sessions gone
//! ([`statements::sessions_left`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::statements::{self, read_kill, read_rds_kill, KillOutcome};
use super::{required, text, unexpected, Session};
use crate::backend::{BackendError, Username};

/// How long a killed session may take to leave the process list.
const SESSIONS_GONE_WITHIN: Duration = Duration::from_secs(3);

/// Pause between two listings of the sessions still there.
const RECHECK_EVERY: Duration = Duration::from_millis(50);

impl Session {
    /// Ends every session that logged in as `username` (whatever host part it came from)
    /// and returns how many the server took a kill for. See the module's documentation.
    pub(super) async fn end_sessions(&mut self, username: &Username) -> Result<u64, BackendError> {
        self.check_sees_every_session(username).await?;
        let deadline = tokio::time::Instant::now() + SESSIONS_GONE_WITHIN;
        let mut ended = 0;
        let mut tried = BTreeSet::new();
        let mut refused: BTreeMap<u64, String> = BTreeMap::new();
        loop {
            let open = self.sessions_left(username).await?;
            if open.is_empty() {
                return Ok(ended);
            }
            for &id in &open.users {
                if !tried.insert(id) {
                    continue;
                }
                match self.end_session(id).await? {
                    KillOutcome::Ended => ended += 1,
                    KillOutcome::Gone => {}
                    // end_session answers Denied only if rds_kill did, which it reads as Failed.
                    KillOutcome::Denied => {
                        refused.insert(id, "KILL refused".into());
                    }
                    KillOutcome::Failed(reason) => {
                        refused.insert(id, reason);
                    }
                }
            }
            let left = self.sessions_left(username).await?;
            if left.is_empty() {
                return Ok(ended);
            }
            // A session that may be the user's inside a definer routine is waited for until
            // the deadline (once the routine returns it shows the user's name and is ended);
            // one the server refused to end is not.
            let all_refused = left.unknown.is_empty() && left.users.iter().all(|id| refused.contains_key(id));
            if all_refused || tokio::time::Instant::now() >= deadline {
                return Err(left.error(username, &refused));
            }
            tokio::time::sleep(RECHECK_EVERY).await;
        }
    }

    /// Ends one session: `KILL CONNECTION`, and `mysql.rds_kill` where `KILL` is denied.
    /// Once denied, this admin session goes straight to `rds_kill`.
    async fn end_session(&mut self, id: u64) -> Result<KillOutcome, BackendError> {
        if !self.kill_denied {
            let answer = self.try_run(&statements::kill_connection(id), "ending a session").await?;
            match read_kill(answer.as_ref().err().map(|(code, message)| (*code, message.as_str()))) {
                KillOutcome::Denied => self.kill_denied = true,
                other => return Ok(other),
            }
        }
        let answer = self.try_run(&statements::rds_kill(id), "ending a session with mysql.rds_kill").await?;
        Ok(read_rds_kill(answer.as_ref().err().map(|(code, message)| (*code, message.as_str()))))
    }

    /// One listing of the sessions `username` may still have ([`statements::sessions_left`]).
    async fn sessions_left(&mut self, username: &Username) -> Result<SessionsLeft, BackendError> {
        let operation = "listing the user's sessions";
        let with_threads = self.threads_readable().await?;
        let name = username.as_str();
        let params = vec![name.into(), name.into()];
        let rows = self.rows(&statements::sessions_left(with_threads), params, operation).await?;
        let mut left = SessionsLeft::default();
        for row in &rows {
            let read = |column| text(row, column).map_err(|m| unexpected(operation, m));
            let id = required(row, "id").map_err(|m| unexpected(operation, m))?;
            let id = id.parse().map_err(|_| unexpected(operation, "an id is not a number".into()))?;
            let (listed, login, hidden) = (read("listed")?, read("login")?, read("hidden")?);
            // The server compares names without case; a name differing in case only is
            // another account's, whose sessions this deletion must not end.
            if listed.as_deref() == Some(name) || login.as_deref() == Some(name) {
                left.users.push(id);
            } else if hidden.as_deref() == Some("1") {
                left.unknown.push(id);
            }
        }
        Ok(left)
    }

    /// Whether this session may read `performance_schema.threads`, looked up once.
    async fn threads_readable(&mut self) -> Result<bool, BackendError> {
        if let Some(readable) = self.threads_readable {
            return Ok(readable);
        }
        let operation = "looking up performance_schema.threads";
        let readable = !self.rows(statements::THREADS_READABLE, Vec::new(), operation).await?.is_empty();
        self.threads_readable = Some(readable);
        Ok(readable)
    }

    /// Fails unless this session's account, or a role it has enabled, holds PROCESS.
    async fn check_sees_every_session(&mut self, username: &Username) -> Result<(), BackendError> {
        if self.sees_every_session {
            return Ok(());
        }
        let operation = "checking that the admin sees every session";
        let rows = self.rows(statements::sees_every_session(self.server), Vec::new(), operation).await?;
        let count = match rows.first() {
            Some(row) => text(row, "n").map_err(|m| unexpected(operation, m))?,
            None => None,
        };
        if count.as_deref().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) == 0 {
            return Err(BackendError::Database {
                operation,
                message: format!(
                    "the admin does not hold PROCESS, so it sees only its own sessions: whether {:?} has sessions \
                     left cannot be told; grant it PROCESS",
                    username.as_str()
                ),
                // The user is dropped already; once PROCESS is granted, a retry ends it.
                retryable: true,
            });
        }
        self.sees_every_session = true;
        Ok(())
    }
}

/// What one listing found: the sessions that logged in as the user (or run as it), and
/// those that may be its inside a definer routine, whose login the server does not say.
#[derive(Debug, Default)]
struct SessionsLeft {
    users: Vec<u64>,
    unknown: Vec<u64>,
}

impl SessionsLeft {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.unknown.is_empty()
    }

    /// The deletion's failure, retryable: the user is dropped already, and the next
    /// attempt lists and ends its sessions again.
    fn error(&self, username: &Username, refused: &BTreeMap<u64, String>) -> BackendError {
        let message = if self.users.is_empty() {
            format!(
                "{} session(s) run a statement as another account (inside a SQL SECURITY DEFINER routine or a \
                 trigger, or the definer's own) and the server does not say who logged in to them \
                 (performance_schema is OFF, or the admin may not read performance_schema.threads): one may be \
                 {:?}'s, and would go on with its privileges once the routine returns; the user is dropped, and a \
                 retry ends its sessions once they can be told",
                self.unknown.len(),
                username.as_str()
            )
        } else {
            let reason = self
                .users
                .iter()
                .find_map(|id| refused.get(id))
                .cloned()
                .unwrap_or_else(|| format!("still open {} s after KILL", SESSIONS_GONE_WITHIN.as_secs()));
            format!(
                "{} session(s) of {:?} could not be ended ({reason}); the user is dropped, but those sessions keep \
                 its privileges until they end",
                self.users.len(),
                username.as_str()
            )
        };
        BackendError::Database { operation: "ending the user's sessions", message, retryable: true }
    }
}
