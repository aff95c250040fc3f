//! AWS adapters behind the library's traits: Secrets Manager as the rotation engine's
//! [`crate::rotation::store::SecretStore`], RDS as its [`crate::rotation::database::RdsLookup`].

#[cfg(feature = "iam")]
pub mod iam;
#[cfg(feature = "database")]
pub mod rds;
pub mod secretsmanager;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// Renders an SDK error with its code and message, and says whether it is worth retrying
/// (throttling, timeouts, transport failures and 5xx).
pub(crate) fn describe_sdk_error<E: ProvideErrorMetadata + std::error::Error, R: std::fmt::Debug>(
    err: &SdkError<E, R>,
) -> (String, bool) {
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("Unknown");
            let retryable = matches!(
                code,
                "ThrottlingException"
                    | "Throttling"
                    | "InternalServiceError"
                    | "InternalFailure"
                    | "ServiceUnavailable"
            );
            (format!("{code}: {}", e.message().unwrap_or("no message")), retryable)
        }
        SdkError::TimeoutError(_) => ("request timed out".into(), true),
        SdkError::DispatchFailure(d) => (format!("could not send the request: {d:?}"), true),
        SdkError::ResponseError(r) => (format!("unreadable response: {r:?}"), true),
        other => (other.to_string(), false),
    }
}
