//! reap-leases: revokes expired leases (and retries failed revocations) and drops users
//! of keyturn's form that no live lease accounts for, on an EventBridge schedule. Safe to
//! run concurrently with itself and with issue-credentials: every lease change is a
//! compare-and-set.
//!
//! `main` builds the same service as issue-credentials, with the same builder, then reads
//! each role's admin secret once and logs any it cannot use; each run prints its metrics
//! as one CloudWatch embedded-metric-format line.

use keyturn::config::LeaseConfig;
use keyturn::telemetry::cannot_start;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    keyturn::telemetry::init();
    let config = LeaseConfig::from_env().map_err(cannot_start)?;
    let sdk = aws_config::load_from_env().await;
    let service = &keyturn::app::lease::build(&config, &sdk).map_err(cannot_start)?;
    // Once per container: an admin secret the reaper cannot use is logged now, by name, not
    // first found when a revocation fails. The function starts anyway: other roles work.
    service.check_admin_secrets().await;
    keyturn::lambda::serve_reaper(service, config.reap_batch, config.reap_concurrency).await
}
