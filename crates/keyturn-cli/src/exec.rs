//! `keyturn exec ROLE -- COMMAND`: run a command with a lease's credentials in its
//! environment, keep the lease alive while the command runs, and end it when the command
//! does.
//!
//! The order of events, chosen so that the credentials live no longer than the command:
//!
//! 1. Signal handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT are installed before the
//!    lease is requested: from then on a signal can no longer kill `keyturn` between the
//!    issue and the revocation.
//! 2. The lease is issued. Its credentials go into the child's environment only, after the
//!    caller's variables that would send them elsewhere are removed from it
//!    ([`Credential::displaced`]): nothing
//!    is printed but the lease id and expiry (on stderr), nothing is written to disk, and
//!    `keyturn` marks itself non-dumpable (Linux) so that neither a core dump nor another
//!    process of the same user (`ptrace`, `/proc/<pid>/mem`) can read them from it.
//! 3. A new IAM user's access key (`aws-iam-user`) is not usable at once: IAM is
//!    eventually consistent. `exec` calls `sts:GetCallerIdentity` with it until it works,
//!    for the answer's `propagation_delay_seconds` at most (see [`crate::propagation`]),
//!    saying so on stderr; past that it warns and runs the command anyway, as the key may
//!    still start working and the lease is live. A signal during the wait, as during the
//!    issue, revokes the lease and runs nothing. Renewal (5.) starts before the wait.
//! 4. The command runs with the terminal (stdin, stdout, stderr) and the process group of
//!    `keyturn`. Signals are forwarded to it; SIGINT and SIGQUIT are not when they came
//!    from the terminal (`keyturn` is in the terminal's foreground process group), since
//!    the terminal sends them to the whole group, the command included, and a second ^C
//!    would interrupt the command's own cleanup.
//! 5. A renewal task renews the lease at two thirds of its remaining life, asking for the
//!    TTL it was issued with, until the role's `max_ttl` caps it (then it warns once with
//!    the time the credentials stop working). A server or signature failure is retried
//!    within the remaining life; a refusal (the lease revoked elsewhere, not renewable)
//!    is reported and renewal stops. An STS session or RDS token cannot be renewed: the
//!    warning says when it ends.
//! 6. When the command exits, whatever the cause, the renewal stops and the lease is
//!    revoked (a lease that cannot be revoked, an STS session or RDS token, is left to
//!    end at its expiry). `keyturn` exits with the command's status, or dies of the
//!    signal that killed it (a shell reports 128 + N): a shell that got the same ^C as
//!    the command stops its script only when the command died of it, and would go on to
//!    the next `keyturn exec` of a loop after an exit with 130. A failed revocation is
//!    reported with the lease id and the time the lease ends by itself; the status is
//!    still the command's, since a CI job's result is the command's. With `--strict`, a
//!    command that succeeded (status 0) whose lease could not be revoked makes `keyturn`
//!    exit [`STRICT_NOT_REVOKED`] instead: a pipeline that must not leave credentials live
//!    fails. A command that failed keeps its own status (its failure is the one to see),
//!    and a lease of a kind that cannot be revoked (an STS session, an RDS token) is not a
//!    failure: it ends at its expiry by design.
//!
//! If `keyturn` itself is killed (SIGKILL), nothing revokes the lease: it ends at its
//! expiry, which the database or IAM enforce themselves, and the reaper deletes its user.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use keyturn::contract::{self, LeaseFacts};
use keyturn::time::iso8601_unix;
use secrecy::{ExposeSecret, SecretString};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::api::{Api, CliError};
use crate::format::{is_lease_id, Credential, FormatError, Secret};
use crate::propagation::{self, Waited};
use crate::term;

/// What `exec` needs from the command line.
pub struct ExecRequest {
    pub role: String,
    pub ttl: Option<Duration>,
    pub command: Vec<OsString>,
    pub quiet: bool,
    /// `--strict`: a lease left unrevoked fails a command that succeeded.
    pub strict: bool,
    /// The caller's AWS settings: where a new IAM user's key is tried (region, endpoint).
    pub aws: SdkConfig,
}

/// `exec --strict`'s status when the command succeeded but its lease could not be revoked.
pub const STRICT_NOT_REVOKED: u8 = 6;

/// The status `exec` ends with: the command's `status` (its exit code, or 128 + the signal
/// that killed it), unless `--strict` and the command succeeded but its lease is still live.
pub fn final_status(status: u8, strict: bool, revoked: bool) -> u8 {
    if strict && status == 0 && !revoked {
        STRICT_NOT_REVOKED
    } else {
        status
    }
}

/// The shortest wait between two renewals, or before a retry.
const MIN_WAIT: u64 = 1;

/// When to renew a lease that expires at `expires_at`, seen at `now` (Unix seconds): at two
/// thirds of its remaining life, as Vault's agent does, so that a renewal that fails has a
/// third left to be retried in.
pub fn renew_at(now: u64, expires_at: u64) -> u64 {
    now + (expires_at.saturating_sub(now) * 2 / 3).max(MIN_WAIT)
}

/// What the renewal task does after a renewal attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Renew again at this time.
    RenewAt(u64),
    /// Stop renewing; say this on stderr.
    Stop(String),
}

/// The decision after renewing lease `lease_id` at `now` gave `outcome`: the new expiry and
/// whether the role's `max_ttl` capped it, or the failure. `expires_at` is the expiry
/// before the attempt.
pub fn after_renewal(
    lease_id: &str,
    now: u64,
    expires_at: u64,
    outcome: Result<(u64, bool), &CliError>,
) -> (u64, Next) {
    match outcome {
        Ok((new_expiry, false)) => (new_expiry, Next::RenewAt(renew_at(now, new_expiry))),
        Ok((new_expiry, true)) => (
            new_expiry,
            Next::Stop(format!(
                "lease {lease_id} reached its role's max_ttl: the credentials stop working at {} (in {} s)",
                iso8601_unix(new_expiry),
                new_expiry.saturating_sub(now)
            )),
        ),
        // The API down or failing, or our own credentials refused for a moment (a refresh
        // of an SSO or web-identity session): retried while the lease lives.
        Err(CliError::Server(_) | CliError::Auth(_)) if now + MIN_WAIT < expires_at => {
            (expires_at, Next::RenewAt(renew_at(now, expires_at)))
        }
        Err(e) => (
            expires_at,
            Next::Stop(format!(
                "lease {lease_id} could not be renewed ({e}): the credentials stop working at {}",
                iso8601_unix(expires_at)
            )),
        ),
    }
}

/// The signals `exec` catches and forwards, by number.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    quit: Signal,
}

impl Signals {
    fn install() -> Result<Self, CliError> {
        let catch = |kind| signal(kind).map_err(|e| CliError::Server(format!("cannot catch signals: {e}")));
        Ok(Self {
            interrupt: catch(SignalKind::interrupt())?,
            terminate: catch(SignalKind::terminate())?,
            hangup: catch(SignalKind::hangup())?,
            quit: catch(SignalKind::quit())?,
        })
    }

    /// The next signal received (one received since `install` is returned at once).
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }
}

/// Whether `signal` reached the command already: SIGINT and SIGQUIT typed at a terminal go
/// to its whole foreground process group, which the command shares with `keyturn`. The
/// terminal is the controlling one (`/dev/tty`), whatever stdin is: `keyturn exec ... <
/// file` at a prompt gets the terminal's ^C all the same.
fn came_from_terminal(signal: i32) -> bool {
    if signal != libc::SIGINT && signal != libc::SIGQUIT {
        return false;
    }
    // SAFETY: open, tcgetpgrp, getpgrp and close only read the process's and the terminal's
    // state; the descriptor is this function's own and closed before it returns.
    let (foreground, own) = unsafe {
        let tty = libc::open(c"/dev/tty".as_ptr(), libc::O_RDONLY | libc::O_NOCTTY | libc::O_CLOEXEC);
        if tty == -1 {
            return false;
        }
        let foreground = libc::tcgetpgrp(tty);
        libc::close(tty);
        (foreground, libc::getpgrp())
    };
    foreground != -1 && foreground == own
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The lease `exec` holds: renewed while the command runs, ended when it stops.
struct Lease {
    api: Arc<Api>,
    lease_id: String,
    expires_at: u64,
    /// The TTL it was issued with, asked for again at each renewal.
    ttl: Option<Duration>,
    renewable: bool,
    revocable: bool,
    quiet: bool,
}

impl Lease {
    fn say(&self, line: &str) {
        if !self.quiet {
            term::info(line);
        }
    }

    /// Renews the lease until it cannot be; runs until aborted or stopped.
    async fn keep_alive(self: Arc<Self>) {
        // Lines about it go through `term`, which escapes them.
        let id = &self.lease_id;
        let mut expires_at = self.expires_at;
        let mut next = renew_at(unix_now(), expires_at);
        loop {
            tokio::time::sleep(Duration::from_secs(next.saturating_sub(unix_now()))).await;
            if !self.renewable {
                // Said even with --quiet: the command is about to lose its credentials.
                term::warning(&format!(
                    "lease {id} cannot be renewed: its credentials stop working at {}",
                    iso8601_unix(expires_at)
                ));
                return;
            }
            let outcome = self.api.renew(&self.lease_id, self.ttl).await;
            let outcome = outcome.as_ref().map(|answer| (answer.typed.expires_at, answer.typed.capped));
            let (renewed_to, decision) = after_renewal(id, unix_now(), expires_at, outcome);
            if let (Err(e), Next::RenewAt(at)) = (outcome, &decision) {
                self.say(&format!("renewing lease {id} failed ({e}); trying again at {}", iso8601_unix(*at)));
            }
            if renewed_to != expires_at {
                self.say(&format!("lease {id} renewed: expires at {}", iso8601_unix(renewed_to)));
            }
            expires_at = renewed_to;
            match decision {
                Next::RenewAt(at) => next = at,
                Next::Stop(why) => {
                    term::warning(&why);
                    return;
                }
            }
        }
    }

    /// Revokes the lease if it can be (an STS session or RDS token ends by itself):
    /// whether nothing of it is left to revoke.
    async fn end(&self) -> bool {
        if !self.revocable {
            return true;
        }
        let id = &self.lease_id;
        match self.api.revoke(id).await {
            Ok(()) => {
                self.say(&format!("lease {id} revoked"));
                true
            }
            Err(e) => {
                term::warning(&format!(
                    "lease {id} could not be revoked ({e}): it ends at its expiry, {}; \
                     to end it now: keyturn leases revoke {id}",
                    iso8601_unix(self.expires_at)
                ));
                false
            }
        }
    }
}

/// Runs `request.command` with the credentials of a new lease of `request.role`; the
/// command's exit status (see the module's header).
pub async fn exec(api: Api, request: ExecRequest) -> Result<ExitCode, CliError> {
    let Some((program, args)) = request.command.split_first() else {
        return Err(CliError::Usage("no command to run: keyturn exec ROLE -- COMMAND [ARGS]".into()));
    };
    let mut signals = Signals::install()?;
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_DUMPABLE takes integers and changes only this process's flag (the
    // command's is set again by execve).
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let api = Arc::new(api);
    let answer = api.issue(&request.role, request.ttl).await?;
    // The lease first, so that an answer whose credential cannot be used is still revoked.
    let facts: LeaseFacts = match contract::read(&answer) {
        Ok(facts) => facts,
        Err(e) => {
            // A lease whose other facts cannot be read is still revoked when its id can be:
            // the command will not run with it. Its kind is unknown, so the revocation is
            // asked for (an STS session's or RDS token's is refused, and it expires).
            if let Some(id) = answer.get("lease_id").and_then(|id| id.as_str()).filter(|id| is_lease_id(id)) {
                let unreadable = Lease {
                    api: api.clone(),
                    ttl: None,
                    lease_id: id.to_owned(),
                    expires_at: 0,
                    renewable: false,
                    revocable: true,
                    quiet: request.quiet,
                };
                let _ = unreadable.end().await;
            }
            return Err(CliError::Server(FormatError::from(e).to_string()));
        }
    };
    let credential = Credential::from_body(answer);
    let lease = Arc::new(Lease {
        api,
        ttl: credential.as_ref().ok().and_then(|c| c.issued.ttl_seconds).map(Duration::from_secs),
        lease_id: facts.lease_id,
        expires_at: facts.expires_at,
        renewable: facts.renewable,
        revocable: facts.revocable,
        quiet: request.quiet,
    });
    let credential = match credential {
        Ok(credential) => credential,
        Err(e) => {
            // Issued all the same (a host this CLI refuses, a kind or engine newer than
            // it): the command cannot run with it, so it is revoked rather than left live
            // until its expiry, when its id can be in a path.
            if is_lease_id(&lease.lease_id) {
                let _ = lease.end().await;
            }
            return Err(CliError::Server(e.to_string()));
        }
    };
    let wait = propagation::bound(&credential.issued);
    lease.say(&format!("lease {} expires at {}", lease.lease_id, iso8601_unix(lease.expires_at)));
    // Renewed from now on: the wait for the key may outlast a short lease.
    let renewal = tokio::spawn(lease.clone().keep_alive());
    let ready = async {
        if let (Some(bound), Secret::Aws { access_key_id, secret_access_key, .. }) = (wait, &credential.secret) {
            key_works(&lease, &request.aws, access_key_id, secret_access_key, bound).await;
        }
    };
    // A signal received during the issue or the wait: the command never runs.
    let stopped = tokio::select! {
        biased;
        signal = signals.next() => Some(signal),
        () = ready => None,
    };
    if let Some(signal) = stopped {
        renewal.abort();
        let _ = lease.end().await;
        die_of(signal);
        return Ok(ExitCode::from(128 + signal as u8));
    }

    let mut command = tokio::process::Command::new(program);
    command.args(args);
    // The caller's settings that would send the credential elsewhere go first; then the
    // credential's own variables, some of them the same names with keyturn's values.
    for name in credential.displaced() {
        command.env_remove(name);
    }
    for (name, value) in credential.variables() {
        command.env(name, value.expose_secret());
    }
    let spawned = command.spawn();
    drop((command, credential));
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            renewal.abort();
            let _ = lease.end().await;
            term::error(&format!("cannot run {}: {e}", program.to_string_lossy()));
            // As a shell reports it: 127 not found, 126 found but not runnable.
            return Ok(ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 }));
        }
    };
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.next() => {
                if let Some(pid) = pid.filter(|_| !came_from_terminal(signal)) {
                    // SAFETY: kill only sends a signal. The child is not reaped until
                    // wait() returns, so its pid cannot have been reused.
                    unsafe { libc::kill(pid, signal) };
                }
            }
        }
    };
    renewal.abort();
    let revoked = lease.end().await;
    let status = status.map_err(|e| CliError::Server(format!("cannot wait for the command: {e}")))?;
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        die_of(signal);
    }
    let code = final_status(exit_code(status), request.strict, revoked);
    if code != exit_code(status) {
        term::error(&format!(
            "the command succeeded but lease {} is still live (--strict): exiting {code}",
            lease.lease_id
        ));
    }
    Ok(ExitCode::from(code))
}

/// Waits until the lease's new IAM user key works, for `bound` at most, saying so.
async fn key_works(lease: &Lease, aws: &SdkConfig, access_key_id: &str, secret: &SecretString, bound: Duration) {
    let id = &lease.lease_id;
    lease.say(&format!(
        "waiting up to {} s for IAM to accept lease {id}'s new access key (IAM is eventually consistent)",
        bound.as_secs()
    ));
    match propagation::wait_for_key(aws, access_key_id, secret, bound).await {
        Waited::Works(after) => lease.say(&format!("the access key works, after {:.1} s", after.as_secs_f64())),
        // Said even with --quiet: the command's first AWS calls may be refused.
        Waited::StillRefused(after) => term::warning(&format!(
            "the access key of lease {id} still did not work after {:.1} s: running the command anyway \
             (the lease is live and the key may yet start working)",
            after.as_secs_f64()
        )),
    }
}

/// Ends `keyturn` by `signal`, as the command ended (the lease is dealt with already), so
/// that the shell sees what it would have seen of the command: bash, dash and zsh stop a
/// script on ^C only when the command they waited for died of the SIGINT. Returns when
/// the signal does not end a process (then the status is 128 + N).
fn die_of(signal: i32) {
    // SAFETY: these calls take integers and a zeroed signal set; they change only this
    // process's disposition and mask for `signal`, then send it to this thread.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// The command's status as a shell reports it: its exit code, or 128 + the signal that
/// killed it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_remaining_life() {
        assert_eq!(renew_at(1000, 1900), 1600);
        assert_eq!(renew_at(1000, 1006), 1004);
        // A lease about to end, or ended, is renewed at once (and no sooner than a second).
        assert_eq!(renew_at(1000, 1001), 1001);
        assert_eq!(renew_at(1000, 900), 1001);
    }

    #[test]
    fn renewal_continues_until_capped_and_failures_are_retried_while_the_lease_lives() {
        assert_eq!(after_renewal("L", 1000, 1300, Ok((1900, false))), (1900, Next::RenewAt(1600)));
        let (expiry, next) = after_renewal("L", 1000, 1300, Ok((1600, true)));
        assert_eq!(expiry, 1600);
        // Times are said in UTC, ISO 8601 (1600 s after the epoch).
        let said = |why: &str, words: &str| why.contains(words) && why.contains("1970-01-01T00:26:40Z");
        assert!(matches!(next, Next::Stop(ref why) if said(why, "max_ttl")), "{next:?}");

        let down = CliError::Server("the API at x did not answer".into());
        assert_eq!(after_renewal("L", 1000, 1300, Err(&down)), (1300, Next::RenewAt(1200)));
        let refused = CliError::Auth("The security token included in the request is expired".into());
        assert_eq!(after_renewal("L", 1000, 1300, Err(&refused)), (1300, Next::RenewAt(1200)));
        // Too late to retry, or a refusal no retry changes: renewal stops, saying why.
        assert!(matches!(after_renewal("L", 1299, 1300, Err(&down)).1, Next::Stop(_)));
        let gone = CliError::NotFound("no lease \"L\"".into());
        let (_, next) = after_renewal("L", 1000, 1300, Err(&gone));
        assert!(
            matches!(next, Next::Stop(ref why) if why.contains("no lease") && why.contains("1970-01-01T00:21:40Z")),
            "{next:?}"
        );
    }

    #[test]
    fn strict_fails_only_a_command_that_succeeded_and_left_its_lease_live() {
        assert_eq!(final_status(0, true, false), STRICT_NOT_REVOKED);
        assert_eq!(final_status(0, true, true), 0);
        assert_eq!(final_status(0, false, false), 0, "without --strict, a warning only");
        // The command's own failure wins: it is the one to look at.
        for failed in [1, 3, STRICT_NOT_REVOKED, 127, 143] {
            assert_eq!(final_status(failed, true, false), failed);
        }
    }

    #[test]
    fn the_status_is_the_commands_or_128_plus_its_signal() {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
