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
    /// Ends every session of `username` (by login name, whatever host part it came from)
    /// and returns how many the server took a kill for. See the module's documentation.
    pub(super) async fn end_sessions(&mut self, username: &Username) -> Result<u64, BackendError> {
        self.check_sees_every_session(username).await?;
        let deadline = tokio::time::Instant::now() + SESSIONS_GONE_WITHIN;
        let mut ended = 0;
        let mut tried = BTreeSet::new();
        let mut refused: BTreeMap<u64, String> = BTreeMap::new();
        loop {
            let open = self.session_ids(username).await?;
            if open.is_empty() {
                return Ok(ended);
            }
            for id in open {
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
            let left = self.session_ids(username).await?;
            if left.is_empty() {
                return Ok(ended);
            }
            let all_refused = left.iter().all(|id| refused.contains_key(id));
            if all_refused || tokio::time::Instant::now() >= deadline {
                let reason = left
                    .iter()
                    .find_map(|id| refused.get(id))
                    .cloned()
                    .unwrap_or_else(|| format!("still open {} s after KILL", SESSIONS_GONE_WITHIN.as_secs()));
                return Err(BackendError::Database {
                    operation: "ending the user's sessions",
                    message: format!(
                        "{} session(s) of {:?} could not be ended ({reason}); the user is dropped, but those \
                         sessions keep its privileges until they end",
                        left.len(),
                        username.as_str()
                    ),
                    retryable: true,
                });
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

    /// The ids of `username`'s sessions.
    async fn session_ids(&mut self, username: &Username) -> Result<Vec<u64>, BackendError> {
        let operation = "listing the user's sessions";
        let rows = self.rows(statements::SESSIONS_OF, vec![username.as_str().into()], operation).await?;
        rows.iter()
            .map(|row| {
                let id = required(row, "id").map_err(|m| unexpected(operation, m))?;
                id.parse().map_err(|_| unexpected(operation, "an id is not a number".into()))
            })
            .collect()
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
