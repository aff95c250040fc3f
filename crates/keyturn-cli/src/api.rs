//! The credentials API as the CLI calls it: every request signed with SigV4 (service
//! `execute-api`) with the caller's credentials from AWS's default chain, to the routes of
//! [`keyturn::contract`], an answer read as JSON into the contract's types, and each failure
//! sorted into the class its exit code reports.
//!
//! A request refused with 429 (API Gateway's throttling) or 503 (the issuer could not reach
//! its table or a database, or Lambda's concurrency ran out) is sent again, [`RETRY`]'s
//! attempts at most, after a wait with full jitter (a random time up to a bound that doubles
//! at each attempt, so that the CI jobs of one pipeline throttled at once do not come back
//! at once) or as long as the answer's `Retry-After` says, within a bound. The issuer's own
//! refusals that say `"retryable": false` (`too_many_leases`, a 429) are not retried: the
//! same request would meet the same answer. A lost answer (a timeout, a connection
//! dropped) is not retried: an issue may have happened. Why a retried issue is safe is in
//! docs/cli.md: a lease whose answer was lost (the issuer failed after writing it) ends at
//! its TTL like any other.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use keyturn::contract::{self, ErrorBody, LeasesAnswer, LeasesQuery, RenewAnswer, RolesAnswer, Route, TtlRequest};
use serde_json::Value;

/// The largest answer read: credentials and lease lists are small (a page of every lease,
/// 500 of them, is some 400 kB).
const MAX_ANSWER: usize = 1 << 20;
/// The most pages of `leases list --all` followed: 500 leases each.
const MAX_PAGES: usize = 200;
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

    /// The same error, saying it is the last of `attempts` requests.
    #[must_use]
    pub fn after_attempts(self, attempts: u32) -> Self {
        let last = |message: String| format!("{message}, after {attempts} attempts");
        match self {
            Self::Usage(m) => Self::Usage(last(m)),
            Self::Auth(m) => Self::Auth(last(m)),
            Self::NotFound(m) => Self::NotFound(last(m)),
            Self::Server(m) => Self::Server(last(m)),
            Self::Refused(m) => Self::Refused(last(m)),
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

/// How a refused request is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Requests sent in all, the first included.
    pub attempts: u32,
    /// The bound of the first wait; each later one doubles it, up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// The longest `Retry-After` honoured; a longer one waits this long.
    pub retry_after_max: Duration,
}

/// The CLI's retries: 4 requests, waits up to 0.5, 1 and 2 s (1.75 s on average in all),
/// a `Retry-After` up to 10 s.
pub const RETRY: Retry = Retry {
    attempts: 4,
    base: Duration::from_millis(500),
    cap: Duration::from_secs(5),
    retry_after_max: Duration::from_secs(10),
};

impl Retry {
    /// The wait after the `attempt`th request (1 for the first) was refused: the answer's
    /// `Retry-After`, bounded, else a uniformly random time up to `base * 2^(attempt-1)`
    /// (capped), drawn from `random`.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.retry_after_max);
        }
        let bound = self.base.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(self.cap);
        let millis = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(random % millis.saturating_add(1))
    }
}

/// Whether a refusal with `status` and `body` is worth sending again: a 429 or 503, unless
/// the issuer's own answer says it is not (`"retryable": false`).
pub fn is_retryable(status: u16, body: &Value) -> bool {
    matches!(status, 429 | 503) && body.get("retryable").and_then(Value::as_bool) != Some(false)
}

/// A `Retry-After` header in seconds (the HTTP-date form is not used by AWS and is taken
/// as absent).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

/// A random number for the jitter: std's hasher keys are random per process.
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
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
    retry: Retry,
    /// Whether to say nothing of retries.
    quiet: bool,
    /// Whether the first retry was said already (once per run: `exec` renews for hours).
    said_retrying: Arc<AtomicBool>,
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
        Ok(Self {
            base_url,
            region,
            credentials,
            client,
            retry: RETRY,
            quiet: false,
            said_retrying: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The same API, saying nothing of retries when `quiet` (`--quiet`).
    #[must_use]
    pub fn quiet(self, quiet: bool) -> Self {
        Self { quiet, ..self }
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

    /// `GET /v1/leases` with `query`: with `all`, page after page (each page's `next`)
    /// into one answer, whose JSON is `{"leases": [...]}` with every page's leases (the
    /// API's answer as it came when there was one page).
    pub async fn leases(&self, query: &LeasesQuery) -> Result<Answer<LeasesAnswer>, CliError> {
        let mut query = query.clone();
        let mut leases = Vec::new();
        let mut json = Vec::new();
        for page_number in 0..MAX_PAGES {
            let text = query.to_query().map_err(CliError::Usage)?;
            let mut path = Route::ListLeases.path("");
            if !text.is_empty() {
                path = format!("{path}?{text}");
            }
            let (_, answer) = self.call_path(Route::ListLeases, &path, None).await?;
            let page: LeasesAnswer = contract::read(&answer).map_err(|e| CliError::Server(e.to_string()))?;
            leases.extend(page.leases);
            if let Some(listed) = answer.get("leases").and_then(Value::as_array) {
                json.extend(listed.iter().cloned());
            }
            match page.next {
                // A next that does not move on would loop.
                Some(next) if query.all && query.after.as_ref() != Some(&next) => query.after = Some(next),
                Some(_) if query.all => return Err(CliError::Server("the API's next page is the same page".into())),
                _ => {
                    let json = if page_number == 0 { answer } else { serde_json::json!({ "leases": json }) };
                    return Ok(Answer { typed: LeasesAnswer { leases, next: None }, json });
                }
            }
        }
        Err(CliError::Server(format!("the API's lease list goes on past {MAX_PAGES} pages")))
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
    /// for a route without one), sent again on a 429 or 503 as [`Retry`] says; the answer's
    /// status and JSON body (`Null` when empty).
    pub async fn call(&self, route: Route, param: &str, body: Option<String>) -> Result<(u16, Value), CliError> {
        self.call_path(route, &route.path(param), body).await
    }

    /// [`Api::call`] with the path (and query) written out.
    async fn call_path(&self, route: Route, path: &str, body: Option<String>) -> Result<(u16, Value), CliError> {
        let mut attempt = 1;
        loop {
            let (status, retry_after, value) = self.send(route, path, body.as_deref().unwrap_or_default()).await?;
            if (200..300).contains(&status) {
                return Ok((status, value));
            }
            if attempt >= self.retry.attempts || !is_retryable(status, &value) {
                let error = CliError::from_status(status, &value);
                return Err(if attempt > 1 { error.after_attempts(attempt) } else { error });
            }
            let wait = self.retry.wait(attempt, retry_after, random());
            if !self.quiet && !self.said_retrying.swap(true, Ordering::Relaxed) {
                crate::term::info(&format!(
                    "the API answered HTTP {status} ({}): retrying, {} times at most",
                    route.key(),
                    self.retry.attempts - attempt
                ));
            }
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// One signed request: the answer's status, `Retry-After` and JSON body, whatever the
    /// status.
    async fn send(&self, route: Route, path: &str, body: &str) -> Result<(u16, Option<Duration>, Value), CliError> {
        let method = route.method();
        let url = format!("{}{path}", self.base_url);
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
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| CliError::Usage(format!("cannot build a request to {url}: {e}")))?;
        instructions.apply_to_request_http1x(&mut request);
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CliError::Server(format!("cannot reach the API at {}: {e}", self.base_url)))?;
            let status = response.status().as_u16();
            let retry_after =
                retry_after(response.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()));
            let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| CliError::Server(format!("the API's answer could not be read: {e}")))?
                .to_bytes();
            Ok::<_, CliError>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
            CliError::Server(format!("the API at {} did not answer within {} s", self.base_url, TIMEOUT.as_secs()))
        })??;
        let value = match serde_json::from_slice(&bytes) {
            _ if bytes.is_empty() => Value::Null,
            Ok(value) => value,
            // A refusal's page from a proxy or load balancer: its status says enough (and a
            // 503 of one is retried like any other).
            Err(_) if is_retryable(status, &Value::Null) => Value::Null,
            Err(_) => {
                return Err(CliError::Server(format!("the API answered HTTP {status} with a body that is not JSON")))
            }
        };
        Ok((status, retry_after, value))
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
    fn throttling_and_unavailability_are_retried_but_not_the_issuers_final_refusals() {
        assert!(is_retryable(429, &json!({"message": "Too Many Requests"})), "API Gateway's throttling");
        assert!(is_retryable(503, &json!({"message": "Service Unavailable"})));
        assert!(is_retryable(503, &json!({"code": "unavailable", "message": "m", "retryable": true})));
        assert!(is_retryable(503, &Value::Null));
        let cap = json!({"code": "too_many_leases", "message": "m", "retryable": false, "live_leases": 3});
        assert!(!is_retryable(429, &cap), "the role's max_leases: the same answer again");
        for status in [400, 403, 404, 409, 500, 502, 504] {
            assert!(!is_retryable(status, &Value::Null), "{status}");
        }
    }

    #[test]
    fn waits_are_jittered_below_a_doubling_bound_or_as_retry_after_says_within_its_bound() {
        let r = RETRY;
        for random in [0, 1, 499, 500, 12_345, u64::MAX] {
            assert!(r.wait(1, None, random) <= Duration::from_millis(500), "{random}");
            assert!(r.wait(2, None, random) <= Duration::from_secs(1), "{random}");
            assert!(r.wait(3, None, random) <= Duration::from_secs(2), "{random}");
            assert!(r.wait(30, None, random) <= r.cap, "{random}");
        }
        // Full jitter: anything from nothing up to the bound.
        assert_eq!(r.wait(1, None, 0), Duration::ZERO);
        assert_eq!(r.wait(3, None, 2000), Duration::from_secs(2));
        assert_eq!(r.wait(3, None, 2001), Duration::ZERO);
        assert_eq!(r.wait(1, Some(Duration::from_secs(3)), 0), Duration::from_secs(3));
        assert_eq!(r.wait(1, Some(Duration::from_secs(3600)), 0), r.retry_after_max);
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        for absent in [None, Some(""), Some("-1"), Some("1.5"), Some("Wed, 21 Oct 2015 07:28:00 GMT")] {
            assert_eq!(retry_after(absent), None, "{absent:?}");
        }
        assert_ne!((0..8).map(|_| random()).collect::<std::collections::BTreeSet<_>>().len(), 1);
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
