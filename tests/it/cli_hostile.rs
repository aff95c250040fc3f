//! The `keyturn` binary against an API whose answers the test makes up: what the CLI does
//! with an answer it cannot read, with a caller's environment, and when it cannot write to
//! stderr. The API here is a plain local HTTP server (the CLI takes `http://` to this
//! machine) that records each request and answers what the test says; it checks no
//! signature, so no harness (database, moto, emulator) is needed.

use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use keyturn_tests::gateway::{self, FakeApi};
use keyturn_tests::lambda::function_binary;
use serde_json::{json, Value};

/// [`gateway::fake_api`] answering at once.
async fn fake_api(answer: impl Fn(&str, &str) -> (u16, Value) + Send + Sync + 'static) -> FakeApi {
    gateway::fake_api(std::time::Duration::ZERO, answer).await
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

const LEASE: &str = "abcdefghij0123456789";

/// A 201 for a PostgreSQL login on `host`.
fn database_answer(host: &str) -> Value {
    json!({
        "lease_id": LEASE, "role": "ci", "kind": "database", "issued_at": now(), "expires_at": now() + 900,
        "ttl_seconds": 900, "server_expiry": true, "renewable": true, "revocable": true,
        "engine": "postgres", "host": host, "port": 5432, "dbname": "app", "username": "kt_ci_x", "password": "pw",
    })
}

/// An API that issues `issued` and revokes (204) whatever it is asked to.
async fn issuing(issued: Value) -> FakeApi {
    gateway::issuing(std::time::Duration::ZERO, issued).await
}

/// `keyturn ARGS` against `url`, with the caller's AWS settings in the environment only.
fn keyturn_command(url: &str, args: &[&str]) -> Command {
    let mut command = gateway::cli(url, ("AKIDCALLER", "caller-secret"));
    command.args(args);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run keyturn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_and_revokes_even_when_stderr_cannot_be_written() {
    // stderr on a full disk (or a pipe whose reader is gone): the lines keyturn says are
    // lost, nothing else is.
    let api = issuing(database_answer("db.example.com")).await;
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = run(keyturn_command(&api.url, &["exec", "ci", "--", "sh", "-c", "echo ran; exit 7"]).stderr(full));
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(7), "ran\n"), "the command's status");
    assert!(api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")), "{:?}", api.requests());

    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out =
        run(keyturn_command(&api.url, &["exec", "ci", "--", "sh", "-c", "echo ran; exit 7"])
            .stderr(Stdio::from(writer)));
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(7), "ran\n"), "a broken pipe too");
}

/// `exec --strict` against an API that issues but refuses every revocation (as API
/// Gateway refuses a caller whose policy lacks `DELETE /v1/leases/*`, or an issuer that is
/// down): a command that succeeded ends with 6 and an error naming the lease; without
/// `--strict`, a warning and the command's 0; a command that failed keeps its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_strict_fails_a_command_whose_lease_was_left_live() {
    let issued = database_answer("db.example.com");
    let refusing = |status: u16| {
        let issued = issued.clone();
        fake_api(move |method, _| match method {
            "POST" => (201, issued.clone()),
            _ => (status, json!({"message": "User: arn:aws:sts::123456789012:assumed-role/ci/x is not authorized"})),
        })
    };
    let api = refusing(403).await;
    let out = run(&mut keyturn_command(&api.url, &["exec", "--strict", "ci", "--", "sh", "-c", "echo ran"]));
    let stderr = text(&out.stderr);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(6), "ran\n"), "{stderr}");
    assert!(stderr.contains(&format!("lease {LEASE} could not be revoked")), "{stderr}");
    assert!(stderr.contains("--strict"), "{stderr}");
    assert_eq!(api.requests().last().map(String::as_str), Some(format!("DELETE /v1/leases/{LEASE}").as_str()));

    let out = run(&mut keyturn_command(&api.url, &["exec", "ci", "--", "true"]));
    assert_eq!(out.status.code(), Some(0), "without --strict: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("could not be revoked"), "{}", text(&out.stderr));
    let out = run(&mut keyturn_command(&api.url, &["exec", "--strict", "ci", "--", "sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3), "the command's failure wins: {}", text(&out.stderr));

    // The API failing (a 500) is a failure to revoke too.
    let api = refusing(500).await;
    let out = run(&mut keyturn_command(&api.url, &["exec", "--strict", "ci", "--", "true"]));
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    // And a lease that was revoked passes.
    let api = issuing(database_answer("db.example.com")).await;
    let out = run(&mut keyturn_command(&api.url, &["exec", "--strict", "ci", "--", "true"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `leases list --all` follows each page's `next` into one list (and one JSON array), and
/// stops on a server whose next page is the page it just gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_list_all_follows_every_page_and_stops_on_a_loop() {
    let listed = |id: &str| {
        json!({"lease_id": id, "role": "ci", "kind": "database", "expires_at": now() + 60, "username": "u",
               "state": "active", "holder": "arn:aws:iam::123456789012:user/x", "attempts": 0, "failing": false})
    };
    let (a, b, c) = ("aaaaaaaaaa0000000000", "bbbbbbbbbb0000000000", "cccccccccc0000000000");
    let api = fake_api(move |_, path| match path {
        "/v1/leases?all=true&role=ci" => (200, json!({"leases": [listed(a)], "next": "5.aaaaaaaaaa0000000000"})),
        "/v1/leases?all=true&role=ci&after=5.aaaaaaaaaa0000000000" => {
            (200, json!({"leases": [], "next": "9.bbbbbbbbbb0000000000"}))
        }
        "/v1/leases?all=true&role=ci&after=9.bbbbbbbbbb0000000000" => (200, json!({"leases": [listed(b), listed(c)]})),
        _ => (200, json!({"leases": [], "next": "same"})),
    })
    .await;
    let out = run(&mut keyturn_command(&api.url, &["leases", "list", "--all", "--role", "ci", "--json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ids: Vec<&str> = answer["leases"].as_array().unwrap().iter().map(|l| l["lease_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [a, b, c]);
    assert_eq!(api.requests().len(), 3, "{:?}", api.requests());

    let out = run(&mut keyturn_command(&api.url, &["leases", "list", "--all"]));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("same page"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_control_character_from_the_api_or_its_url_reaches_the_terminal() {
    let hostile = "x\u{1b}]52;c;ZWNobyBwd25lZA==\u{7}\r\nkeyturn: all good\u{9b}31m";
    let api = fake_api(move |_, _| {
        (
            200,
            json!({"leases": [{"lease_id": hostile, "role": hostile, "kind": hostile, "state": hostile,
                                "username": hostile, "expires_at": 1}]}),
        )
    })
    .await;
    let out = run(&mut keyturn_command(&api.url, &["leases", "list"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert_eq!(listed.lines().count(), 1, "{listed:?}");
    assert!(!listed.trim_end_matches('\n').chars().any(char::is_control), "{listed:?}");

    // A URL (from a stack's output, or the environment) that is not one: the error names it.
    for url in [format!("https://api.example/{hostile}"), format!("http://127.0.0.1:9/{hostile}")] {
        let out = run(&mut keyturn_command(&url, &["roles"]));
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0));
        assert!(!stderr.trim_end_matches('\n').chars().any(char::is_control), "{stderr:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gives_an_aws_command_the_leases_identity_and_not_the_callers_profile() {
    let api = issuing(json!({
        "lease_id": LEASE, "role": "deploy", "kind": "aws-sts", "issued_at": now(), "expires_at": now() + 900,
        "ttl_seconds": 900, "server_expiry": true, "renewable": false, "revocable": false,
        "access_key_id": "ASIALEASE", "secret_access_key": "lease-secret", "session_token": "lease-token",
    }))
    .await;
    // The caller signs in with an SSO profile, as `aws sso login` users do: the AWS SDK for
    // JavaScript (v3), and so the CDK, use AWS_PROFILE over the key in the environment.
    let out = run(keyturn_command(&api.url, &["exec", "deploy", "--", "env"])
        .env("AWS_PROFILE", "caller-admin")
        .env("AWS_DEFAULT_PROFILE", "caller-admin")
        .env("AWS_CREDENTIAL_EXPIRATION", "2000-01-01T00:00:00Z")
        .env("AWS_SECURITY_TOKEN", "caller-token"));
    let env = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(env.lines().any(|l| l == "AWS_ACCESS_KEY_ID=ASIALEASE"), "{env}");
    for caller_setting in ["AWS_PROFILE=", "AWS_DEFAULT_PROFILE=", "AWS_CREDENTIAL_EXPIRATION=", "AWS_SECURITY_TOKEN="]
    {
        assert!(
            !env.lines().any(|l| l.starts_with(caller_setting)),
            "the caller's {caller_setting} would pick another identity: {env}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_revokes_a_lease_whose_answer_it_cannot_read() {
    // A host the issuer relays from an admin secret (any non-empty text there) that the CLI
    // refuses, and a kind this CLI does not know (an issuer newer than the CLI): the lease
    // is issued either way, and the command cannot run with it.
    let mut unknown_kind = database_answer("db.example.com");
    unknown_kind["kind"] = json!("database-v2");
    // The lease's own facts unreadable, its id readable: revoked all the same.
    let mut odd_expiry = database_answer("db.example.com");
    odd_expiry["expires_at"] = json!("soon");
    let mut no_kind = database_answer("db.example.com");
    no_kind.as_object_mut().unwrap().remove("kind");
    for issued in [database_answer("db.example.com/app?sslmode=disable"), unknown_kind, odd_expiry, no_kind] {
        let api = issuing(issued.clone()).await;
        let out = run(&mut keyturn_command(&api.url, &["exec", "ci", "--", "sh", "-c", "echo ran"]));
        let stderr = text(&out.stderr);
        assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(5), ""), "{stderr}");
        assert!(
            api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")),
            "the lease nobody can use is revoked, not left to its expiry: {:?} ({stderr})",
            api.requests()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctrl_c_stops_a_shell_loop_of_exec_as_it_stops_a_loop_of_the_command() {
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    let api = issuing(database_answer("db.example.com")).await;
    let work = std::env::temp_dir().join(format!("keyturn-loop-{}", keyturn_tests::random_token()));
    std::fs::create_dir_all(&work).unwrap();
    // A script deploying one environment after the other: ^C during the first must not go
    // on to the next. bash (as every POSIX shell that waits cooperatively) goes on when the
    // command it waited for exited by itself, and stops when it died of the SIGINT.
    let script = format!(
        "for env in staging production; do {keyturn} exec ci --quiet -- sh -c 'touch {dir}/$0; sleep 20' $env; done",
        keyturn = function_binary("keyturn").display(),
        dir = work.display()
    );
    // bash with keyturn's environment (the API, the caller's AWS settings).
    let mut bash = Command::new("bash");
    bash.env_clear();
    for (name, value) in keyturn_command(&api.url, &[]).get_envs() {
        if let Some(value) = value {
            bash.env(name, value);
        }
    }
    let child = bash.args(["-c", &script]).process_group(0).stdout(Stdio::piped()).spawn().expect("run bash");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !work.join("staging").exists() {
        assert!(std::time::Instant::now() < deadline, "the first command never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // What ^C does: SIGINT to the whole foreground process group.
    // SAFETY: a signal to the process group of the shell this test started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("wait for bash");
    assert!(!work.join("production").exists(), "the loop went on to production after ^C");
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "bash stopped by the SIGINT: {:?}", out.status);
    assert!(api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")), "{:?}", api.requests());
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_the_lease_is_issued_revokes_it_and_runs_nothing() {
    use std::os::unix::process::ExitStatusExt as _;
    let api = gateway::issuing(std::time::Duration::from_secs(2), database_answer("db.example.com")).await;
    let child = keyturn_command(&api.url, &["exec", "ci", "--", "sh", "-c", "echo ran"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyturn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !api.requests().iter().any(|r| r.starts_with("POST ")) {
        assert!(std::time::Instant::now() < deadline, "keyturn never asked for the lease");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a signal to the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("wait for keyturn");
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "the command never ran");
    assert!(api.requests().contains(&format!("DELETE /v1/leases/{LEASE}")), "{:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctrl_c_at_the_terminal_reaches_the_command_once_even_with_stdin_redirected() {
    let api = issuing(database_answer("db.example.com")).await;
    let work = std::env::temp_dir().join(format!("keyturn-tty-{}", keyturn_tests::random_token()));
    std::fs::create_dir_all(&work).unwrap();
    // The command takes each SIGINT with its sender: the terminal's come from the kernel
    // (SI_KERNEL), one forwarded by keyturn from keyturn's pid (SI_USER).
    let counter = work.join("count.py");
    std::fs::write(
        &counter,
        "import os, signal, sys\n\
         signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n\
         open(sys.argv[1] + '/ready', 'w').close()\n\
         while True:\n\
         \x20   info = signal.sigtimedwait({signal.SIGINT}, 3)\n\
         \x20   if info is None: break\n\
         \x20   with open(sys.argv[1] + '/got', 'a') as f: f.write('%d %d\\n' % (info.si_code, info.si_pid))\n",
    )
    .unwrap();
    let python = keyturn_tests::moto::venv().join("bin/python");
    // keyturn in a terminal (script(1)'s pty), its stdin from /dev/null as in
    // `keyturn exec ... < input`.
    let inner = format!(
        "exec {} exec ci --quiet -- {} {} {} < /dev/null",
        function_binary("keyturn").display(),
        python.display(),
        counter.display(),
        work.display()
    );
    let mut script = Command::new("script");
    script.env_clear();
    for (name, value) in keyturn_command(&api.url, &[]).get_envs() {
        if let Some(value) = value {
            script.env(name, value);
        }
    }
    let mut child = script
        .args(["-qfec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script(1)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !work.join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "the command never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // ^C typed at the terminal.
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"\x03").unwrap();
    let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("wait for script");
    let got = std::fs::read_to_string(work.join("got")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(got.lines().count(), 1, "one SIGINT, the terminal's: {got:?} ({})", text(&out.stdout));
    const SI_KERNEL: i32 = 0x80;
    assert!(got.starts_with(&format!("{SI_KERNEL} ")), "{got:?}");
}
