//! `keyturn exec` with a new IAM user's access key, which AWS refuses for some seconds
//! after its creation (IAM is eventually consistent): the command runs only once the key
//! works, or after the answer's `propagation_delay_seconds` with a warning, and a SIGTERM
//! during the wait revokes the lease and runs nothing.
//!
//! The key is checked against the harness's moto server with IAM authentication on (every
//! client of it signs as its administrator), which refuses a key it does not have, and one
//! the test withholds, as AWS refuses one IAM has not propagated yet; `AWS_ENDPOINT_URL`
//! points the CLI at it. The API is a fake one that issues a key the test chose ([`gateway::issuing`]).

use std::io::BufRead as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyturn_tests::gateway::{self, FakeApi};
use keyturn_tests::{harness, random_token, TestEnv};
use serde_json::{json, Value};

const LEASE: &str = "abcdefghij0123456789";

/// A 201 for an IAM user's key that IAM accepts within `delay` seconds, the API says.
fn iam_user_answer(access_key_id: &str, secret: &str, delay: u64) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    json!({
        "lease_id": LEASE, "role": "legacy", "kind": "aws-iam-user", "issued_at": now, "expires_at": now + 900,
        "ttl_seconds": 900, "server_expiry": true, "renewable": true, "revocable": true,
        "access_key_id": access_key_id, "secret_access_key": secret, "username": "kt_legacy_x",
        "propagation_delay_seconds": delay,
    })
}

/// A key moto never has.
fn unknown_key() -> String {
    format!("AKIANEVER{}", random_token()[..11].to_uppercase().replace('-', "0"))
}

/// `keyturn ARGS` against `api`, checking keys against moto.
fn keyturn(api: &FakeApi, args: &[&str]) -> Command {
    let mut command = gateway::cli(&api.url, ("AKIDCALLER", "caller-secret"));
    command.args(args).env("AWS_ENDPOINT_URL", &harness().moto_authenticated().endpoint);
    command
}

/// `command` started, its stderr's lines coming through the receiver as they are written.
fn start(command: &mut Command) -> (Child, Receiver<String>) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run keyturn");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    (child, receiver)
}

/// Waits (30 s at most) for a line holding `text`; the lines so far, that one last.
fn await_line(lines: &Receiver<String>, text: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|l: &String| l.contains(text)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {text:?} on keyturn's stderr: {seen:?}"),
        }
    }
    seen
}

/// The child's end: its output, with stderr's lines after `seen` added.
fn finish(child: Child, lines: Receiver<String>, mut seen: Vec<String>) -> (Output, String) {
    let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("wait for keyturn");
    seen.extend(lines.iter());
    (out, seen.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_only_once_the_new_key_works() {
    let env = TestEnv::authenticated("cli_iam_wait").await;
    let user = env.unique("late");
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    iam.create_user().user_name(&user).send().await.expect("CreateUser");
    let out = iam.create_access_key().user_name(&user).send().await.expect("CreateAccessKey");
    let key = out.access_key().expect("the key");
    // Until the test releases it, moto refuses the key as AWS refuses one IAM has not
    // propagated yet.
    tokio::task::block_in_place(|| env.moto.withhold_key(key.access_key_id(), true));
    let api = gateway::issuing(Duration::ZERO, iam_user_answer(key.access_key_id(), key.secret_access_key(), 30)).await;

    // The command's first AWS call, made with the variables exec gave it, and a mark that
    // it started.
    let mark = env.h.work.join(format!("{}.started", random_token()));
    let python = keyturn_tests::moto::venv().join("bin/python");
    let script = format!(
        "touch {} && exec {} -c \"import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])\"",
        mark.display(),
        python.display()
    );
    let (child, lines) =
        start(keyturn(&api, &["exec", "legacy", "--", "sh", "-c", &script]).env("AWS_DEFAULT_REGION", gateway::REGION));
    let seen = await_line(&lines, "waiting up to 30 s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!mark.exists(), "the command ran with a key that does not work yet: {seen:?}");

    // The key propagates.
    tokio::task::block_in_place(|| env.moto.withhold_key(key.access_key_id(), false));
    let (out, stderr) = finish(child, lines, seen);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.trim().ends_with(&format!(":user/{user}")), "the command's first call signed as the user: {stdout}");
    let after: f64 = stderr
        .split("the access key works, after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no line saying the key works: {stderr}"));
    assert!((3.0..30.0).contains(&after), "{stderr}");
    assert!(api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")), "{:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_the_command_after_the_delay_with_a_warning_when_the_key_never_works() {
    let _env = TestEnv::authenticated("cli_iam_wait_bound").await;
    let api = gateway::issuing(Duration::ZERO, iam_user_answer(&unknown_key(), "no-such-secret", 3)).await;
    let started = Instant::now();
    // --quiet leaves out the progress lines, not the warning.
    let out = tokio::task::block_in_place(|| {
        keyturn(&api, &["exec", "legacy", "--quiet", "--", "sh", "-c", "echo ran"]).output().expect("run keyturn")
    });
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(0), "ran\n"), "{stderr}");
    assert!(elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(10), "{elapsed:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("keyturn: warning: the access key of lease {LEASE} still did not work")),
        "{stderr}"
    );
    assert!(api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")), "{:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_during_the_wait_revokes_the_lease_and_runs_nothing() {
    let _env = TestEnv::authenticated("cli_iam_wait_signal").await;
    let api = gateway::issuing(Duration::ZERO, iam_user_answer(&unknown_key(), "no-such-secret", 30)).await;
    let (child, lines) = start(&mut keyturn(&api, &["exec", "legacy", "--", "sh", "-c", "echo ran"]));
    let seen = await_line(&lines, "waiting up to 30 s");
    let signalled = Instant::now();
    // SAFETY: a signal to the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (out, stderr) = finish(child, lines, seen);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "the command never ran");
    assert!(signalled.elapsed() < Duration::from_secs(10), "the wait went on after the signal: {stderr}");
    assert!(stderr.contains(&format!("lease {LEASE} revoked")), "{stderr}");
    assert!(api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")), "{:?}", api.requests());
}
