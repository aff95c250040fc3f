//! The Lambda side the functions share: events in, and out either a response (the issuer's
//! HTTP API, the reaper's report) or an error as Lambda's `errorType` / `errorMessage`.

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

use crate::rotation::store::SecretStore;
use crate::rotation::{RotationError, RotationEvent, RotationTarget, Rotator};

/// Serves rotation events with `rotator` until the runtime stops the process.
pub async fn serve_rotation<S: SecretStore, T: RotationTarget>(
    rotator: &Rotator<S, T>,
) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let request_id = event.context.request_id;
        let event = RotationEvent::from_value(event.payload).map_err(diagnostic)?;
        tracing::debug!(%request_id, secret_arn = %event.secret_id, step = event.step.as_str(), "rotation event received");
        rotator.handle(&event).await.map(|_| ()).map_err(diagnostic)
    }))
    .await
}

/// The failure's kind as `errorType`; its message, which names the secret and never holds
/// a secret value, as `errorMessage`.
fn diagnostic(error: RotationError) -> Diagnostic {
    Diagnostic { error_type: error.kind().to_owned(), error_message: error.to_string() }
}

/// Serves the issuer's HTTP API (API Gateway payload 2.0 events) with `service`. Every
/// request gets an HTTP response, errors included: a Lambda error would reach the caller
/// as a bare 500.
#[cfg(feature = "lease")]
pub async fn serve_api<P: crate::lease::ports::Ports>(
    service: &crate::lease::service::LeaseService<P>,
) -> Result<(), lambda_runtime::Error> {
    use crate::lease::api::{self, ApiRequest};
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let response = match ApiRequest::from_event(event.payload) {
            Ok(request) => api::handle(service, &request).await,
            Err(refused) => {
                tracing::warn!(request_id = %event.context.request_id, status = refused.status, "event refused");
                refused
            }
        };
        Ok::<Value, Diagnostic>(response.into_event())
    }))
    .await
}

/// How long before the invocation's deadline the reaper stops starting revocations (at
/// most a third of the time it has): the ones in flight must still finish (their
/// statements are bounded by the statement timeout) and their outcome be recorded.
#[cfg(feature = "lease")]
pub const REAP_MARGIN: std::time::Duration = std::time::Duration::from_secs(15);

/// The reaper's time when the runtime gives no usable deadline: its schedule's period.
#[cfg(feature = "lease")]
pub const REAP_FALLBACK_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves the reaper's scheduled events: one [`reap`](crate::lease::service::LeaseService::reap)
/// per event, bounded by `batch`, `concurrency` and the invocation's deadline.
#[cfg(feature = "lease")]
pub async fn serve_reaper<P: crate::lease::ports::Ports>(
    service: &crate::lease::service::LeaseService<P>,
    batch: usize,
    concurrency: usize,
) -> Result<(), lambda_runtime::Error> {
    use crate::lease::service::ReapLimits;
    let function_name = &crate::metrics::reaper_function_name();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Lambda gives the deadline in Unix milliseconds; cargo-lambda's emulator sends the
        // timeout instead (600000), which is in the past read so: then the schedule's own
        // period is the budget.
        let left = match event.context.deadline.checked_sub(now_ms) {
            Some(ms) if ms > 0 => std::time::Duration::from_millis(ms),
            _ => REAP_FALLBACK_BUDGET,
        };
        let deadline = std::time::Instant::now() + left.saturating_sub(REAP_MARGIN.min(left / 3));
        tracing::debug!(request_id = %event.context.request_id, budget_ms = left.as_millis() as u64, "reaper event received");
        let report = service
            .reap(ReapLimits { batch, concurrency, deadline })
            .await
            .map_err(|e| Diagnostic { error_type: e.code().to_owned(), error_message: e.to_string() })?;
        // The run succeeds even when revocations failed: they are recorded on their leases
        // and retried every run, and a failed invocation each minute (retried, then sent to
        // the dead-letter queue) for a database that is down would only add noise. The
        // metric is what alarms read.
        crate::metrics::print_line(&report.metrics().emf_line(function_name, now_ms));
        serde_json::to_value(&report).map_err(|e| Diagnostic {
            error_type: "internal".to_owned(),
            error_message: format!("the reaper's report: {e}"),
        })
    }))
    .await
}
