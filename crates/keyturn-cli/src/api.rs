//! The credentials API as the CLI calls it: every request signed with SigV4 (service
//! `execute-api`) with the caller's credentials from AWS's default chain, to the routes of
//! [`keyturn::contract`], an answer read as JSON into the contract's types, and each failure
//! sorted into the class its exit code reports.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use keyturn::contract::{self, ErrorBody, LeasesAnswer, RenewAnswer, RolesAnswer, Route, TtlRequest};
use serde_json::Value;

/// The largest answer read: credentials and lease lists are small.
const MAX_ANSWER: usize = 1 << 20;
/// How long a request may take, answer included: a server that stops answering must not
/// hold a CI job (or an `eval`) forever.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a command failed, by the exit code it ends with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A request the API refused as malformed (400), or a command line that makes none.
    #[error("{0}")]
    Usage(String),
    /// No credentials, a signature refused, or a caller the roles do not allow (401, 403).
    #[error("{0}")]
    Auth(String),
    /// No such role, lease or endpoint (404).
    #[error("{0}")]
    NotFound(String),
    /// The API could not be reached or failed (5xx, a network error, an unreadable answer).
    #[error("{0}")]
    Server(String),
    /// Anything else the API refused (409 conflict, 429 too many leases).
    #[error("{0}")]
    Refused(String),
}

impl CliError {
    /// The exit code: 2 usage, 3 auth, 4 not found, 5 server, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Auth(_) => 3,
            Self::NotFound(_) => 4,
            Self::Server(_) => 5,
            Self::Refused(_) => 1,
        }
    }

    /// The error an API answer with `status` is, with the API's own message.
    pub fn from_status(status: u16, body: &Value) -> Self {
        // The server's words go to a terminal: no control character of theirs reaches it.
        let message = match contract::read::<ErrorBody>(body) {
            Ok(refusal) => format!("{} ({}, HTTP {status})", printable(&refusal.message), printable(&refusal.code)),
            // API Gateway's own refusals (a bad signature) are not the issuer's: they carry
            // {"message": ...} only.
            Err(_) => match body["message"].as_str() {
                Some(message) => format!("{} (HTTP {status})", printable(message)),
                None => format!("the API answered HTTP {status}"),
            },
        };
        match status {
            400 => Self::Usage(message),
            401 | 403 => Self::Auth(message),
            404 => Self::NotFound(message),
            500.. => Self::Server(message),
            _ => Self::Refused(message),
        }
    }
}

/// An `https://` URL, or `http://` to this machine only (a local gateway): the answer
/// carries credentials, which must never cross a network in cleartext.
fn check_url(url: &str) -> Result<(), CliError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(CliError::Usage(format!("the API URL {url:?} is not an https:// URL")));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if ["127.0.0.1", "localhost", "::1"].contains(&host) && !authority.contains('@') {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "the API URL {url:?} is plain http to another machine: the answer holds credentials, use https://"
        )))
    }
}

/// `text` with every control character written as an escape, for a terminal.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A role name or lease id as one path segment: the API's names need no encoding, and
/// anything else (a `/`, a `?`) would reach another route.
pub fn path_segment(text: &str) -> Result<&str, CliError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(text)
    } else {
        Err(CliError::Usage(format!("{text:?} is not a role name or lease id (letters, digits, - and _)")))
    }
}

/// The optional body of issue and renew: `{"ttl_seconds": N}`.
fn ttl_body(ttl: Option<Duration>) -> Result<Option<String>, CliError> {
    ttl.map(|t| serde_json::to_string(&TtlRequest { ttl_seconds: Some(t.as_secs()) }))
        .transpose()
        .map_err(|e| CliError::Usage(format!("cannot write the request: {e}")))
}

/// An answer read into the contract's type `T`, and the JSON it came as (what `--json`
/// prints, a newer issuer's fields included).
#[derive(Debug)]
pub struct Answer<T> {
    pub typed: T,
    pub json: Value,
}

/// The API at `base_url`, signing as the caller.
#[derive(Clone)]
pub struct Api {
    base_url: String,
    region: String,
    credentials: SharedCredentialsProvider,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    /// The API at `base_url` (`https://...`, or `http://` for a local gateway), signing in
    /// `region` with `credentials`.
    pub fn new(base_url: &str, region: String, credentials: SharedCredentialsProvider) -> Result<Self, CliError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        check_url(&base_url)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| CliError::Server(format!("no trusted roots for TLS: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Ok(Self { base_url, region, credentials, client })
    }

    /// `POST /v1/credentials/{role}` (`role` a [`path_segment`]): the 201's body, read by
    /// [`crate::format::Credential::from_body`] (which names the field at fault).
    pub async fn issue(&self, role: &str, ttl: Option<Duration>) -> Result<Value, CliError> {
        Ok(self.call(Route::Issue, role, ttl_body(ttl)?).await?.1)
    }

    /// `POST /v1/leases/{lease_id}/renew` (`lease_id` a [`path_segment`]): the answer.
    pub async fn renew(&self, lease_id: &str, ttl: Option<Duration>) -> Result<Answer<RenewAnswer>, CliError> {
        self.typed(Route::Renew, lease_id, ttl_body(ttl)?).await
    }

    /// `DELETE /v1/leases/{lease_id}` (`lease_id` a [`path_segment`]).
    pub async fn revoke(&self, lease_id: &str) -> Result<(), CliError> {
        self.call(Route::Revoke, lease_id, None).await.map(drop)
    }

    /// `GET /v1/roles`.
    pub async fn roles(&self) -> Result<Answer<RolesAnswer>, CliError> {
        self.typed(Route::ListRoles, "", None).await
    }

    /// `GET /v1/leases`.
    pub async fn leases(&self) -> Result<Answer<LeasesAnswer>, CliError> {
        self.typed(Route::ListLeases, "", None).await
    }

    /// [`Api::call`], the answer read as `T`: an answer that is not one is a server error
    /// naming the field.
    async fn typed<T: serde::de::DeserializeOwned>(
        &self,
        route: Route,
        param: &str,
        body: Option<String>,
    ) -> Result<Answer<T>, CliError> {
        let (_, json) = self.call(route, param, body).await?;
        let typed = contract::read(&json).map_err(|e| CliError::Server(e.to_string()))?;
        Ok(Answer { typed, json })
    }

    /// One signed request to `route` with its parameter `param` (a [`path_segment`], `""`
    /// for a route without one); the answer's status and JSON body (`Null` when empty).
    pub async fn call(&self, route: Route, param: &str, body: Option<String>) -> Result<(u16, Value), CliError> {
        let method = route.method();
        let url = format!("{}{}", self.base_url, route.path(param));
        let body = body.unwrap_or_default();
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| CliError::Auth(format!("no AWS credentials to sign with: {e}")))?;
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("execute-api")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| CliError::Usage(format!("cannot sign the request: {e}")))?
            .into();
        let content_type = [("content-type", "application/json")];
        let headers = if body.is_empty() { &content_type[..0] } else { &content_type[..] };
        let signable =
            SignableRequest::new(method, url.as_str(), headers.iter().copied(), SignableBody::Bytes(body.as_bytes()))
                .map_err(|e| CliError::Usage(format!("cannot sign a request to {url}: {e}")))?;
        let (instructions, _) =
            sign(signable, &params).map_err(|e| CliError::Usage(format!("cannot sign the request: {e}")))?.into_parts();
        let mut request = http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CliError::Usage(format!("cannot build a request to {url}: {e}")))?;
        instructions.apply_to_request_http1x(&mut request);
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CliError::Server(format!("cannot reach the API at {}: {e}", self.base_url)))?;
            let status = response.status().as_u16();
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| CliError::Server(format!("the API's answer could not be read: {e}")))?
                .to_bytes();
            Ok::<_, CliError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
            CliError::Server(format!("the API at {} did not answer within {} s", self.base_url, TIMEOUT.as_secs()))
        })??;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|_| CliError::Server(format!("the API answered HTTP {status} with a body that is not JSON")))?
        };
        if (200..300).contains(&status) {
            Ok((status, value))
        } else {
            Err(CliError::from_status(status, &value))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn credentials_travel_over_tls_unless_the_api_is_on_this_machine() {
        for ok in [
            "https://abc.execute-api.eu-west-1.amazonaws.com",
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://[::1]:9",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://abc.execute-api.eu-west-1.amazonaws.com",
            "http://127.0.0.1.evil.example",
            "http://localhost@evil.example",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "abc",
        ] {
            assert_eq!(check_url(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn every_answer_maps_to_its_class_with_the_apis_message() {
        let e = CliError::from_status(403, &json!({"code": "forbidden", "message": "no", "retryable": false}));
        assert_eq!((e.exit_code(), e.to_string()), (3, "no (forbidden, HTTP 403)".to_owned()));
        assert_eq!(CliError::from_status(400, &Value::Null).exit_code(), 2);
        assert_eq!(CliError::from_status(404, &Value::Null).exit_code(), 4);
        assert_eq!(CliError::from_status(503, &Value::Null).exit_code(), 5);
        assert_eq!(CliError::from_status(409, &Value::Null).exit_code(), 1);
        assert_eq!(CliError::from_status(403, &json!({"message": "Forbidden"})).to_string(), "Forbidden (HTTP 403)");
        let hostile = CliError::from_status(409, &json!({"code": "x", "message": "a\u{1b}]52;c;bad\u{7}"}));
        assert!(!hostile.to_string().chars().any(char::is_control), "{hostile}");
    }
}
