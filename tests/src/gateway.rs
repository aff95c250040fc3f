//! A local stand-in for API Gateway's IAM authorization in front of the issuer, for the
//! CLI's tests (the real binary under cargo-lambda's Runtime API emulator, [`lambda`]) and
//! its bench (the handler in process, [`in_process`], so that the figure is the CLI's and
//! the issuer's work, not the emulator's): it verifies each request's SigV4 signature (service `execute-api`, the
//! gateway's region, a date within five minutes) by recomputing it with the secret of the
//! access key it names, refuses an unsigned or wrongly signed request with 403 and
//! `{"message": ...}` as API Gateway does, and hands the issuer a payload 2.0 event with
//! the key's identity in `requestContext.authorizer.iam.userArn`. A function that fails is
//! a 502, as API Gateway answers it.
//!
//! It speaks just enough HTTP/1.1 for one request per connection with a `Content-Length`
//! body, which is what the CLI sends ([`serve`], which the CLI's tests also use alone, for
//! an API whose answers they make up: [`fake_api`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use std::future::Future;
use std::pin::Pin;

use keyturn::lease::api::{self, ApiRequest};
use keyturn::lease::service::LeaseService;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::lambda::Emulator;

/// The region the gateway is in.
pub const REGION: &str = "us-east-1";
/// How far a request's date may be from the gateway's clock.
const SKEW: Duration = Duration::from_secs(300);

/// A running gateway; it stops with the runtime that started it.
pub struct Gateway {
    pub url: String,
}

/// What the gateway hands a verified request's 2.0 event to: the 2.0 response comes back.
pub type Upstream = Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Value> + Send>> + Send + Sync>;

/// `function` running under `emulator` (kept running as long as the gateway; an
/// `Arc<Emulator>` to invoke its other functions besides, as the demo does the reaper).
pub fn lambda(emulator: impl Into<Arc<Emulator>>, function: &'static str) -> Upstream {
    let emulator = emulator.into();
    Arc::new(move |event| {
        let emulator = emulator.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || emulator.invoke_json(function, &event))
                .await
                .unwrap_or_else(|_| json!({"statusCode": 502, "body": r#"{"message":"Internal Server Error"}"#}))
        })
    })
}

/// The issuer's handler, in process.
pub fn in_process<P: keyturn::lease::ports::Ports>(service: Arc<LeaseService<P>>) -> Upstream {
    Arc::new(move |event| {
        let service = service.clone();
        Box::pin(async move {
            let response = match ApiRequest::from_event(event) {
                Ok(request) => api::handle(&service, &request).await,
                Err(refused) => refused,
            };
            response.into_event()
        })
    })
}

/// `keyturn` signing with `key` (id, secret) to the gateway at `url`, seeing only the AWS
/// settings given here.
pub fn cli(url: &str, key: (&str, &str)) -> std::process::Command {
    let mut command = std::process::Command::new(crate::lambda::function_binary("keyturn"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYTURN_API_URL", url)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// Access key id to (secret, the caller ARN API Gateway would report for it).
pub type Keys = HashMap<String, (String, String)>;

/// Starts a gateway that knows `keys` in front of `upstream`.
pub async fn start(upstream: Upstream, keys: Keys) -> Gateway {
    let keys = Arc::new(keys);
    let url = serve(Arc::new(move |request: Request| {
        let (upstream, keys) = (upstream.clone(), keys.clone());
        Box::pin(async move {
            match verify(&request, &keys) {
                Err(message) => (403, json!({ "message": message })),
                Ok(caller) => {
                    let body = (!request.body.is_empty()).then_some(request.body.as_str());
                    let event = crate::apigw::request(&request.method, &request.path, body, &caller);
                    crate::apigw::response(&upstream(event).await)
                }
            }
        })
    }))
    .await;
    Gateway { url }
}

/// An HTTP request as [`serve`] read it; header names in lower case.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What answers a request: a status and a JSON body (none for `Null`).
pub type Handler = Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = (u16, Value)> + Send>> + Send + Sync>;

/// Serves `handler` on a free loopback port until the runtime stops; the URL. A request
/// that cannot be read is answered 400.
pub async fn serve(handler: Handler) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("the bound address"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move { answer(stream, &handler).await });
        }
    });
    url
}

/// A made-up API for the CLI's tests ([`fake_api`]): its URL and the requests it got, as
/// `METHOD PATH`.
pub struct FakeApi {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    /// The requests so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Starts an API that answers each request with `answer(method, path)` (a status and a
/// JSON body, none for `Null`), a POST after `delay`, checking no signature.
pub async fn fake_api(delay: Duration, answer: impl Fn(&str, &str) -> (u16, Value) + Send + Sync + 'static) -> FakeApi {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let answer = Arc::new(answer);
    let url = serve(Arc::new(move |request: Request| {
        let (seen, answer) = (seen.clone(), answer.clone());
        Box::pin(async move {
            seen.lock().unwrap().push(format!("{} {}", request.method, request.path));
            if request.method == "POST" {
                tokio::time::sleep(delay).await;
            }
            answer(&request.method, &request.path)
        })
    }))
    .await;
    FakeApi { url, requests }
}

/// A [`fake_api`] that issues `issued` (201) after `delay` and revokes (204) whatever it is
/// asked to.
pub async fn issuing(delay: Duration, issued: Value) -> FakeApi {
    fake_api(delay, move |method, path| match (method, path) {
        ("POST", p) if p.starts_with("/v1/credentials/") => (201, issued.clone()),
        ("DELETE", _) => (204, Value::Null),
        _ => (404, json!({"code": "not_found", "message": "no"})),
    })
    .await
}

async fn answer(mut stream: TcpStream, handler: &Handler) {
    let (status, body) = match read(&mut stream).await {
        None => (400, json!({"message": "Bad Request"})),
        Some(request) => handler(request).await,
    };
    let body = if body.is_null() { String::new() } else { body.to_string() };
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
}

async fn read(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 65_536 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(Some(0), |(_, v)| v.parse().ok())?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request { method, path, headers, body: String::from_utf8(body).ok()? })
}

/// The caller's ARN if the request is signed by a known key, else why not.
fn verify(request: &Request, keys: &Keys) -> Result<String, String> {
    let missing = || "Missing Authentication Token".to_owned();
    let authorization = request.header("authorization").ok_or_else(missing)?;
    let fields = authorization.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(missing)?;
    let field = |name: &str| {
        fields.split(", ").find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('='))).ok_or_else(missing)
    };
    let (credential, signature) = (field("Credential")?, field("Signature")?);
    let mut scope = credential.split('/');
    let key_id = scope.next().unwrap_or_default();
    let (_date, region, service) = (scope.next(), scope.next(), scope.next());
    if region != Some(REGION) || service != Some("execute-api") {
        return Err(format!("Credential should be scoped to a valid region and service ({credential})"));
    }
    let (secret, arn) =
        keys.get(key_id).ok_or_else(|| "The security token included in the request is invalid.".to_owned())?;
    let date = request.header("x-amz-date").and_then(parse_amz_date).ok_or_else(missing)?;
    let now = SystemTime::now();
    let skew = now.duration_since(date).unwrap_or_else(|e| e.duration());
    if skew > SKEW {
        return Err("Signature expired".into());
    }
    // Recompute with the same signer, the same time and the headers the client signed
    // (host, the date and the token are the signer's own to add).
    let token = request.header("x-amz-security-token").map(str::to_owned);
    let identity = Credentials::new(key_id, secret, token, None, "gateway").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("execute-api")
        .time(date)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signed: Vec<&str> = field("SignedHeaders")?.split(';').collect();
    let headers = request
        .headers
        .iter()
        .filter(|(n, _)| {
            signed.contains(&n.as_str()) && !["host", "x-amz-date", "x-amz-security-token"].contains(&n.as_str())
        })
        .map(|(n, v)| (n.as_str(), v.as_str()));
    let url = format!("http://{}{}", request.header("host").ok_or_else(missing)?, request.path);
    let signable = SignableRequest::new(&request.method, url, headers, SignableBody::Bytes(request.body.as_bytes()))
        .map_err(|e| e.to_string())?;
    let (_, expected) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    if expected != signature {
        return Err("The request signature we calculated does not match the signature you provided.".into());
    }
    Ok(arn.clone())
}

/// `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let digits = |r: std::ops::Range<usize>| text.get(r)?.parse::<u64>().ok();
    if text.len() != 16 || text.get(8..9) != Some("T") || !text.ends_with('Z') {
        return None;
    }
    let (y, m, d) = (digits(0..4)? as i64, digits(4..6)? as i64, digits(6..8)? as i64);
    let (hh, mm, ss) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + hh * 3600 + mm * 60 + ss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse_to_unix_time() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(UNIX_EPOCH));
        assert_eq!(parse_amz_date("20240826T220000Z"), Some(UNIX_EPOCH + Duration::from_secs(1_724_709_600)));
        assert_eq!(parse_amz_date("2024-08-26T22:00"), None);
    }

    #[test]
    fn unknown_keys_and_bad_headers_are_refused() {
        let request = |auth: &str| Request {
            method: "GET".into(),
            path: "/v1/roles".into(),
            headers: vec![("authorization".into(), auth.into()), ("host".into(), "h".into())],
            body: String::new(),
        };
        let keys = Keys::from([("AKID".into(), ("s".into(), "arn".into()))]);
        assert!(verify(&request(""), &keys).unwrap_err().contains("Missing"));
        let other = "AWS4-HMAC-SHA256 Credential=OTHER/20240826/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00";
        assert!(verify(&request(other), &keys).unwrap_err().contains("security token"));
    }
}
