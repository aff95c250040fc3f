//! The issuer's HTTP API, as API Gateway HTTP API events (payload format 2.0, IAM
//! authorization) in and responses out:
//!
//! | method and path | body | success |
//! |---|---|---|
//! | `POST /v1/credentials/{role}` | `{"ttl_seconds": N}`, optional | 201, the credentials and lease |
//! | `POST /v1/leases/{lease_id}/renew` | `{"ttl_seconds": N}`, optional | 200, the new expiry |
//! | `DELETE /v1/leases/{lease_id}` | none | 204, also for a lease already revoked |
//! | `GET /v1/roles` | none | 200, the roles the caller may request |
//! | `GET /v1/leases` | none | 200, the caller's own live leases |
//!
//! `GET /v1/leases` answers `{"leases": [...]}`: the leases whose holder is the caller's
//! exact ARN (the IAM user, or the role session, that got them: those it may renew and
//! revoke as their holder; an API administrator gets its own, not everyone's), `active` or
//! `revoking`, the earliest expiry first, at most
//! [`LIST_MAX`](super::service::LIST_MAX). Each is `lease_id`, `role`, `kind`, `username`,
//! `issued_at`, `expires_at`, `state`, `renewable` and `revocable`: never a secret, nor
//! more of the grant than its kind. The list is read from an eventually consistent index:
//! a lease issued or changed in the last moment may be missing or shown as it was.
//!
//! Errors are `{"code": ..., "message": ..., "retryable": ...}` with the status of
//! [`LeaseError::status`]; bad input is always a 4xx and changes nothing.
//!
//! The event is read into [`ApiRequest`] here, at the edge, and refused unless it is a 2.0
//! event carrying the IAM authorizer's caller ARN: the function trusts that ARN, so an
//! event of another shape (a REST API, a function URL, a direct invoke without it) must
//! not be served as anybody. Only the fields used are read (lambda_http would accept every
//! event source and hide which one it got).

use std::time::Duration;

use base64::Engine as _;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};

use super::kind;
use super::ports::Ports;
use super::service::{LeaseService, Secret};
use super::{Lease, LeaseError};

/// The largest request body read: the API takes at most one small number.
const MAX_BODY: usize = 4096;

/// An API request as the service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path without the stage's prefix.
    pub path: String,
    pub body: Option<String>,
    /// The caller's ARN, as the IAM authorizer verified it.
    pub caller: String,
    pub request_id: String,
}

/// A response: the status and a JSON body (none for 204).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    version: String,
    raw_path: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    is_base64_encoded: bool,
    request_context: Context,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    http: Http,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    authorizer: Option<Authorizer>,
}

#[derive(Deserialize)]
struct Http {
    method: String,
}

#[derive(Deserialize)]
struct Authorizer {
    #[serde(default)]
    iam: Option<Iam>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Iam {
    #[serde(default)]
    user_arn: Option<String>,
}

impl ApiRequest {
    /// Reads an HTTP API payload 2.0 event. The error is the response to send.
    pub fn from_event(event: Value) -> Result<Self, ApiResponse> {
        let event: Event = serde_json::from_value(event)
            .map_err(|e| error_response(&LeaseError::BadRequest(format!("not an API Gateway HTTP API event: {e}"))))?;
        if event.version != "2.0" {
            return Err(error_response(&LeaseError::BadRequest(format!(
                "payload format {:?} is not served: configure the integration for format 2.0",
                event.version
            ))));
        }
        let caller = event
            .request_context
            .authorizer
            .and_then(|a| a.iam)
            .and_then(|i| i.user_arn)
            .filter(|arn| !arn.is_empty())
            .ok_or_else(|| {
                error_response(&LeaseError::Forbidden(
                    "the request carries no IAM identity: the route must use AWS_IAM authorization".into(),
                ))
            })?;
        let mut path = event.raw_path;
        if let Some(stage) = event.request_context.stage.filter(|s| s != "$default") {
            if let Some(rest) = path.strip_prefix(&format!("/{stage}")) {
                path = rest.to_owned();
            }
        }
        let body = match event.body {
            Some(b) if event.is_base64_encoded => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| error_response(&LeaseError::BadRequest("the body is not base64 UTF-8".into())))?,
            ),
            other => other,
        };
        Ok(Self {
            method: event.request_context.http.method.to_ascii_uppercase(),
            path,
            body,
            caller,
            request_id: event.request_context.request_id.unwrap_or_default(),
        })
    }
}

impl ApiResponse {
    /// The response as API Gateway takes it from a 2.0 integration.
    pub fn into_event(self) -> Value {
        let mut out = json!({
            "statusCode": self.status,
            "headers": {"content-type": "application/json", "cache-control": "no-store"},
            "isBase64Encoded": false,
        });
        if let Some(body) = self.body {
            out["body"] = Value::String(body.to_string());
        }
        out
    }
}

/// The error as the API answers it.
pub fn error_response(e: &LeaseError) -> ApiResponse {
    let mut body = json!({"code": e.code(), "message": e.to_string(), "retryable": e.retryable()});
    if let LeaseError::TooManyLeases { live, .. } = e {
        body["live_leases"] = json!(live);
    }
    ApiResponse { status: e.status(), body: Some(body) }
}

/// The optional `{"ttl_seconds": N}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TtlBody {
    ttl_seconds: Option<Value>,
}

fn ttl_of(body: Option<&str>) -> Result<Option<Duration>, LeaseError> {
    let Some(text) = body.filter(|b| !b.trim().is_empty()) else { return Ok(None) };
    if text.len() > MAX_BODY {
        return Err(LeaseError::BadRequest(format!("the body is over {MAX_BODY} bytes")));
    }
    // serde's message quotes no more than a field name or a type here: the body is the
    // caller's own and carries no secret. An object is required (serde would also read a
    // struct from an array).
    let value: Value =
        serde_json::from_str(text).map_err(|e| LeaseError::BadRequest(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(LeaseError::BadRequest(format!("the body must be a JSON object, not {}", kind_of(&value))));
    }
    let parsed: TtlBody = serde_json::from_value(value).map_err(|e| {
        LeaseError::BadRequest(format!("the body must be a JSON object with only \"ttl_seconds\": {e}"))
    })?;
    match parsed.ttl_seconds {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(secs) => Ok(Some(Duration::from_secs(secs))),
            None => Err(LeaseError::BadRequest(format!("ttl_seconds {n} is not a positive whole number"))),
        },
        Some(other) => Err(LeaseError::BadRequest(format!("ttl_seconds must be a number, not {}", kind_of(&other)))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn no_body(body: Option<&str>) -> Result<(), LeaseError> {
    match body.filter(|b| !b.trim().is_empty()) {
        None => Ok(()),
        Some(_) => Err(LeaseError::BadRequest("this request takes no body".into())),
    }
}

/// Which operation a request is.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Issue(&'a str),
    Renew(&'a str),
    Revoke(&'a str),
    ListRoles,
    ListLeases,
}

fn route<'a>(method: &str, path: &'a str) -> Result<Route<'a>, LeaseError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let not_allowed =
        |allowed: &str| LeaseError::BadRequest(format!("{method} is not served on {path}: use {allowed}"));
    match segments.as_slice() {
        ["v1", "credentials", role] if !role.is_empty() => match method {
            "POST" => Ok(Route::Issue(role)),
            _ => Err(not_allowed("POST")),
        },
        ["v1", "leases", id, "renew"] if !id.is_empty() => match method {
            "POST" => Ok(Route::Renew(id)),
            _ => Err(not_allowed("POST")),
        },
        ["v1", "leases", id] if !id.is_empty() => match method {
            "DELETE" => Ok(Route::Revoke(id)),
            _ => Err(not_allowed("DELETE")),
        },
        ["v1", "roles"] => match method {
            "GET" => Ok(Route::ListRoles),
            _ => Err(not_allowed("GET")),
        },
        ["v1", "leases"] => match method {
            "GET" => Ok(Route::ListLeases),
            _ => Err(not_allowed("GET")),
        },
        _ => Err(LeaseError::NotFound(format!("no such endpoint: {method} {path}"))),
    }
}

/// Serves one request.
pub async fn handle<P: Ports>(service: &LeaseService<P>, req: &ApiRequest) -> ApiResponse {
    let result = serve(service, req).await;
    match result {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(
                request_id = %req.request_id, caller = %req.caller, method = %req.method, path = %req.path,
                status = e.status(), code = e.code(), error = %e, "request refused"
            );
            error_response(&e)
        }
    }
}

async fn serve<P: Ports>(service: &LeaseService<P>, req: &ApiRequest) -> Result<ApiResponse, LeaseError> {
    let body = req.body.as_deref();
    match route(&req.method, &req.path)? {
        Route::Issue(role) => {
            let ttl = ttl_of(body)?;
            let issued = service.issue(&req.caller, role, ttl).await?;
            Ok(ApiResponse { status: 201, body: Some(issued_body(&issued)) })
        }
        Route::Renew(id) => {
            let ttl = ttl_of(body)?;
            let renewed = service.renew(&req.caller, id, ttl).await?;
            Ok(ApiResponse {
                status: 200,
                body: Some(json!({
                    "lease_id": renewed.lease.lease_id,
                    "expires_at": renewed.lease.expires_at,
                    "capped": renewed.capped,
                })),
            })
        }
        Route::Revoke(id) => {
            no_body(body)?;
            service.revoke(&req.caller, id).await?;
            Ok(ApiResponse { status: 204, body: None })
        }
        Route::ListRoles => {
            no_body(body)?;
            let roles: Vec<Value> = service
                .roles_for(&req.caller)
                .map(|r| {
                    json!({
                        "name": r.name,
                        "kind": r.kind.name(),
                        "default_ttl_seconds": r.default_ttl.as_secs(),
                        "max_ttl_seconds": r.max_ttl.as_secs(),
                    })
                })
                .collect();
            Ok(ApiResponse { status: 200, body: Some(json!({ "roles": roles })) })
        }
        Route::ListLeases => {
            no_body(body)?;
            let leases: Vec<Value> = service.list(&req.caller).await?.iter().map(listed_body).collect();
            Ok(ApiResponse { status: 200, body: Some(json!({ "leases": leases })) })
        }
    }
}

/// What every answer about a lease says of it. `renewable` and `revocable` are what its
/// kind allows (an STS session or an RDS token can be neither extended nor ended early),
/// told to a client (the CLI) so it does not ask for what will be refused.
fn lease_body(lease: &Lease) -> Value {
    let revocable = lease.credential.is_revocable();
    json!({
        "lease_id": lease.lease_id,
        "role": lease.role,
        "kind": lease.credential.kind(),
        "issued_at": lease.issued_at,
        "expires_at": lease.expires_at,
        "renewable": revocable,
        "revocable": revocable,
    })
}

/// A lease as `GET /v1/leases` lists it: what it is, under which name, in which state;
/// nothing of the credential, and of the grant only its kind.
fn listed_body(lease: &Lease) -> Value {
    let mut body = lease_body(lease);
    body["username"] = json!(lease.username);
    body["state"] = json!(lease.state.as_str());
    body
}

/// The body of a 201: the lease, then the credential, by kind.
fn issued_body(issued: &super::service::Issued) -> Value {
    let lease = &issued.lease;
    let mut body = lease_body(lease);
    body["ttl_seconds"] = json!(lease.expires_at - lease.issued_at);
    body["server_expiry"] = json!(lease.server_expiry);
    let credential = match &issued.secret {
        Secret::Database(kind::database::Secret { password, engine, host, port, dbname, tls }) => json!({
            "engine": engine.as_str(),
            "host": host,
            "port": port,
            "dbname": dbname,
            "tls": tls,
            "username": lease.username,
            "password": password.expose_secret(),
        }),
        Secret::AwsSts(keys) => {
            let mut aws = aws_keys(keys);
            aws["session_name"] = json!(lease.username);
            if let super::Credential::AwsSts(kind::aws_sts::Credential { role_arn }) = &lease.credential {
                aws["role_arn"] = json!(role_arn);
            }
            aws
        }
        Secret::AwsIamUser(kind::aws_iam_user::Secret { keys, propagation }) => {
            let mut aws = aws_keys(keys);
            aws["username"] = json!(lease.username);
            aws["propagation_delay_seconds"] = json!(propagation.as_secs());
            aws
        }
        Secret::RdsIamToken(kind::rds_iam_token::Secret { token, engine, host, port, region }) => json!({
            "engine": engine.as_str(),
            "host": host,
            "port": port,
            "region": region,
            // RDS takes an IAM token over TLS only.
            "tls": true,
            "username": lease.username,
            "password": token.expose_secret(),
        }),
    };
    if let (Value::Object(body), Value::Object(credential)) = (&mut body, credential) {
        body.extend(credential);
    }
    body
}

/// An access key as the answer gives it: a session's with its token and expiry.
fn aws_keys(keys: &crate::backend::aws::AwsKeys) -> Value {
    let mut aws = json!({
        "access_key_id": keys.access_key_id,
        "secret_access_key": keys.secret_access_key.expose_secret(),
    });
    if let Some(token) = &keys.session_token {
        aws["session_token"] = json!(token.expose_secret());
    }
    if let Some(expiration) = keys.expiration {
        aws["expiration"] = json!(expiration);
    }
    aws
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::fakes::{block_on, service, Service, CI, OPS, OTHER_CI, STRANGER};

    #[test]
    fn routes_and_methods() {
        assert_eq!(route("POST", "/v1/credentials/ci"), Ok(Route::Issue("ci")));
        assert_eq!(route("POST", "/v1/leases/abc/renew"), Ok(Route::Renew("abc")));
        assert_eq!(route("DELETE", "/v1/leases/abc"), Ok(Route::Revoke("abc")));
        assert_eq!(route("GET", "/v1/roles"), Ok(Route::ListRoles));
        assert_eq!(route("GET", "/v1/leases"), Ok(Route::ListLeases));
        for method in ["POST", "DELETE", "PUT"] {
            let e = route(method, "/v1/leases").unwrap_err();
            assert_eq!(e.status(), 400, "{method}");
            assert!(e.to_string().ends_with("use GET"), "{e}");
        }
        assert_eq!(route("GET", "/v1/leases/").unwrap_err().status(), 404);
        assert_eq!(route("GET", "/v1/leases/abc").unwrap_err().status(), 400, "a lease is revoked, not read");
        assert_eq!(route("GET", "/v1/lease").unwrap_err().status(), 404);
        assert_eq!(route("GET", "/v1/credentials/ci").unwrap_err().status(), 400);
        assert_eq!(route("POST", "/v1/credentials/").unwrap_err().status(), 404);
        assert_eq!(route("POST", "/v1/credentials/ci/x").unwrap_err().status(), 404);
        assert_eq!(route("GET", "/v2/roles").unwrap_err().status(), 404);
    }

    #[test]
    fn ttl_bodies() {
        assert_eq!(ttl_of(None), Ok(None));
        assert_eq!(ttl_of(Some("")), Ok(None));
        assert_eq!(ttl_of(Some("{}")), Ok(None));
        assert_eq!(ttl_of(Some(r#"{"ttl_seconds": 60}"#)), Ok(Some(Duration::from_secs(60))));
        for bad in [
            r#"{"ttl_seconds": -1}"#,
            r#"{"ttl_seconds": 1.5}"#,
            r#"{"ttl_seconds": "60"}"#,
            r#"{"ttl": 60}"#,
            r#"[60]"#,
            "not json",
            r#"{"ttl_seconds": 99999999999999999999999}"#,
        ] {
            assert_eq!(ttl_of(Some(bad)).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(ttl_of(Some(&" ".repeat(MAX_BODY + 1))), Ok(None));
        let long = format!(r#"{{"ttl_seconds": 1{}}}"#, " ".repeat(MAX_BODY));
        assert_eq!(ttl_of(Some(&long)).unwrap_err().status(), 400);
    }

    fn event(authorizer: Value) -> Value {
        json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/v1/roles",
            "requestContext": {"http": {"method": "GET"}, "stage": "$default", "requestId": "r1", "authorizer": authorizer},
        })
    }

    #[test]
    fn an_event_without_an_iam_caller_is_refused() {
        let caller = "arn:aws:sts::123456789012:assumed-role/ci/job";
        let ok = ApiRequest::from_event(event(json!({"iam": {"userArn": caller}}))).unwrap();
        assert_eq!((ok.method.as_str(), ok.path.as_str(), ok.caller.as_str()), ("GET", "/v1/roles", caller));
        for authorizer in [
            json!(null),
            json!({}),
            json!({"iam": {}}),
            json!({"iam": {"userArn": ""}}),
            json!({"jwt": {"claims": {"sub": caller}}}),
        ] {
            assert_eq!(ApiRequest::from_event(event(authorizer.clone())).unwrap_err().status, 403, "{authorizer}");
        }
        let mut v1 = event(json!({"iam": {"userArn": caller}}));
        v1["version"] = json!("1.0");
        assert_eq!(ApiRequest::from_event(v1).unwrap_err().status, 400);
        assert_eq!(ApiRequest::from_event(json!({"Records": []})).unwrap_err().status, 400);
    }

    #[test]
    fn a_named_stage_is_stripped_and_base64_bodies_decoded() {
        let mut e = event(json!({"iam": {"userArn": "arn:aws:iam::123456789012:user/u"}}));
        e["rawPath"] = json!("/prod/v1/credentials/ci");
        e["requestContext"]["stage"] = json!("prod");
        e["body"] = json!(base64::engine::general_purpose::STANDARD.encode(r#"{"ttl_seconds":5}"#));
        e["isBase64Encoded"] = json!(true);
        let req = ApiRequest::from_event(e).unwrap();
        assert_eq!(req.path, "/v1/credentials/ci");
        assert_eq!(req.body.as_deref(), Some(r#"{"ttl_seconds":5}"#));
    }

    /// `GET /v1/leases` as `caller`: the status and the body.
    async fn list_as(service: &Service, caller: &str) -> (u16, Value) {
        let req = ApiRequest {
            method: "GET".into(),
            path: "/v1/leases".into(),
            body: None,
            caller: caller.into(),
            request_id: "r1".into(),
        };
        let response = handle(service, &req).await;
        (response.status, response.body.unwrap_or(Value::Null))
    }

    fn listed_ids(body: &Value) -> Vec<&str> {
        body["leases"].as_array().unwrap().iter().map(|l| l["lease_id"].as_str().unwrap()).collect()
    }

    #[test]
    fn the_leases_listed_say_what_they_are_and_nothing_secret() {
        block_on(async {
            let s = service(None);
            let db = s.issue(CI, "ci", Some(Duration::from_secs(1200))).await.unwrap().lease;
            let sts = s.issue(CI, "deploy", None).await.unwrap().lease;
            let (status, body) = list_as(&s, CI).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(listed_ids(&body), [sts.lease_id.as_str(), db.lease_id.as_str()], "earliest expiry first");
            let listed = &body["leases"][1];
            assert_eq!(
                *listed,
                json!({
                    "lease_id": db.lease_id,
                    "role": "ci",
                    "kind": "database",
                    "username": db.username,
                    "issued_at": db.issued_at,
                    "expires_at": db.expires_at,
                    "state": "active",
                    "renewable": true,
                    "revocable": true,
                })
            );
            let session = &body["leases"][0];
            assert_eq!(
                (session["kind"].as_str(), session["username"].as_str()),
                (Some("aws-sts"), Some(sts.username.as_str()))
            );
            assert_eq!((session["renewable"].as_bool(), session["revocable"].as_bool()), (Some(false), Some(false)));
            // Nothing of the grant beyond its kind: no admin secret, group or role ARN.
            let text = body.to_string();
            for secret in
                ["secretsmanager", "app_read", "role/deploy", "password", "secret_access_key", "session_token"]
            {
                assert!(!text.contains(secret), "{secret} in {text}");
            }

            let req = ApiRequest {
                method: "GET".into(),
                path: "/v1/leases".into(),
                body: Some("{}".into()),
                caller: CI.into(),
                request_id: "r2".into(),
            };
            assert_eq!(handle(&s, &req).await.status, 400, "a GET takes no body");
        });
    }

    #[test]
    fn a_caller_never_sees_another_callers_leases() {
        block_on(async {
            let s = service(None);
            let mine = s.issue(CI, "ci", None).await.unwrap().lease;
            let theirs = s.issue(OTHER_CI, "ci", None).await.unwrap().lease;
            assert_eq!(listed_ids(&list_as(&s, CI).await.1), [mine.lease_id.as_str()]);
            assert_eq!(listed_ids(&list_as(&s, OTHER_CI).await.1), [theirs.lease_id.as_str()]);
            // ARNs one step from the holder's: another case (IAM names are case-insensitive,
            // ARNs compared here are not), a character more or less, whitespace, another
            // session or role of the same account, an admin, a wildcard.
            let near = [
                CI.to_uppercase(),
                CI.replace("ci-runner", "CI-runner"),
                CI.replace("job-1", "Job-1"),
                format!("{CI}x"),
                format!("{CI}/"),
                format!("{CI} "),
                format!(" {CI}"),
                CI[..CI.len() - 1].to_owned(),
                CI.replace("job-1", "job-*"),
                CI.replace("job-1", "*"),
                "arn:aws:iam::123456789012:role/ci-runner".to_owned(),
                OPS.to_owned(),
                STRANGER.to_owned(),
                String::new(),
            ];
            for caller in &near {
                let (status, body) = list_as(&s, caller).await;
                assert_eq!((status, body), (200, json!({"leases": []})), "{caller:?}");
            }
        });
    }

    #[test]
    fn errors_are_json_with_a_code() {
        let r = error_response(&LeaseError::TooManyLeases { role: "ci".into(), live: 3 });
        assert_eq!(r.status, 429);
        let body = r.body.unwrap();
        assert_eq!((body["code"].as_str(), body["live_leases"].as_u64()), (Some("too_many_leases"), Some(3)));
        let event = error_response(&LeaseError::Unavailable("x".into())).into_event();
        assert_eq!(event["statusCode"], 503);
        assert_eq!(serde_json::from_str::<Value>(event["body"].as_str().unwrap()).unwrap()["retryable"], true);
    }
}
