//! Logging: JSON lines on stdout through `tracing`, honouring Lambda's advanced logging
//! controls (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`); `RUST_LOG` when those are
//! unset. Secret values never reach a log line: every type holding one redacts itself.
//!
//! The level asked for applies to keyturn's own crates ([`OWN_CRATES`]) only. Every other
//! crate (the AWS SDK, hyper, rustls, the database drivers, the Lambda runtime) is capped
//! at [`THIRD_PARTY_CAP`] whatever is asked for: their DEBUG and TRACE lines are wire logs
//! (requests, responses, protocol messages) that may carry the very secrets being rotated,
//! and the AWS SDK prints redacted bodies in full when `LOG_SENSITIVE_BODIES` or
//! `LOG_SIGNABLE_BODY` is set. There is deliberately no switch to lift the cap.

use tracing::level_filters::LevelFilter;
use tracing::Metadata;
use tracing_subscriber::layer::{Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, EnvFilter, Layer};

/// keyturn's own crates, as `tracing` names them (a crate's name with `_` for `-`): the
/// library and every function binary. A function missing here is capped like a
/// third-party crate (a unit test checks `functions/` against this list).
pub const OWN_CRATES: [&str; 5] = ["keyturn", "rotate_database", "rotate_iam_key", "issue_credentials", "reap_leases"];

/// The most any other crate may log, whatever level is asked for. WARN, not INFO: their
/// INFO lines (credential providers, connection notices) tell an operator nothing about a
/// rotation, and keyturn cannot vouch for what each of them prints; their warnings and
/// errors (no credentials, a certificate problem) stay visible.
pub const THIRD_PARTY_CAP: LevelFilter = LevelFilter::WARN;

/// Whether an event or span with this `tracing` target comes from keyturn's own code.
pub fn is_own(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    OWN_CRATES.contains(&krate)
}

/// The level asked for: `AWS_LAMBDA_LOG_LEVEL` (Lambda's names, `FATAL` read as ERROR),
/// else `RUST_LOG`'s directives, else INFO. An unreadable setting means INFO.
fn requested(lambda_level: Option<&str>, rust_log: Option<&str>) -> EnvFilter {
    let info = || EnvFilter::new("info");
    match (lambda_level, rust_log) {
        (Some(level), _) => match level.to_ascii_lowercase().as_str() {
            "fatal" => EnvFilter::new("error"),
            other => other.parse::<LevelFilter>().map(|l| EnvFilter::new(l.to_string())).unwrap_or_else(|_| info()),
        },
        (None, Some(directives)) => EnvFilter::try_new(directives).unwrap_or_else(|_| info()),
        (None, None) => info(),
    }
}

/// The level asked for, with every crate not keyturn's capped at [`THIRD_PARTY_CAP`].
fn capped<S>(requested: EnvFilter) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let cap = filter::filter_fn(|meta: &Metadata<'_>| is_own(meta.target()) || *meta.level() <= THIRD_PARTY_CAP);
    filter::FilterExt::and(requested, cap)
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let filter = capped(requested(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    ));
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    // Lambda adds its own timestamps in text mode; JSON lines keep theirs for CloudWatch queries.
    let layer = if text {
        layer.without_time().with_ansi(false).with_filter(filter).boxed()
    } else {
        layer.json().flatten_event(true).with_current_span(false).with_span_list(false).with_filter(filter).boxed()
    };
    tracing_subscriber::registry().with(layer).init();
    tracing::debug!(third_party_cap = %THIRD_PARTY_CAP, "log level applies to keyturn; other crates capped");
}

/// Why a function could not start (its configuration, its roles file), as `main` returns
/// it: logged once as an error line, and printed by Rust's `Error: ...` as its message,
/// not as the error's structure (which `main`'s `Debug` printing would show).
pub struct CannotStart(String);

impl std::fmt::Debug for CannotStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for CannotStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CannotStart {}

/// Logs why the function cannot start and returns it for `main` to end with:
/// `Config::from_env().map_err(cannot_start)?`.
pub fn cannot_start(error: impl std::fmt::Display) -> CannotStart {
    tracing::error!(error = %error, "cannot start");
    CannotStart(error.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// The messages that get through with these settings, of one event per level from
    /// keyturn, a function binary and two third-party crates.
    fn logged(lambda_level: Option<&str>, rust_log: Option<&str>) -> Vec<String> {
        let buffer = Buffer::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_filter(capped(requested(lambda_level, rust_log)));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            macro_rules! each_level {
                ($target:literal) => {
                    tracing::trace!(target: $target, concat!($target, " trace"));
                    tracing::debug!(target: $target, concat!($target, " debug"));
                    tracing::info!(target: $target, concat!($target, " info"));
                    tracing::warn!(target: $target, concat!($target, " warn"));
                    tracing::error!(target: $target, concat!($target, " error"));
                };
            }
            each_level!("keyturn::aws::secretsmanager");
            each_level!("rotate_iam_key");
            each_level!("aws_smithy_runtime::client::orchestrator");
            each_level!("keyturnish");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| l.trim().to_owned()).collect()
    }

    fn levels(logged: &[String], target: &str) -> Vec<String> {
        logged.iter().filter_map(|l| l.strip_prefix(&format!("{target} "))).map(str::to_owned).collect()
    }

    const ALL: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

    #[test]
    fn trace_is_for_keyturn_only() {
        let out = logged(Some("TRACE"), Some("trace"));
        assert_eq!(levels(&out, "keyturn::aws::secretsmanager"), ALL);
        assert_eq!(levels(&out, "rotate_iam_key"), ALL);
        assert_eq!(levels(&out, "aws_smithy_runtime::client::orchestrator"), ["warn", "error"]);
        // A name that merely starts like keyturn's is someone else's.
        assert_eq!(levels(&out, "keyturnish"), ["warn", "error"]);
    }

    #[test]
    fn rust_log_cannot_lift_the_cap() {
        let out = logged(None, Some("aws_smithy_runtime=trace,keyturn=debug"));
        assert_eq!(levels(&out, "aws_smithy_runtime::client::orchestrator"), ["warn", "error"]);
        assert_eq!(levels(&out, "keyturn::aws::secretsmanager"), ["debug", "info", "warn", "error"]);
        // Not named, so off: RUST_LOG's directives are EnvFilter's.
        assert!(levels(&out, "rotate_iam_key").is_empty());
    }

    #[test]
    fn lower_levels_apply_to_everyone() {
        let out = logged(Some("ERROR"), None);
        for target in ["keyturn::aws::secretsmanager", "rotate_iam_key", "aws_smithy_runtime::client::orchestrator"] {
            assert_eq!(levels(&out, target), ["error"], "{target}");
        }
        assert_eq!(levels(&logged(Some("FATAL"), None), "rotate_iam_key"), ["error"]);
    }

    #[test]
    fn defaults_to_info() {
        for (lambda, rust_log) in [(None, None), (Some("loud"), None), (None, Some("keyturn=[")), (Some("info"), None)]
        {
            let out = logged(lambda, rust_log);
            assert_eq!(
                levels(&out, "keyturn::aws::secretsmanager"),
                ["info", "warn", "error"],
                "{lambda:?} {rust_log:?}"
            );
            assert_eq!(levels(&out, "aws_smithy_runtime::client::orchestrator"), ["warn", "error"]);
        }
    }

    /// Every function crate under `functions/` is one of [`OWN_CRATES`], so its own lines
    /// are not capped.
    #[test]
    fn every_function_is_an_own_crate() {
        let functions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
        let mut found = 0;
        for entry in std::fs::read_dir(&functions).unwrap() {
            let manifest = entry.unwrap().path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .unwrap_or_else(|| panic!("no name in {}", manifest.display()))
                .trim_matches('"')
                .replace('-', "_");
            assert!(is_own(&name), "{name} (functions/) is missing from telemetry::OWN_CRATES");
            found += 1;
        }
        assert!(found >= 2, "no function crates under {}", functions.display());
    }
}
