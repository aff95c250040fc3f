//! The credentials API's contract, typed once: its routes ([`Route`]), the request body
//! ([`TtlRequest`]) and every answer, with the field names and types on the wire. The
//! issuer ([`crate::lease`]'s HTTP API) writes its answers from these types, the CLI reads
//! them into the same types, and the docs and the SAM template are checked against
//! [`Route::ALL`].
//!
//! This module imports nothing else of keyturn and needs only serde's crates (serde,
//! serde_json, secrecy's serde support, serde_path_to_error): no AWS SDK, no driver, no
//! runtime. It is compiled in every feature set, the CLI's (none) included.
//!
//! | route | body | success |
//! |---|---|---|
//! | `POST /v1/credentials/{role}` | [`TtlRequest`], optional | 201, [`IssuedAnswer`] |
//! | `POST /v1/leases/{lease_id}/renew` | [`TtlRequest`], optional | 200, [`RenewAnswer`] |
//! | `DELETE /v1/leases/{lease_id}` | none | 204, no body |
//! | `GET /v1/roles` | none | 200, [`RolesAnswer`] |
//! | `GET /v1/leases` | none; query [`LeasesQuery`] | 200, [`LeasesAnswer`] |
//!
//! A refusal is an [`ErrorBody`]. Answers are read without `deny_unknown_fields`: a client
//! keeps working when a newer issuer adds a field. A few fields a client never needed are
//! read with a default when absent (an older issuer's answer); each says so. Secrets
//! (passwords, secret keys, session tokens, RDS tokens) are [`SecretString`]s, written
//! with [`expose`]: a `Debug` print of an answer shows none. [`read`] reads an answer and
//! names the field that is missing or mistyped, never its value.

use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A lease's kind, as roles files and answers name it.
pub const KIND_DATABASE: &str = "database";
pub const KIND_AWS_STS: &str = "aws-sts";
pub const KIND_AWS_IAM_USER: &str = "aws-iam-user";
pub const KIND_RDS_IAM_TOKEN: &str = "rds-iam-token";

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `POST /v1/credentials/{role}`: new credentials of a role, and their lease.
    Issue,
    /// `POST /v1/leases/{lease_id}/renew`: a later expiry.
    Renew,
    /// `DELETE /v1/leases/{lease_id}`: the lease ended now (204 also for one already ended).
    Revoke,
    /// `GET /v1/roles`: the roles the caller may request.
    ListRoles,
    /// `GET /v1/leases`: the caller's own live leases; with `?all=true`, every live lease
    /// (administrators only), a page at a time ([`LeasesQuery`]).
    ListLeases,
}

impl Route {
    /// Every route, in the order the docs list them.
    pub const ALL: [Self; 5] = [Self::Issue, Self::Renew, Self::Revoke, Self::ListRoles, Self::ListLeases];

    /// The HTTP method.
    pub const fn method(self) -> &'static str {
        match self {
            Self::Issue | Self::Renew => "POST",
            Self::Revoke => "DELETE",
            Self::ListRoles | Self::ListLeases => "GET",
        }
    }

    /// The path, its one parameter (if any) written `{name}` as API Gateway's routes are.
    pub const fn template(self) -> &'static str {
        match self {
            Self::Issue => "/v1/credentials/{role}",
            Self::Renew => "/v1/leases/{lease_id}/renew",
            Self::Revoke => "/v1/leases/{lease_id}",
            Self::ListRoles => "/v1/roles",
            Self::ListLeases => "/v1/leases",
        }
    }

    /// API Gateway's route key: `METHOD /path`.
    pub fn key(self) -> String {
        format!("{} {}", self.method(), self.template())
    }

    /// The path with `param` as its parameter (ignored by a route without one). `param` is
    /// put in as it is: the caller checks it is one segment needing no encoding.
    pub fn path(self, param: &str) -> String {
        self.template()
            .split('/')
            .map(|segment| if segment.starts_with('{') { param } else { segment })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The route whose template `path` fits, whatever the method, with the parameter's
    /// value (`""` for a route without one). A parameter is one non-empty segment.
    pub fn find(path: &str) -> Option<(Self, &str)> {
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        Self::ALL.into_iter().find_map(|route| {
            let template: Vec<&str> = route.template()[1..].split('/').collect();
            if template.len() != segments.len() {
                return None;
            }
            let mut param = "";
            for (want, got) in template.iter().zip(&segments) {
                if want.starts_with('{') {
                    if got.is_empty() {
                        return None;
                    }
                    param = got;
                } else if want != got {
                    return None;
                }
            }
            Some((route, param))
        })
    }
}

/// The optional body of issue and renew: `{"ttl_seconds": N}`; absent, the role's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtlRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A refusal: `{code, message, retryable}`, and the role's live leases with
/// `too_many_leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_leases: Option<u64>,
}

/// What every answer about one lease says of it. `renewable` and `revocable` are what its
/// kind allows (an STS session or an RDS token can be neither extended nor ended early).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseFacts {
    pub lease_id: String,
    /// Absent from an older issuer's answer: read as empty.
    #[serde(default)]
    pub role: String,
    /// One of the `KIND_*` names; another is a kind newer than this reader.
    pub kind: String,
    /// Absent from an older issuer's answer: read as 0.
    #[serde(default)]
    pub issued_at: u64,
    pub expires_at: u64,
    /// Absent from an older issuer's answer: read as false (nothing asked of it).
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub revocable: bool,
}

/// The 201 of `POST /v1/credentials/{role}`: the lease, then the credential by kind, in
/// one flat object (`lease_id`, ..., `password`).
#[derive(Debug, Serialize)]
pub struct IssuedAnswer {
    #[serde(flatten)]
    pub lease: LeaseFacts,
    /// `expires_at - issued_at`; the TTL to ask for again at renewal. Absent from an older
    /// issuer's answer: none (the role's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Whether the server itself refuses the credential after `expires_at`.
    pub server_expiry: bool,
    #[serde(flatten)]
    pub credential: IssuedCredential,
}

/// The credential of an [`IssuedAnswer`]: which one is told by the lease's `kind`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum IssuedCredential {
    /// `database`: a database user's login.
    Database(DatabaseLogin),
    /// `rds-iam-token`: an RDS IAM authentication token, the password of `username`.
    RdsToken(RdsTokenLogin),
    /// `aws-sts` (with a session token) and `aws-iam-user` (without): an access key.
    Aws(AwsKeys),
}

/// A database user's login (kind `database`).
#[derive(Debug, Serialize, Deserialize)]
pub struct DatabaseLogin {
    /// `postgres`, `mysql` or `mariadb`.
    pub engine: String,
    pub host: String,
    pub port: u16,
    /// `null` when the admin secret names none.
    #[serde(default)]
    pub dbname: Option<String>,
    /// The issuer reaches the server over verified TLS, so clients must too. Absent from
    /// an older issuer's answer: true.
    #[serde(default = "yes")]
    pub tls: bool,
    pub username: String,
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
}

/// An RDS IAM token login (kind `rds-iam-token`): always over TLS.
#[derive(Debug, Serialize, Deserialize)]
pub struct RdsTokenLogin {
    pub engine: String,
    pub host: String,
    pub port: u16,
    /// The region the token was signed for. Absent from an older issuer's answer: empty.
    #[serde(default)]
    pub region: String,
    #[serde(default = "yes")]
    pub tls: bool,
    pub username: String,
    /// The token.
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
}

/// An access key: an STS session's (`session_token`, `session_name`, `role_arn`) or an IAM
/// user's (`username`, `propagation_delay_seconds`).
#[derive(Debug, Serialize, Deserialize)]
pub struct AwsKeys {
    pub access_key_id: String,
    #[serde(serialize_with = "expose")]
    pub secret_access_key: SecretString,
    #[serde(default, serialize_with = "expose_some", skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// The IAM user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The session's expiry as STS reports it (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    /// How long IAM may take to accept a new user's key everywhere. Advice only: a value
    /// that is not a whole number of seconds is read as none.
    #[serde(default, deserialize_with = "lenient_u64", skip_serializing_if = "Option::is_none")]
    pub propagation_delay_seconds: Option<u64>,
}

/// The 200 of `POST /v1/leases/{lease_id}/renew`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewAnswer {
    pub lease_id: String,
    pub expires_at: u64,
    /// The role's `max_ttl` from issue cut the renewal short: renewing again gains nothing.
    pub capped: bool,
}

/// The 200 of `GET /v1/roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolesAnswer {
    pub roles: Vec<RoleInfo>,
}

/// A role the caller may request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleInfo {
    pub name: String,
    pub kind: String,
    pub default_ttl_seconds: u64,
    pub max_ttl_seconds: u64,
}

/// The 200 of `GET /v1/leases`: the caller's own, the earliest expiry first; with
/// `all=true`, every live lease by the time the reaper is due to act on it (its expiry, or
/// its next revocation attempt), a page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasesAnswer {
    pub leases: Vec<ListedLease>,
    /// With `all=true`, when more leases may follow: the `after` of the next page's query.
    /// A page may hold fewer leases than asked for (even none) and still have a next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Which live leases `GET /v1/leases` lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StateFilter {
    /// Every live lease: `active`, or `revoking` (its revocation started and has not
    /// succeeded yet).
    #[default]
    Live,
    /// Those whose revocation was attempted and failed: `revoking` with a `last_error`,
    /// retried by every reaper run until it succeeds. Their credential may still work.
    Failing,
}

impl StateFilter {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Failing => "failing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Live, Self::Failing].into_iter().find(|s| s.as_str() == text)
    }
}

/// The query of `GET /v1/leases`: `all=true` (every live lease, for an administrator
/// named in the roles file's `admin_principals`; anyone else is refused), `role=NAME` and
/// `state=live|failing` (filters), `after=CURSOR` (with `all=true`: the previous page's
/// `next`). Values are letters, digits, `.`, `-` and `_` only, so that the query needs no
/// encoding and reads the same to the signer, API Gateway and the issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeasesQuery {
    pub all: bool,
    pub role: Option<String>,
    pub state: StateFilter,
    pub after: Option<String>,
}

/// A query value's characters.
fn query_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl LeasesQuery {
    /// The query string, without `?` (empty for the caller's own leases, unfiltered). A
    /// value that is not query-safe is an error naming the key.
    pub fn to_query(&self) -> Result<String, String> {
        let mut pairs = Vec::new();
        if self.all {
            pairs.push("all=true".to_owned());
        }
        for (key, value) in [("role", self.role.as_deref()), ("after", self.after.as_deref())] {
            match value {
                Some(v) if query_safe(v) => pairs.push(format!("{key}={v}")),
                Some(_) => return Err(format!("{key} may hold only letters, digits, '.', '-' and '_'")),
                None => {}
            }
        }
        if self.state != StateFilter::Live {
            pairs.push(format!("state={}", self.state.as_str()));
        }
        Ok(pairs.join("&"))
    }

    /// Reads a query string (API Gateway's `rawQueryString`): unknown keys, a key given
    /// twice, and values of other characters are refused with why.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut seen = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if seen.contains(&key) {
                return Err(format!("{key:?} is given twice"));
            }
            if !query_safe(value) {
                return Err(format!("{key:?} must be letters, digits, '.', '-' or '_'"));
            }
            match key {
                "all" => {
                    parsed.all = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err("all must be true or false".into()),
                    }
                }
                "role" => parsed.role = Some(value.to_owned()),
                "state" => {
                    parsed.state = StateFilter::parse(value).ok_or("state must be live or failing")?;
                }
                "after" => parsed.after = Some(value.to_owned()),
                _ => return Err(format!("{:?} is not a parameter of GET /v1/leases (all, role, state, after)", key)),
            }
            seen.push(key);
        }
        if parsed.after.is_some() && !parsed.all {
            return Err("after pages through all=true only".into());
        }
        Ok(parsed)
    }
}

/// A lease as `GET /v1/leases` lists it: [`LeaseFacts`] with the name it authenticates as
/// and its state; nothing of the credential. The fields are written out here, not
/// flattened, so that [`read`] can name the one at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedLease {
    pub lease_id: String,
    pub role: String,
    pub kind: String,
    /// Absent from an older issuer's answer: read as 0.
    #[serde(default)]
    pub issued_at: u64,
    pub expires_at: u64,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default)]
    pub revocable: bool,
    pub username: String,
    /// `active` or `revoking`.
    pub state: String,
    /// With `all=true` only (an administrator's view): who holds it (the caller's ARN it
    /// was issued to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// With `all=true` only: revocation attempts so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// With `all=true` only: the last revocation failure, while revocation has not
    /// succeeded (absent when none failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// With `all=true` only: when the reaper next tries to revoke it (Unix seconds), while
    /// `revoking`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    /// With `all=true` only: whether its revocation was attempted and failed
    /// ([`StateFilter::Failing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<bool>,
}

/// Why an answer could not be read. The message names the field, never its value (which
/// may be a secret sent in the wrong place).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("the API's answer is not a JSON object")]
    NotAnObject,
    /// A field missing or of the wrong type, by its path (`port`, `leases[0].state`).
    #[error("the API's answer has no valid {0:?}")]
    Field(String),
    #[error("the API's answer is of kind {0:?}, which this version of keyturn does not know")]
    UnknownKind(String),
}

/// Reads `value` as `T`, naming the field at fault. serde's own messages are not kept:
/// for a value of the wrong type they quote it.
pub fn read<T: DeserializeOwned>(value: &Value) -> Result<T, ReadError> {
    if !value.is_object() {
        return Err(ReadError::NotAnObject);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // A missing field is reported at its parent's path; serde's message names it
        // (and holds nothing else).
        let message = e.inner().to_string();
        let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        ReadError::Field(match missing {
            Some(field) if path == "." => field.to_owned(),
            Some(field) => format!("{path}.{field}"),
            None => path,
        })
    })
}

impl IssuedAnswer {
    /// Reads an issue's 201 body: the lease, then the credential its `kind` names.
    pub fn from_value(value: &Value) -> Result<Self, ReadError> {
        #[derive(Deserialize)]
        struct Issue {
            #[serde(default)]
            ttl_seconds: Option<u64>,
            #[serde(default)]
            server_expiry: bool,
        }
        let lease: LeaseFacts = read(value)?;
        let issue: Issue = read(value)?;
        let credential = match lease.kind.as_str() {
            KIND_DATABASE => IssuedCredential::Database(read(value)?),
            KIND_RDS_IAM_TOKEN => IssuedCredential::RdsToken(read(value)?),
            KIND_AWS_STS | KIND_AWS_IAM_USER => IssuedCredential::Aws(read(value)?),
            other => return Err(ReadError::UnknownKind(other.to_owned())),
        };
        Ok(Self { lease, ttl_seconds: issue.ttl_seconds, server_expiry: issue.server_expiry, credential })
    }
}

impl<'de> Deserialize<'de> for IssuedAnswer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(D::Error::custom)
    }
}

/// Writes a secret as the string it is: the one place an answer's secret leaves its
/// [`SecretString`].
pub fn expose<S: Serializer>(secret: &SecretString, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

fn expose_some<S: Serializer>(secret: &Option<SecretString>, serializer: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => expose(secret, serializer),
        None => serializer.serialize_none(),
    }
}

fn yes() -> bool {
    true
}

fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_u64())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn database() -> Value {
        json!({
            "lease_id": "abcdefghij0123456789", "role": "ci", "kind": "database",
            "issued_at": 1000, "expires_at": 1900, "renewable": true, "revocable": true,
            "ttl_seconds": 900, "server_expiry": true,
            "engine": "postgres", "host": "db.example.com", "port": 5432, "dbname": "app", "tls": true,
            "username": "kt_ci_abc", "password": "pw-secret",
        })
    }

    fn sts() -> Value {
        json!({
            "lease_id": "l2", "role": "deploy", "kind": "aws-sts",
            "issued_at": 1000, "expires_at": 1900, "renewable": false, "revocable": false,
            "ttl_seconds": 900, "server_expiry": true,
            "access_key_id": "ASIA1", "secret_access_key": "sk-secret", "session_token": "st-secret",
            "session_name": "kt_deploy_x", "role_arn": "arn:aws:iam::123456789012:role/deploy", "expiration": 1900,
        })
    }

    fn iam_user() -> Value {
        json!({
            "lease_id": "l3", "role": "legacy", "kind": "aws-iam-user",
            "issued_at": 1000, "expires_at": 1900, "renewable": true, "revocable": true,
            "ttl_seconds": 900, "server_expiry": true,
            "access_key_id": "AKIA1", "secret_access_key": "sk-secret", "username": "kt_legacy_x",
            "propagation_delay_seconds": 10,
        })
    }

    fn rds() -> Value {
        json!({
            "lease_id": "l4", "role": "reader", "kind": "rds-iam-token",
            "issued_at": 1000, "expires_at": 1900, "renewable": false, "revocable": false,
            "ttl_seconds": 900, "server_expiry": true,
            "engine": "mysql", "host": "db.example.com", "port": 3306, "region": "eu-west-1", "tls": true,
            "username": "app", "password": "token-secret",
        })
    }

    /// The JSON `value` re-written from `T`, as text, so the fields' order counts too.
    fn round_trip<T: DeserializeOwned + Serialize>(value: &Value) -> String {
        let typed: T = read(value).unwrap_or_else(|e| panic!("{e}: {value}"));
        serde_json::to_string(&typed).unwrap()
    }

    #[test]
    fn every_issued_kind_round_trips_with_the_documented_fields() {
        let mut db_without_name = database();
        db_without_name["dbname"] = Value::Null;
        for body in [database(), db_without_name, sts(), iam_user(), rds()] {
            assert_eq!(round_trip::<IssuedAnswer>(&body), body.to_string());
        }
        let issued = IssuedAnswer::from_value(&database()).unwrap();
        assert!(matches!(issued.credential, IssuedCredential::Database(DatabaseLogin { port: 5432, .. })));
        assert_eq!(issued.lease.lease_id, "abcdefghij0123456789");
    }

    #[test]
    fn the_other_answers_round_trip_with_the_documented_fields() {
        let renew = json!({"lease_id": "l1", "expires_at": 2000, "capped": false});
        assert_eq!(round_trip::<RenewAnswer>(&renew), renew.to_string());
        let roles = json!({"roles": [
            {"name": "ci", "kind": "database", "default_ttl_seconds": 900, "max_ttl_seconds": 3600},
        ]});
        assert_eq!(round_trip::<RolesAnswer>(&roles), roles.to_string());
        let leases = json!({"leases": [{
            "lease_id": "l1", "role": "ci", "kind": "database", "issued_at": 1000, "expires_at": 1900,
            "renewable": true, "revocable": true, "username": "kt_ci_x", "state": "active",
        }]});
        assert_eq!(round_trip::<LeasesAnswer>(&leases), leases.to_string());
        let all = json!({"leases": [{
            "lease_id": "l1", "role": "ci", "kind": "database", "issued_at": 1000, "expires_at": 1900,
            "renewable": true, "revocable": true, "username": "kt_ci_x", "state": "revoking",
            "holder": "arn:aws:sts::123456789012:assumed-role/ci/job", "attempts": 2,
            "last_error": "the database refused", "retry_at": 2100, "failing": true,
        }], "next": "1900.l1"});
        assert_eq!(round_trip::<LeasesAnswer>(&all), all.to_string());
        let error = json!({"code": "too_many_leases", "message": "no", "retryable": false, "live_leases": 3});
        assert_eq!(round_trip::<ErrorBody>(&error), error.to_string());
        let error = json!({"code": "forbidden", "message": "no", "retryable": false});
        assert_eq!(round_trip::<ErrorBody>(&error), error.to_string());
        assert_eq!(serde_json::to_string(&TtlRequest { ttl_seconds: Some(60) }).unwrap(), r#"{"ttl_seconds":60}"#);
        assert_eq!(serde_json::to_string(&TtlRequest { ttl_seconds: None }).unwrap(), "{}");
    }

    #[test]
    fn a_debug_print_of_an_answer_holds_no_secret() {
        for body in [database(), sts(), iam_user(), rds()] {
            let printed = format!("{:?}", IssuedAnswer::from_value(&body).unwrap());
            for secret in ["pw-secret", "sk-secret", "st-secret", "token-secret"] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
        }
    }

    #[test]
    fn a_newer_issuers_field_is_ignored_and_a_bad_field_named_without_its_value() {
        let mut body = database();
        body["new_field"] = json!({"x": 1});
        assert!(IssuedAnswer::from_value(&body).is_ok());

        let mut body = database();
        body["port"] = json!("hunter2");
        assert_eq!(IssuedAnswer::from_value(&body).unwrap_err(), ReadError::Field("port".into()));
        let mut body = database();
        body.as_object_mut().unwrap().remove("password");
        assert_eq!(IssuedAnswer::from_value(&body).unwrap_err(), ReadError::Field("password".into()));
        let mut body = sts();
        body["secret_access_key"] = json!(12345);
        let e = IssuedAnswer::from_value(&body).unwrap_err();
        assert_eq!(e, ReadError::Field("secret_access_key".into()));
        assert!(!e.to_string().contains("12345"), "{e}");
        let mut body = database();
        body["kind"] = json!("ldap");
        assert_eq!(IssuedAnswer::from_value(&body).unwrap_err(), ReadError::UnknownKind("ldap".into()));
        assert_eq!(IssuedAnswer::from_value(&json!([1])).unwrap_err(), ReadError::NotAnObject);

        let leases = json!({"leases": [{"lease_id": "l1", "role": "ci", "kind": "database", "expires_at": "soon",
                                        "username": "u", "state": "active"}]});
        assert_eq!(read::<LeasesAnswer>(&leases).unwrap_err(), ReadError::Field("leases[0].expires_at".into()));
        let leases = json!({"leases": [{"lease_id": "l1"}]});
        assert_eq!(read::<LeasesAnswer>(&leases).unwrap_err(), ReadError::Field("leases[0].role".into()));
        // Through serde's own entry point too, with the same message.
        let e = serde_json::from_value::<IssuedAnswer>(json!({"kind": "database"})).unwrap_err();
        assert_eq!(e.to_string(), ReadError::Field("lease_id".into()).to_string());
    }

    #[test]
    fn an_older_issuers_answer_reads_with_the_documented_defaults() {
        let mut body = database();
        let map = body.as_object_mut().unwrap();
        for field in ["role", "issued_at", "renewable", "revocable", "ttl_seconds", "server_expiry", "tls", "dbname"] {
            map.remove(field);
        }
        let issued = IssuedAnswer::from_value(&body).unwrap();
        assert_eq!((issued.lease.renewable, issued.ttl_seconds), (false, None));
        let IssuedCredential::Database(login) = issued.credential else { panic!("a database login") };
        assert_eq!((login.tls, login.dbname), (true, None));
        let mut body = iam_user();
        body["propagation_delay_seconds"] = json!("10");
        let IssuedCredential::Aws(keys) = IssuedAnswer::from_value(&body).unwrap().credential else { panic!() };
        assert_eq!(keys.propagation_delay_seconds, None);
    }

    #[test]
    fn the_leases_query_is_written_and_read_back_and_anything_else_refused() {
        let mine = LeasesQuery::default();
        assert_eq!(mine.to_query().unwrap(), "");
        assert_eq!(LeasesQuery::parse("").unwrap(), mine);
        let all = LeasesQuery {
            all: true,
            role: Some("ci-reader".into()),
            state: StateFilter::Failing,
            after: Some("1900.abc".into()),
        };
        let text = all.to_query().unwrap();
        assert_eq!(text, "all=true&role=ci-reader&after=1900.abc&state=failing");
        assert_eq!(LeasesQuery::parse(&text).unwrap(), all);
        assert_eq!(LeasesQuery::parse("state=live&all=false").unwrap(), mine);
        for bad in [
            "all=yes",
            "all",
            "all=true&all=true",
            "role=",
            "role=a%2Fb",
            "role=a/b",
            "role=a+b",
            "state=revoked",
            "admin=true",
            "after=1.x",
            "all=true&after=1.x&after=2.y",
        ] {
            assert!(LeasesQuery::parse(bad).is_err(), "{bad}");
        }
        let odd = LeasesQuery { role: Some("a&all=true".into()), ..LeasesQuery::default() };
        assert!(odd.to_query().is_err(), "a value cannot add a parameter");
    }

    #[test]
    fn the_route_table_finds_and_fills_its_paths() {
        assert_eq!(Route::find("/v1/credentials/ci"), Some((Route::Issue, "ci")));
        assert_eq!(Route::find("/v1/leases/abc/renew"), Some((Route::Renew, "abc")));
        assert_eq!(Route::find("/v1/leases/abc"), Some((Route::Revoke, "abc")));
        assert_eq!(Route::find("/v1/roles"), Some((Route::ListRoles, "")));
        assert_eq!(Route::find("/v1/leases"), Some((Route::ListLeases, "")));
        for none in ["/v1/leases/", "/v1/credentials/", "/v1/credentials/ci/x", "/v2/roles", "/v1/lease", "/", ""] {
            assert_eq!(Route::find(none), None, "{none}");
        }
        for route in Route::ALL {
            assert_eq!(Route::find(&route.path("x1")).map(|(r, _)| r), Some(route), "{route:?}");
            assert_eq!(route.key(), format!("{} {}", route.method(), route.template()));
        }
        assert_eq!(Route::Renew.path("abc"), "/v1/leases/abc/renew");
        assert_eq!(Route::ListLeases.path("ignored"), "/v1/leases");
    }
}
