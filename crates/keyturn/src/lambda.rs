//! The Lambda side every rotation function shares: events in, errors out as Lambda's
//! `errorType` / `errorMessage`.

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
