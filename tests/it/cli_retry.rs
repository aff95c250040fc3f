//! The `keyturn` binary against a local API that refuses as API Gateway and the issuer do
//! under load (429 throttling, 503 unavailable, with or without `Retry-After`) a given
//! number of times: the CLI sends the request again with a jittered, bounded backoff,
//! says so once, and succeeds; or gives up after its bound with an error naming the
//! status; and never retries a refusal the issuer marks final. Also the region check that
//! needs no server. No harness service is used.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyturn_tests::gateway;
use serde_json::{json, Value};

/// One scripted answer: status, extra headers, JSON body (none for `Null`).
type Answer = (u16, Vec<(&'static str, String)>, Value);

/// A loopback HTTP server that answers its requests with `script`, in order, then with the
/// last one again; its URL and the requests it got (`METHOD PATH`).
fn scripted(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for (index, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            record.lock().unwrap().push(first.split(' ').take(2).collect::<Vec<_>>().join(" "));
            let (status, headers, body) = &script[index.min(script.len() - 1)];
            let body = if body.is_null() { String::new() } else { body.to_string() };
            let mut head = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()));
            let _ = stream.write_all(format!("{head}{body}").as_bytes());
        }
    });
    (url, seen)
}

fn keyturn(url: &str, args: &[&str]) -> Output {
    gateway::cli(url, ("AKIDCALLER", "caller-secret")).args(args).output().expect("run keyturn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn throttled() -> Answer {
    (429, vec![], json!({"message": "Too Many Requests"}))
}

fn unavailable() -> Answer {
    (503, vec![], json!({"code": "unavailable", "message": "the lease table is unavailable", "retryable": true}))
}

fn roles() -> Answer {
    (
        200,
        vec![],
        json!({"roles": [{"name": "ci", "kind": "database", "default_ttl_seconds": 900, "max_ttl_seconds": 3600}]}),
    )
}

fn issued() -> Answer {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let body = json!({
        "lease_id": "abcdefghij0123456789", "role": "ci", "kind": "database", "issued_at": now,
        "expires_at": now + 900, "ttl_seconds": 900, "server_expiry": true, "renewable": true, "revocable": true,
        "engine": "postgres", "host": "db.example.com", "port": 5432, "dbname": "app",
        "username": "kt_ci_x", "password": "pw",
    });
    (201, vec![], body)
}

#[test]
fn throttling_and_unavailability_are_retried_until_the_answer_comes() {
    // Two 503s, then the answer: three requests, one line on stderr saying it retries.
    let (url, seen) = scripted(vec![unavailable(), unavailable(), roles()]);
    let out = keyturn(&url, &["roles"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(text(&out.stdout).starts_with("ci "), "{}", text(&out.stdout));
    assert_eq!(seen.lock().unwrap().as_slice(), ["GET /v1/roles"; 3]);
    assert_eq!(stderr.matches("retrying").count(), 1, "said once: {stderr}");
    assert!(stderr.contains("HTTP 503"), "{stderr}");

    // An issue throttled by API Gateway three times: the fourth request gets the lease.
    let (url, seen) = scripted(vec![throttled(), throttled(), throttled(), issued()]);
    let out = keyturn(&url, &["creds", "ci", "--format", "env"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("PGUSER='kt_ci_x'"), "{}", text(&out.stdout));
    assert_eq!(seen.lock().unwrap().as_slice(), ["POST /v1/credentials/ci"; 4]);

    // --quiet says nothing of it.
    let (url, _) = scripted(vec![throttled(), roles()]);
    let out = keyturn(&url, &["roles", "--quiet"]);
    assert_eq!((out.status.code(), text(&out.stderr).as_str()), (Some(0), ""));
}

#[test]
fn retry_after_is_honoured() {
    let wait = (503, vec![("retry-after", "2".to_owned())], json!({"message": "Service Unavailable"}));
    let (url, seen) = scripted(vec![wait, roles()]);
    let started = Instant::now();
    let out = keyturn(&url, &["roles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn the_cli_gives_up_after_its_bound_naming_the_status() {
    let (url, seen) = scripted(vec![unavailable()]);
    let started = Instant::now();
    let out = keyturn(&url, &["leases", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "the API failing: {stderr}");
    assert!(stderr.contains("HTTP 503") && stderr.contains("after 4 attempts"), "{stderr}");
    assert_eq!(seen.lock().unwrap().as_slice(), ["GET /v1/leases"; 4]);
    // Waits of at most 0.5, 1 and 2 s.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    let (url, seen) = scripted(vec![throttled()]);
    let out = keyturn(&url, &["creds", "ci"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 429") && stderr.contains("after 4 attempts"), "{stderr}");
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert!(out.stdout.is_empty());
}

#[test]
fn a_refusal_the_issuer_marks_final_is_not_retried() {
    let cap = (
        429,
        vec![],
        json!({"code": "too_many_leases", "message": "role \"ci\" has 3 live leases, its max_leases",
               "retryable": false, "live_leases": 3}),
    );
    let (url, seen) = scripted(vec![cap]);
    let out = keyturn(&url, &["creds", "ci"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_leases") && !stderr.contains("retrying"), "{stderr}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Nor a server error that is not a 503 (the issue may have happened).
    let (url, seen) = scripted(vec![(502, vec![], json!({"message": "Internal Server Error"}))]);
    assert_eq!(keyturn(&url, &["creds", "ci"]).status.code(), Some(5));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn an_explicit_region_that_contradicts_the_urls_is_refused_before_any_request() {
    // gateway::cli sets AWS_REGION=us-east-1.
    let url = "https://abc123.execute-api.eu-west-1.amazonaws.com";
    let out = keyturn(url, &["roles"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("eu-west-1") && stderr.contains("AWS_REGION says us-east-1"), "{stderr}");
    let out = keyturn(url, &["roles", "--region", "ap-south-1"]);
    assert!(text(&out.stderr).contains("--region says ap-south-1"), "{}", text(&out.stderr));
}
