//! The issuer's HTTP API, as API Gateway HTTP API events (payload format 2.0, IAM
//! authorization) in and responses out. The routes, the request body and every answer are
//! [`crate::contract`]'s: the router serves exactly [`Route::ALL`], and the answers are
//! built here as the contract's types from the service's [`Issued`], [`Renewed`] and
//! [`Lease`].
//!
//! `GET /v1/leases` lists the leases whose holder is the caller's exact ARN (the IAM user,
//! or the role session, that got them: those it may renew and revoke as their holder; an
//! API administrator gets its own, not everyone's), `active` or `revoking`, the earliest
//! expiry first, at most [`LIST_MAX`](super::service::LIST_MAX): never a secret, nor more
//! of the credential than its kind. The list is read from an eventually consistent index: a
//! lease issued or changed in the last moment may be missing or shown as it was.
//!
//! `GET /v1/leases?all=true` (with `role=NAME`, `state=live|failing`, and `after=` the
//! previous page's `next`) lists every live lease, whoever holds it, with its holder and
//! its revocation attempts, to an administrator (the roles file's `admin_principals`)
//! only: anyone else gets 403. It reads the `due` index, by the time the reaper is due to
//! act on each lease, a page at a time ([`LIST_ALL_PAGE`](super::service::LIST_ALL_PAGE)
//! read per call); a page's `next` is `DUE_AT.LEASE_ID` of its last lease read. A lease
//! renewed or revoked while an administrator pages may be listed twice or not at all.
//!
//! Errors are [`ErrorBody`]s with the status of [`LeaseError::status`]; bad input is
//! always a 4xx and changes nothing.
//!
//! The event is read into [`ApiRequest`] here, at the edge, and refused unless it is a 2.0
//! event carrying the IAM authorizer's caller ARN: the function trusts that ARN, so an
//! event of another shape (a REST API, a function URL, a direct invoke without it) must
//! not be served as anybody. Only the fields used are read (lambda_http would accept every
//! event source and hide which one it got).

use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ports::Ports;
use super::service::{Issued, LeaseService, ListFilter, Renewed};
use super::{Lease, LeaseError};
use crate::contract::{
    ErrorBody, IssuedAnswer, LeaseFacts, LeasesAnswer, LeasesQuery, ListedLease, RenewAnswer, RoleInfo, RolesAnswer,
    Route, StateFilter,
};

/// The largest request body read: the API takes at most one small number.
const MAX_BODY: usize = 4096;

/// An API request as the service needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path without the stage's prefix.
    pub path: String,
    /// The query string (API Gateway's `rawQueryString`), without `?`.
    pub query: String,
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
    raw_query_string: Option<String>,
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
            query: event.raw_query_string.unwrap_or_default(),
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
    let live_leases = match e {
        LeaseError::TooManyLeases { live, .. } => Some(*live),
        _ => None,
    };
    let body = ErrorBody { code: e.code().into(), message: e.to_string(), retryable: e.retryable(), live_leases };
    // Strings, numbers and a boolean: written as JSON without fail.
    ApiResponse { status: e.status(), body: serde_json::to_value(body).ok() }
}

/// A typed answer as a response body.
fn answer(status: u16, answer: &impl serde::Serialize) -> Result<ApiResponse, LeaseError> {
    let body = serde_json::to_value(answer)
        .map_err(|_| LeaseError::Internal("the answer could not be written as JSON".into()))?;
    Ok(ApiResponse { status, body: Some(body) })
}

/// The optional `{"ttl_seconds": N}` body, [`crate::contract::TtlRequest`]: read through a
/// `Value` here so that each wrong shape gets its own message.
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

/// The route a request is, with its path's parameter (`""` for none): the path picks the
/// route, then a method other than its own is refused naming the one it takes.
fn route<'a>(method: &str, path: &'a str) -> Result<(Route, &'a str), LeaseError> {
    match Route::find(path) {
        Some((route, param)) if route.method() == method => Ok((route, param)),
        Some((route, _)) => {
            Err(LeaseError::BadRequest(format!("{method} is not served on {path}: use {}", route.method())))
        }
        None => Err(LeaseError::NotFound(format!("no such endpoint: {method} {path}"))),
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
    let (route, param) = route(&req.method, &req.path)?;
    match route {
        Route::Issue => {
            let ttl = ttl_of(body)?;
            let issued = service.issue(&req.caller, param, ttl).await?;
            answer(201, &issued_answer(&issued))
        }
        Route::Renew => {
            let ttl = ttl_of(body)?;
            let renewed = service.renew(&req.caller, param, ttl).await?;
            answer(200, &renew_answer(&renewed))
        }
        Route::Revoke => {
            no_body(body)?;
            service.revoke(&req.caller, param).await?;
            Ok(ApiResponse { status: 204, body: None })
        }
        Route::ListRoles => {
            no_body(body)?;
            let roles = service
                .roles_for(&req.caller)
                .map(|r| RoleInfo {
                    name: r.name.clone(),
                    kind: r.kind.name().into(),
                    default_ttl_seconds: r.default_ttl.as_secs(),
                    max_ttl_seconds: r.max_ttl.as_secs(),
                })
                .collect();
            answer(200, &RolesAnswer { roles })
        }
        Route::ListLeases => {
            no_body(body)?;
            let query = LeasesQuery::parse(&req.query).map_err(LeaseError::BadRequest)?;
            let filter = ListFilter { role: query.role.clone(), failing: query.state == StateFilter::Failing };
            if query.all {
                let after = query.after.as_deref().map(cursor_of).transpose()?;
                let page = service.list_all(&req.caller, &filter, after).await?;
                let leases = page.leases.iter().map(admin_listed_lease).collect();
                let next = page.next.map(|(due_at, id)| format!("{due_at}.{id}"));
                answer(200, &LeasesAnswer { leases, next })
            } else {
                let leases = service.list_filtered(&req.caller, &filter).await?.iter().map(listed_lease).collect();
                answer(200, &LeasesAnswer { leases, next: None })
            }
        }
    }
}

/// What every answer about a lease says of it. `renewable` and `revocable` are what its
/// kind allows (an STS session or an RDS token can be neither extended nor ended early),
/// told to a client (the CLI) so it does not ask for what will be refused.
fn lease_facts(lease: &Lease) -> LeaseFacts {
    let revocable = lease.credential.is_revocable();
    LeaseFacts {
        lease_id: lease.lease_id.clone(),
        role: lease.role.clone(),
        kind: lease.credential.kind().into(),
        issued_at: lease.issued_at,
        expires_at: lease.expires_at,
        renewable: revocable,
        revocable,
    }
}

fn renew_answer(renewed: &Renewed) -> RenewAnswer {
    RenewAnswer {
        lease_id: renewed.lease.lease_id.clone(),
        expires_at: renewed.lease.expires_at,
        capped: renewed.capped,
    }
}

/// A lease as `GET /v1/leases` lists it: what it is, under which name, in which state;
/// nothing of the credential, and of the grant only its kind.
fn listed_lease(lease: &Lease) -> ListedLease {
    let LeaseFacts { lease_id, role, kind, issued_at, expires_at, renewable, revocable } = lease_facts(lease);
    ListedLease {
        lease_id,
        role,
        kind,
        issued_at,
        expires_at,
        renewable,
        revocable,
        username: lease.username.clone(),
        state: lease.state.as_str().into(),
        holder: None,
        attempts: None,
        last_error: None,
        retry_at: None,
        failing: None,
    }
}

/// A lease as `GET /v1/leases?all=true` lists it to an administrator: also who holds it
/// and how its revocation goes (never the credential, nor the grant beyond its kind).
fn admin_listed_lease(lease: &Lease) -> ListedLease {
    ListedLease {
        holder: Some(lease.holder.clone()),
        attempts: Some(lease.attempts),
        last_error: lease.last_error.clone(),
        retry_at: lease.retry_at.filter(|_| lease.state == super::LeaseState::Revoking),
        failing: Some(lease.is_failing()),
        ..listed_lease(lease)
    }
}

/// The `after` of a page: `DUE_AT.LEASE_ID`, as a page's `next` writes it.
fn cursor_of(text: &str) -> Result<(u64, String), LeaseError> {
    text.split_once('.')
        .and_then(|(at, id)| Some((at.parse().ok()?, id)))
        .filter(|(_, id)| super::name::is_lease_id(id))
        .map(|(at, id)| (at, id.to_owned()))
        .ok_or_else(|| LeaseError::BadRequest("after must be a page's next, as the previous answer gave it".into()))
}

/// The body of a 201: the lease, then the credential, by kind.
fn issued_answer(issued: &Issued) -> IssuedAnswer {
    let lease = &issued.lease;
    IssuedAnswer {
        lease: lease_facts(lease),
        ttl_seconds: Some(lease.expires_at.saturating_sub(lease.issued_at)),
        server_expiry: lease.server_expiry,
        credential: issued.secret.answer(lease),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::fakes::{block_on, service, Service, CI, OPS, OTHER_CI, STRANGER};
    use crate::lease::Lease;

    #[test]
    fn routes_and_methods() {
        assert_eq!(route("POST", "/v1/credentials/ci"), Ok((Route::Issue, "ci")));
        assert_eq!(route("POST", "/v1/leases/abc/renew"), Ok((Route::Renew, "abc")));
        assert_eq!(route("DELETE", "/v1/leases/abc"), Ok((Route::Revoke, "abc")));
        assert_eq!(route("GET", "/v1/roles"), Ok((Route::ListRoles, "")));
        assert_eq!(route("GET", "/v1/leases"), Ok((Route::ListLeases, "")));
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

    /// Every route of the contract's table is served with its method, and nothing else: a
    /// path of the table with another method, or a path one step from one, is refused.
    #[test]
    fn the_router_serves_the_contract_table_and_nothing_else() {
        let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
        for route in Route::ALL {
            let path = route.path("x-1");
            for method in methods {
                match super::route(method, &path) {
                    Ok(found) => assert_eq!((method, found), (route.method(), (route, path_param(route))), "{path}"),
                    Err(e) => {
                        assert_ne!(method, route.method(), "{path}: {e}");
                        assert_eq!(e.status(), 400, "{method} {path}");
                    }
                }
            }
            for near in
                [format!("{path}/"), format!("{path}/x"), format!("/v2{}", &path[3..]), path.replace("v1", "V1")]
            {
                if let Some((other, _)) = Route::find(&near) {
                    // Another route's path (`/v1/leases` and a segment is a lease's).
                    assert_ne!(other, route, "{near}");
                    continue;
                }
                for method in methods {
                    let e = super::route(method, &near).unwrap_err();
                    assert_eq!(e.status(), 404, "{method} {near}");
                }
            }
        }
        // The kinds the contract names are the roles file's.
        use crate::contract;
        assert_eq!(
            [
                contract::KIND_DATABASE,
                contract::KIND_AWS_STS,
                contract::KIND_AWS_IAM_USER,
                contract::KIND_RDS_IAM_TOKEN
            ],
            crate::lease::kind::NAMES
        );
    }

    fn path_param(route: Route) -> &'static str {
        if route.template().contains('{') {
            "x-1"
        } else {
            ""
        }
    }

    /// The 201 of each kind, as the wire carries it: its field names in order, and read back
    /// by the contract into the same text.
    #[test]
    fn issued_answers_carry_the_documented_fields_of_their_kind() {
        block_on(async {
            let s = service(None);
            let lease = ["lease_id", "role", "kind", "issued_at", "expires_at", "renewable", "revocable"];
            let issue = ["ttl_seconds", "server_expiry"];
            let cases: [(&str, &[&str]); 4] = [
                ("ci", &["engine", "host", "port", "dbname", "tls", "username", "password"]),
                ("deploy", &["access_key_id", "secret_access_key", "session_token", "session_name", "role_arn"]),
                ("legacy", &["access_key_id", "secret_access_key", "username", "propagation_delay_seconds"]),
                ("pg-iam", &["engine", "host", "port", "region", "tls", "username", "password"]),
            ];
            for (role, credential) in cases {
                let req = ApiRequest {
                    method: "POST".into(),
                    path: Route::Issue.path(role),
                    query: String::new(),
                    body: None,
                    caller: CI.into(),
                    request_id: "r1".into(),
                };
                let response = handle(&s, &req).await;
                let body = response.body.unwrap();
                assert_eq!(response.status, 201, "{body}");
                let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
                // An STS session's expiry is STS's, when the fake reports one.
                let keys: Vec<&str> = keys.into_iter().filter(|k| *k != "expiration").collect();
                assert_eq!(keys, [&lease[..], &issue[..], credential].concat(), "{role}");
                let typed = IssuedAnswer::from_value(&body).unwrap();
                assert_eq!(serde_json::to_string(&typed).unwrap(), body.to_string(), "{role}");
            }
        });
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
            query: String::new(),
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
                query: String::new(),
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

    /// `GET /v1/leases?QUERY` as `caller`: the status and the body.
    async fn list_query(service: &Service, caller: &str, query: &str) -> (u16, Value) {
        let req = ApiRequest {
            method: "GET".into(),
            path: "/v1/leases".into(),
            query: query.into(),
            body: None,
            caller: caller.into(),
            request_id: "r1".into(),
        };
        let response = handle(service, &req).await;
        (response.status, response.body.unwrap_or(Value::Null))
    }

    #[test]
    fn only_an_administrator_lists_every_lease_with_its_holder_and_failing_revocations() {
        block_on(async {
            let s = service(None);
            let mine = s.issue(CI, "ci", None).await.unwrap().lease;
            let theirs = s.issue(OTHER_CI, "ci", Some(Duration::from_secs(1200))).await.unwrap().lease;
            let stuck = s.issue(OTHER_CI, "ci", Some(Duration::from_secs(600))).await.unwrap().lease;
            *s.io.users.fail_deletes.lock().unwrap() = true;
            assert!(s.revoke(OTHER_CI, &stuck.lease_id).await.is_err(), "the revocation fails");
            *s.io.users.fail_deletes.lock().unwrap() = false;

            for caller in [CI, OTHER_CI, STRANGER, "", "arn:aws:sts::123456789012:assumed-role/keyturn-admin-x/a"] {
                for query in ["all=true", "all=true&state=failing", "all=true&role=ci"] {
                    let (status, body) = list_query(&s, caller, query).await;
                    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{caller:?} {query}");
                }
            }
            let (status, body) = list_query(&s, OPS, "all=true").await;
            assert_eq!(status, 200, "{body}");
            let mut ids = listed_ids(&body);
            ids.sort_unstable();
            let mut want = [mine.lease_id.as_str(), theirs.lease_id.as_str(), stuck.lease_id.as_str()];
            want.sort_unstable();
            assert_eq!(ids, want);
            assert_eq!(body.get("next"), None, "one page");
            let listed = |id: &str| body["leases"].as_array().unwrap().iter().find(|l| l["lease_id"] == id).unwrap();
            let first = listed(&mine.lease_id);
            assert_eq!((first["holder"].as_str(), first["failing"].as_bool()), (Some(CI), Some(false)));
            let failing = listed(&stuck.lease_id);
            assert_eq!(
                (failing["state"].as_str(), failing["failing"].as_bool(), failing["attempts"].as_u64()),
                (Some("revoking"), Some(true), Some(1)),
                "{failing}"
            );
            assert!(failing["last_error"].is_string() && failing["retry_at"].is_u64(), "{failing}");
            let text = body.to_string();
            for secret in ["secretsmanager", "password", "readers"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }

            let (_, body) = list_query(&s, OPS, "all=true&state=failing").await;
            assert_eq!(listed_ids(&body), [stuck.lease_id.as_str()]);
            let (_, body) = list_query(&s, OPS, "all=true&role=deploy").await;
            assert_eq!(listed_ids(&body), Vec::<&str>::new());
            // Without all=true, an administrator gets its own (none), and a holder its own,
            // filtered the same way.
            assert_eq!(list_query(&s, OPS, "").await, (200, json!({"leases": []})));
            let (_, body) = list_query(&s, OTHER_CI, "state=failing").await;
            assert_eq!(listed_ids(&body), [stuck.lease_id.as_str()]);
            assert_eq!(body["leases"][0].get("holder"), None, "the holder's view is unchanged");
            for bad in ["all=1", "all=true&all=true", "all=true&after=x", "after=1.abc", "state=revoked", "x=y"] {
                assert_eq!(list_query(&s, OPS, bad).await.0, 400, "{bad}");
            }
        });
    }

    #[test]
    fn every_live_lease_is_listed_a_page_at_a_time() {
        use crate::lease::service::LIST_ALL_PAGE;
        use crate::lease::store::LeaseStore as _;
        block_on(async {
            let s = service(None);
            let total = LIST_ALL_PAGE + 7;
            for i in 0..total {
                let id = format!("{i:020}");
                let lease = Lease {
                    role: if i % 2 == 0 { "ci" } else { "deploy" }.into(),
                    ..Lease::example(&id, 5000 + (i as u64 % 13))
                };
                s.store().put_new(&lease, None).await.unwrap();
            }
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            let mut pages = 0;
            loop {
                let query = match &after {
                    Some(next) => format!("all=true&role=ci&after={next}"),
                    None => "all=true&role=ci".into(),
                };
                let (status, body) = list_query(&s, OPS, &query).await;
                assert_eq!(status, 200, "{body}");
                pages += 1;
                seen.extend(listed_ids(&body).into_iter().map(str::to_owned));
                match body["next"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break,
                }
            }
            assert_eq!(pages, 2);
            let mut want: Vec<String> = (0..total).filter(|i| i % 2 == 0).map(|i| format!("{i:020}")).collect();
            seen.sort();
            want.sort();
            assert_eq!(seen, want, "each of role ci's leases once");
        });
    }

    #[test]
    fn every_ttl_body_the_contract_writes_is_read_as_that_ttl() {
        use crate::contract::TtlRequest;
        for ttl in [None, Some(0), Some(60), Some(u64::MAX)] {
            let text = serde_json::to_string(&TtlRequest { ttl_seconds: ttl }).unwrap();
            assert_eq!(ttl_of(Some(&text)), Ok(ttl.map(Duration::from_secs)), "{text}");
        }
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
