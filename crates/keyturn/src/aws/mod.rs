//! AWS adapters behind the library's traits: Secrets Manager as the rotation engine's
//! [`crate::rotation::store::SecretStore`], RDS as its [`crate::rotation::database::RdsLookup`],
//! DynamoDB as the leases' [`crate::lease::store::LeaseStore`], IAM, STS and the RDS token
//! signer as the leases' [`crate::backend::aws::AwsCredentials`] (feature `lease`).

#[cfg(feature = "lease")]
pub mod credentials;
#[cfg(feature = "lease")]
pub mod dynamodb;
#[cfg(feature = "iam")]
pub mod iam;
#[cfg(feature = "database")]
pub mod rds;
pub mod secretsmanager;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ConnectorError, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::RequestId;

/// The most of a service's message an error of keyturn's quotes, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Renders an SDK error for an error message, and says whether it is worth retrying
/// (throttling, timeouts, transport failures and 5xx; DynamoDB's throttling and transaction
/// conflicts, which come with HTTP 400).
///
/// Only the HTTP status, the service's error code, the first line of its message, the
/// request id and fixed descriptions are reported: never the raw response (its body may be
/// a secret value, GetSecretValue's or CreateAccessKey's) nor the request, and never their
/// `Debug`. The first line only, because some messages (a SigV4 signature mismatch) go on
/// to quote the request they refused.
pub(crate) fn describe_sdk_error<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> (String, bool) {
    let request_id = err.request_id().map(|id| format!(", request id {id}")).unwrap_or_default();
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            let code = e.code().unwrap_or("Unknown");
            let retryable = status >= 500
                || status == 429
                || matches!(
                    code,
                    "ThrottlingException"
                        | "Throttling"
                        | "InternalServiceError"
                        | "InternalFailure"
                        | "ServiceUnavailable"
                        | "ProvisionedThroughputExceededException"
                        | "RequestLimitExceeded"
                        | "TransactionConflictException"
                        | "TransactionInProgressException"
                );
            let message = e.message().map(first_line).unwrap_or_else(|| "no message".into());
            (format!("{code}: {message} (HTTP {status}{request_id})"), retryable)
        }
        SdkError::TimeoutError(_) => ("request timed out".into(), true),
        SdkError::DispatchFailure(d) => {
            (format!("could not send the request ({})", transport_failure(d.as_connector_error())), true)
        }
        SdkError::ResponseError(r) => {
            (format!("unreadable response (HTTP {}{request_id})", r.raw().status().as_u16()), true)
        }
        SdkError::ConstructionFailure(_) => ("could not build the request".into(), false),
        _ => ("unexpected SDK error".into(), false),
    }
}

/// The first line of a service's message, cut at [`MAX_MESSAGE_CHARS`].
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim_end();
    match line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// What kind of transport failure: fixed words, and the I/O error's kind when there is one
/// ("connection refused"), never the underlying errors' own text.
fn transport_failure(failure: Option<&ConnectorError>) -> String {
    let kind = match failure {
        Some(f) if f.is_timeout() => "timeout",
        Some(f) if f.is_io() => "I/O error",
        Some(f) if f.is_user() => "invalid request",
        _ => "transport error",
    };
    let mut source = failure.map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() != std::io::ErrorKind::Other {
                return format!("{kind}: {}", io.kind());
            }
        }
        source = e.source();
    }
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    const MARKER: &str = "MARKER-s3cr3t-value";

    type Error = SdkError<GetSecretValueError, HttpResponse>;

    /// A raw response as the SDK keeps it: a body quoting a secret value, a request id.
    fn raw(status: u16) -> HttpResponse {
        let body = format!(r#"{{"SecretString":"{{\"password\":\"{MARKER}\"}}","Name":"app"}}"#);
        let mut raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body));
        raw.headers_mut().insert("x-amzn-requestid", "req-1234");
        raw
    }

    /// An error whose `Display` and `Debug` both quote the secret (what a parser or a
    /// transport might say).
    struct Quoting;
    impl std::fmt::Display for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "unexpected token at {MARKER}")
        }
    }
    impl std::fmt::Debug for Quoting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Quoting({MARKER:?})")
        }
    }
    impl std::error::Error for Quoting {}

    fn describe(err: &Error) -> (String, bool) {
        let (message, retryable) = describe_sdk_error(err);
        assert!(!message.contains(MARKER), "the message quotes the request or response: {message}");
        // The premise: the error itself does hold the secret.
        assert!(format!("{err:?}").contains(MARKER));
        (message, retryable)
    }

    #[test]
    fn response_errors_report_the_status_not_the_body() {
        let (message, retryable) = describe(&SdkError::response_error(Quoting, raw(200)));
        assert_eq!(message, "unreadable response (HTTP 200, request id req-1234)");
        assert!(retryable);
    }

    #[test]
    fn service_errors_report_code_status_and_the_first_line_of_the_message() {
        let meta = ErrorMetadata::builder()
            .code("AccessDeniedException")
            .message(format!(
                "User is not authorized to perform: secretsmanager:GetSecretValue\n\nThe request was:\n{MARKER}"
            ))
            .build();
        let err = SdkError::service_error(GetSecretValueError::generic(meta), raw(400));
        let (message, retryable) = describe(&err);
        assert_eq!(
            message,
            "AccessDeniedException: User is not authorized to perform: secretsmanager:GetSecretValue \
             (HTTP 400, request id req-1234)"
        );
        assert!(!retryable);

        let unknown = SdkError::service_error(GetSecretValueError::generic(ErrorMetadata::builder().build()), raw(503));
        let (message, retryable) = describe(&unknown);
        assert_eq!(message, "Unknown: no message (HTTP 503, request id req-1234)");
        assert!(retryable, "5xx is worth retrying");

        for code in ["ProvisionedThroughputExceededException", "RequestLimitExceeded", "TransactionConflictException"] {
            let throttled = GetSecretValueError::generic(ErrorMetadata::builder().code(code).build());
            assert!(describe(&SdkError::service_error(throttled, raw(400))).1, "{code} is worth retrying");
        }

        let long = "x".repeat(1000);
        let meta = ErrorMetadata::builder().code("ValidationException").message(long).build();
        let (message, _) = describe(&SdkError::service_error(GetSecretValueError::generic(meta), raw(400)));
        assert!(message.len() < 400, "{message}");
    }

    #[test]
    fn dispatch_failures_report_fixed_words() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, Quoting);
        let err: Error = SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let (message, retryable) = describe(&err);
        assert_eq!(message, "could not send the request (I/O error: connection refused)");
        assert!(retryable);

        let err: Error = SdkError::dispatch_failure(ConnectorError::other(Box::new(Quoting), None));
        assert_eq!(describe(&err).0, "could not send the request (transport error)");
        let err: Error = SdkError::dispatch_failure(ConnectorError::user(Box::new(Quoting)));
        assert_eq!(describe(&err).0, "could not send the request (invalid request)");
    }

    #[test]
    fn other_failures_are_fixed_descriptions() {
        let err: Error = SdkError::timeout_error(Quoting);
        assert_eq!(describe(&err), ("request timed out".to_owned(), true));
        let err: Error = SdkError::construction_failure(Quoting);
        assert_eq!(describe(&err), ("could not build the request".to_owned(), false));
    }
}
