//! The `keyturn` command end to end: the real binary signs with SigV4 as the AWS CLI's
//! settings say, through the harness's gateway (which verifies the signature as API
//! Gateway's IAM authorization does) to the real issue-credentials binary under
//! cargo-lambda, against PostgreSQL. The credentials it prints log in; renew and revoke act
//! on the lease; `exec` gives its command a login, renews it, and revokes it when the
//! command ends, crashes or is stopped; a bad signature, a caller no role allows and an API
//! that is down each end with their exit code and a message.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyturn_tests::gateway::{self, Gateway, Keys};
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::lease::{deploy, Deployment, Engine, CI, OPS, STRANGER};

const CI_KEY: (&str, &str) = ("AKIDKEYTURNCLICI", "ci-secret-key");
const STRANGER_KEY: (&str, &str) = ("AKIDKEYTURNCLIXX", "stranger-secret-key");
/// An administrator (the roles file's `admin_principals`).
const OPS_KEY: (&str, &str) = ("AKIDKEYTURNCLIOP", "ops-secret-key");

const ISSUER: &str = "issue-credentials";

/// A deployment with the real issuer binary under cargo-lambda behind the gateway.
async fn setup(test: &str) -> (Deployment, Gateway) {
    let d = deploy(test, Engine::Postgres, "").await;
    let mut emulator = Emulator::start(&d.env.h.work.join(format!("emulator-{test}.log")));
    let log = d.env.h.work.join(format!("function-{ISSUER}-{test}.log"));
    emulator.run_function(&function_binary(ISSUER), ISSUER, &d.vars, &log);
    let keys = Keys::from([
        (CI_KEY.0.to_owned(), (CI_KEY.1.to_owned(), CI.to_owned())),
        (STRANGER_KEY.0.to_owned(), (STRANGER_KEY.1.to_owned(), STRANGER.to_owned())),
        (OPS_KEY.0.to_owned(), (OPS_KEY.1.to_owned(), OPS.to_owned())),
    ]);
    let gateway = gateway::start(gateway::lambda(emulator, ISSUER), keys).await;
    (d, gateway)
}

/// `keyturn ARGS` signing with `key`, seeing only the AWS settings given here (and what
/// psql needs to verify the harness's TLS).
fn keyturn_command(url: &str, key: (&str, &str), args: &[&str]) -> Command {
    let mut command = gateway::cli(url, key);
    command.args(args).env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", &keyturn_tests::harness().ca_file);
    command
}

/// `keyturn ARGS`, run to its end. It blocks a worker thread while it runs: the tests use
/// the multi-threaded runtime, so the gateway, on the same runtime, keeps serving.
fn keyturn(url: &str, key: (&str, &str), args: &[&str]) -> Output {
    keyturn_command(url, key, args).output().expect("run keyturn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The expiry of the caller's one live lease, from `leases list --json` (Unix seconds), as
/// the CLI prints times: `YYYY-MM-DDTHH:MM:SSZ`.
fn expiry(url: &str) -> String {
    let out = keyturn(url, CI_KEY, &["leases", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let seconds = listed["leases"][0]["expires_at"].as_u64().expect("expires_at in Unix seconds");
    keyturn::time::iso8601_unix(seconds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_print_a_login_that_works_and_leases_renew_and_revoke_it() {
    let (d, gw) = setup("cli_creds").await;
    let out = keyturn(&gw.url, CI_KEY, &["creds", "ci", "--ttl", "10m", "--format", "env"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The env format, evaluated by a real shell, gives the variables psql would read.
    let script = format!("{}printf '%s\\n%s\\n%s' \"$PGUSER\" \"$PGPASSWORD\" \"$DATABASE_URL\"", text(&out.stdout));
    let vars = Command::new("/bin/sh").arg("-c").arg(&script).output().expect("run sh");
    let vars = text(&vars.stdout);
    let mut lines = vars.lines();
    let (user, password, url) = (lines.next().unwrap(), lines.next().unwrap(), lines.next().unwrap());
    assert!(user.starts_with(&d.prefix) && url.starts_with("postgresql://"), "{vars}");
    d.env.pg_login(user, password).await.expect("the printed credentials log in");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("keyturn: lease ") && !stderr.contains(password), "{stderr}");
    let lease_id = stderr.split_whitespace().nth(2).unwrap().to_owned();
    // Times are printed in UTC, ISO 8601: the expiry the API gives in Unix seconds.
    let expires = expiry(&gw.url);
    assert!(stderr.contains(&format!("keyturn: lease {lease_id} expires at {expires}\n")), "{stderr}");

    let out = keyturn(&gw.url, CI_KEY, &["leases", "list"]);
    let listed = text(&out.stdout);
    assert!(listed.starts_with(&format!("{lease_id}  ci ")) && listed.contains(&format!(" {expires} ")), "{listed}");
    let theirs = keyturn(&gw.url, STRANGER_KEY, &["leases", "list", "--json"]);
    let theirs: serde_json::Value = serde_json::from_slice(&theirs.stdout).expect("JSON");
    assert_eq!(theirs["leases"], serde_json::json!([]), "another caller sees none of them");
    let out = keyturn(&gw.url, CI_KEY, &["leases", "renew", &lease_id, "--ttl", "30m"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let renewed = expiry(&gw.url);
    assert_ne!(renewed, expires, "renewed for 30 minutes");
    assert_eq!(text(&out.stdout), format!("lease {lease_id} now expires at {renewed}\n"));
    let out = keyturn(&gw.url, CI_KEY, &["leases", "revoke", &lease_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!d.env.can_login(user, password).await, "revoked: the user is gone");
    let out = keyturn(&gw.url, CI_KEY, &["leases", "list"]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), ""), "revoked: not listed");

    let out = keyturn(&gw.url, CI_KEY, &["roles", "--json"]);
    let roles: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(roles["roles"][0]["name"], "ci");
    let out = keyturn(&gw.url, CI_KEY, &["creds", "ci", "--format", "json", "--quiet"]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!((body["kind"].as_str(), out.stderr.is_empty()), (Some("database"), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_end_with_their_class_exit_code_and_the_apis_message() {
    let (_d, gw) = setup("cli_refused").await;
    let wrong = keyturn(&gw.url, (CI_KEY.0, "not-the-secret"), &["creds", "ci"]);
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stderr).contains("signature"), "{}", text(&wrong.stderr));
    assert!(wrong.stdout.is_empty());

    let stranger = keyturn(&gw.url, STRANGER_KEY, &["creds", "ci"]);
    assert_eq!(stranger.status.code(), Some(3));
    assert!(text(&stranger.stderr).contains("forbidden"), "{}", text(&stranger.stderr));

    let unknown = keyturn(&gw.url, CI_KEY, &["leases", "revoke", "abcdefghij0123456789"]);
    assert_eq!(unknown.status.code(), Some(4), "{}", text(&unknown.stderr));
    let bad_ttl = keyturn(&gw.url, CI_KEY, &["creds", "ci", "--ttl", "2h"]);
    assert_eq!(bad_ttl.status.code(), Some(2), "over max_ttl: {}", text(&bad_ttl.stderr));
    let odd = keyturn(&gw.url, CI_KEY, &["creds", "../roles"]);
    assert_eq!(odd.status.code(), Some(2), "not a role name");

    // Nothing listens on port 9 (discard) here.
    let down = keyturn("http://127.0.0.1:9", CI_KEY, &["creds", "ci"]);
    assert_eq!(down.status.code(), Some(5), "{}", text(&down.stderr));
    assert!(text(&down.stderr).contains("cannot reach the API"), "{}", text(&down.stderr));
}

/// A command for `keyturn exec` that writes the user and password it was given to `file`
/// (for the test to check them after), then runs `then`.
fn leak_to(file: &Path, then: &str) -> String {
    format!("printf '%s\\n%s\\n' \"$PGUSER\" \"$PGPASSWORD\" > {}.tmp && mv {0}.tmp {0} && {then}", file.display())
}

/// The user and password a command wrote with [`leak_to`], once it has.
fn leaked(file: &Path) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            let mut lines = text.lines().map(str::to_owned);
            return (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "the command never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_gives_the_command_a_login_and_revokes_it_when_the_command_ends() {
    let (d, gw) = setup("cli_exec").await;
    let file = d.env.h.work.join(format!("{}.creds", keyturn_tests::random_token()));
    // The command logs in with nothing but the variables keyturn put in its environment.
    let script = leak_to(&file, "psql -tA -c 'select session_user' && exit 7");
    let out = keyturn(&gw.url, CI_KEY, &["exec", "ci", "--ttl", "10m", "--", "sh", "-c", &script]);
    let (user, password) = leaked(&file);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "the command's status: {stderr}");
    assert_eq!(stdout.trim(), user, "psql logged in as the lease's user");
    assert!(user.starts_with(&d.prefix), "{user}");
    assert!(!stderr.contains(&password) && !stdout.contains(&password), "no credential printed: {stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(!d.env.can_login(&user, &password).await, "the command ended: its user is gone");

    // A command that cannot be run: 127, as a shell says, and its lease is revoked.
    let out = keyturn(&gw.url, CI_KEY, &["exec", "ci", "--", "/nonexistent/command"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("revoked"), "{}", text(&out.stderr));
    // No command, or no issue: nothing runs.
    let out = keyturn(&gw.url, CI_KEY, &["exec", "ci"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = keyturn(&gw.url, STRANGER_KEY, &["exec", "ci", "--", "sh", "-c", "echo ran"]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(3), ""), "{}", text(&out.stderr));
}

/// A listener that answers as a PostgreSQL server anyone could run: it declines TLS and
/// GSSAPI encryption, asks for the password in cleartext, and keeps every byte it is sent.
/// Returns its port, and what it received (one entry per connection).
fn password_catcher() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local address").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let record = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let index = {
                    let mut all = record.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                catch_password(stream, |bytes| record.lock().unwrap()[index].extend_from_slice(bytes));
            });
        }
    });
    (port, received)
}

/// A startup-phase message: its length (itself included), then its body.
fn read_untyped(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4).min(1 << 16)];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

fn catch_password(mut stream: TcpStream, mut record: impl FnMut(&[u8])) -> Option<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut startup = read_untyped(&mut stream)?;
    record(&startup);
    // SSLRequest and GSSENCRequest: "N", go on in plaintext.
    while startup.len() == 4 && [80_877_103u32, 80_877_104].contains(&u32::from_be_bytes(startup[..4].try_into().ok()?))
    {
        stream.write_all(b"N").ok()?;
        startup = read_untyped(&mut stream)?;
        record(&startup);
    }
    // AuthenticationCleartextPassword; the answer is a PasswordMessage ('p').
    stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).ok()?;
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).ok()?;
    record(&header);
    let mut body =
        vec![0u8; (u32::from_be_bytes(header[1..].try_into().ok()?) as usize).saturating_sub(4).min(1 << 16)];
    stream.read_exact(&mut body).ok()?;
    record(&body);
    Some(())
}

/// The caller's environment names another server: a `PGSERVICE` whose service file (which
/// libpq reads over `PGHOST` and the rest) points at a listener asking for the password in
/// cleartext, `PGSSLMODE=disable`, a `PGPASSFILE` and `PGOPTIONS`. Neither `exec` nor the
/// `env` format lets any of it through: psql reaches the lease's server, over TLS, and the
/// listener never sees a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_database_settings_never_send_the_password_elsewhere() {
    let (d, gw) = setup("cli_hostile_pg_env").await;
    let (port, received) = password_catcher();
    let work = &d.env.h.work;
    let services = work.join(format!("{}.pg_service.conf", keyturn_tests::random_token()));
    std::fs::write(&services, format!("[dev]\nhost=127.0.0.1\nport={port}\nsslmode=disable\n")).expect("service file");
    let passfile = work.join(format!("{}.pgpass", keyturn_tests::random_token()));
    std::fs::write(&passfile, format!("127.0.0.1:{port}:*:*:from-the-passfile\n")).expect("passfile");
    let hostile = |command: &mut Command| {
        command
            .env("PGSERVICE", "dev")
            .env("PGSERVICEFILE", &services)
            .env("PGSSLMODE", "disable")
            .env("PGPASSFILE", &passfile)
            .env("PGOPTIONS", "-c search_path=attacker");
    };
    // The environment does what it says without keyturn: psql goes to the listener.
    let mut direct = Command::new("psql");
    direct.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    hostile(&mut direct);
    direct.env("PGUSER", "someone").env("PGPASSWORD", "probe-password").args(["-tA", "-c", "select 1"]);
    let out = direct.stdin(Stdio::null()).output().expect("run psql");
    assert!(!out.status.success());
    let probe = received.lock().unwrap().concat();
    assert!(probe.windows(14).any(|w| w == b"probe-password"), "the listener catches a password sent to it");
    received.lock().unwrap().clear();

    let file = work.join(format!("{}.creds", keyturn_tests::random_token()));
    // The session's user and search_path, then psql's account of the connection.
    let query = "psql -tA -F ' ' -c 'select session_user, current_setting($$search_path$$)' -c '\\conninfo'";
    let script = leak_to(&file, query);
    let mut exec = keyturn_command(&gw.url, CI_KEY, &["exec", "ci", "--", "sh", "-c", &script]);
    hostile(&mut exec);
    let out = exec.output().expect("run keyturn exec");
    let (user, password) = leaked(&file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with(&format!("{user} ")), "psql logged in as the lease's user: {stdout}");
    assert!(stdout.contains("SSL connection"), "over TLS: {stdout}");
    assert!(!stdout.contains("attacker"), "the caller's PGOPTIONS was not applied: {stdout}");
    assert!(received.lock().unwrap().is_empty(), "exec's command connected to the caller's service");

    // `creds --format env`, evaluated in the same environment: its unset line clears it.
    let mut creds = keyturn_command(&gw.url, CI_KEY, &["creds", "ci", "--format", "env", "--quiet"]);
    hostile(&mut creds);
    let out = creds.output().expect("run keyturn creds");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = format!("{}{query}", text(&out.stdout));
    let mut sh = Command::new("/bin/sh");
    sh.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    hostile(&mut sh);
    sh.env("PGSSLROOTCERT", &keyturn_tests::harness().ca_file).arg("-c").arg(&script);
    let out = sh.output().expect("run sh");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with(&d.prefix) && stdout.contains("SSL connection"), "{stdout}");
    assert!(!stdout.contains("attacker"), "{stdout}");
    let caught = received.lock().unwrap().concat();
    assert!(caught.is_empty(), "the env format's psql connected to the caller's service");
    assert!(!caught.windows(password.len()).any(|w| w == password.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_forwards_sigterm_and_revokes_on_it_and_on_a_crash() {
    let (d, gw) = setup("cli_exec_signals").await;
    // SIGTERM to keyturn (as a CI runner's cancel sends it): forwarded, the command ends by
    // it, the lease is revoked, and keyturn dies of it too (a shell reports 128 + 15).
    let file = d.env.h.work.join(format!("{}.creds", keyturn_tests::random_token()));
    let script = leak_to(&file, "exec sleep 60");
    let child = keyturn_command(&gw.url, CI_KEY, &["exec", "ci", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyturn exec");
    let (user, password) = leaked(&file);
    assert!(d.env.can_login(&user, &password).await, "the lease works while the command runs");
    // SAFETY: a signal to the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("wait for keyturn");
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "the command did not wait its 60 s");
    assert!(!d.env.can_login(&user, &password).await, "revoked on SIGTERM");

    // The command crashes (killed by a signal of its own): revoked, keyturn dies of it too.
    let file = d.env.h.work.join(format!("{}.creds", keyturn_tests::random_token()));
    let out = keyturn(&gw.url, CI_KEY, &["exec", "ci", "--", "sh", "-c", &leak_to(&file, "kill -KILL $$")]);
    let (user, password) = leaked(&file);
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", text(&out.stderr));
    assert!(!d.env.can_login(&user, &password).await, "revoked after the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_renews_a_short_lease_before_it_expires() {
    let (d, gw) = setup("cli_exec_renew").await;
    let file = d.env.h.work.join(format!("{}.creds", keyturn_tests::random_token()));
    // A 10-second lease: PostgreSQL refuses the login after VALID UNTIL unless keyturn moved
    // it. The command logs in twice past the first expiry. (Renewal comes at two thirds of
    // the life, leaving 3 s for the renewal's round trip through cargo-lambda's emulator on
    // a loaded machine.)
    let script = leak_to(&file, "sleep 12 && psql -tA -c 'select 1' && sleep 9 && psql -tA -c 'select 2'");
    let out = keyturn(&gw.url, CI_KEY, &["exec", "ci", "--ttl", "10s", "--", "sh", "-c", &script]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "the logins after the first expiry worked: {stderr}");
    assert_eq!(text(&out.stdout), "1\n2\n");
    assert!(stderr.matches("renewed").count() >= 2, "{stderr}");
    let (user, password) = leaked(&file);
    assert!(!d.env.can_login(&user, &password).await);
}

/// Creates stack `name` in moto with `CredentialsApiUrl` = `url`, as `sam deploy` would
/// leave it (boto3 from the harness's venv; the tests have no CloudFormation client).
fn create_stack(name: &str, url: &str) {
    let template = serde_json::json!({
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {"CredentialsApiUrl": {"Value": url}},
    });
    let script = "import boto3, sys\n\
        cf = boto3.client('cloudformation', endpoint_url=sys.argv[1], region_name=sys.argv[2],\n\
            aws_access_key_id='test', aws_secret_access_key='test')\n\
        cf.create_stack(StackName=sys.argv[3], TemplateBody=sys.argv[4])\n";
    // moto reads the template as YAML, which takes control characters only escaped.
    let ascii_json: String = template
        .to_string()
        .chars()
        .map(|c| if c.is_ascii() { c.to_string() } else { format!("\\u{:04x}", u32::from(c)) })
        .collect();
    let h = keyturn_tests::harness();
    let out = Command::new(keyturn_tests::moto::venv().join("bin/python"))
        .args(["-c", script, &h.moto.endpoint, gateway::REGION, name, &ascii_json])
        .output()
        .expect("run python");
    assert!(out.status.success(), "create_stack: {}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_url_comes_from_the_stacks_output() {
    let (_d, gw) = setup("cli_stack").await;
    let stack = format!("keyturn-{}", &keyturn_tests::random_token()[..8]);
    create_stack(&stack, &gw.url);
    let endpoint = &keyturn_tests::harness().moto.endpoint;
    let run = |args: &[&str]| {
        let mut command = keyturn_command("", CI_KEY, args);
        command.env_remove("KEYTURN_API_URL").env("AWS_ENDPOINT_URL", endpoint).output().expect("run keyturn")
    };
    let out = run(&["roles", "--stack", &stack]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ci "), "{}", text(&out.stdout));

    let missing = run(&["roles", "--stack", "no-such-stack"]);
    assert_eq!(missing.status.code(), Some(4), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("does not exist"), "{}", text(&missing.stderr));
    let both = run(&["roles", "--stack", &stack, "--api-url", &gw.url]);
    assert_eq!(both.status.code(), Some(2), "{}", text(&both.stderr));
    let neither = run(&["roles"]);
    assert_eq!(neither.status.code(), Some(2));
    assert!(text(&neither.stderr).contains("--stack"), "{}", text(&neither.stderr));

    // Whoever can change the stack's outputs can write the URL: what of it the error quotes
    // reaches the terminal as escapes, on the one line (no forged `keyturn:` line after a
    // line break, no C1 control sequence).
    let hostile = format!("keyturn-{}", &keyturn_tests::random_token()[..8]);
    create_stack(&hostile, "https://x.example/\r\nkeyturn: lease revoked\u{9b}2J");
    let out = run(&["exec", "ci", "--stack", &hostile, "--", "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr:?}");
    assert!(stderr.contains("x.example"), "the error names the URL: {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(!stderr.trim_end_matches('\n').chars().any(char::is_control), "{stderr:?}");
}

/// `leases list --all` through the gateway (the query signed and verified with the rest)
/// to the real issuer: an administrator gets every live lease with its holder; the holder
/// itself is refused with exit 3; the filters narrow it; a role that could add a
/// parameter to the query is refused before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_lists_every_lease_and_nobody_else_does() {
    let (_d, gw) = setup("cli_list_all").await;
    let out = keyturn(&gw.url, CI_KEY, &["creds", "ci", "--ttl", "10m", "--quiet", "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let lease_id = issued["lease_id"].as_str().expect("lease_id").to_owned();

    let out = keyturn(&gw.url, OPS_KEY, &["leases", "list", "--all"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the one lease: {stdout}");
    assert!(lines[0].starts_with("LEASE "), "{stdout}");
    assert!(lines[1].starts_with(&format!("{lease_id}  ci ")) && lines[1].contains(" active "), "{stdout}");
    assert!(lines[1].ends_with(CI), "the holder: {stdout}");
    let out = keyturn(&gw.url, OPS_KEY, &["leases", "list", "--all", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (listed["leases"][0]["holder"].as_str(), listed["leases"][0]["failing"].as_bool()),
        (Some(CI), Some(false)),
        "{listed}"
    );
    for filter in [&["--state", "failing"][..], &["--role", "other"][..]] {
        let out = keyturn(&gw.url, OPS_KEY, &[&["leases", "list", "--all"][..], filter].concat());
        assert_eq!(text(&out.stdout).lines().count(), 1, "the header only: {}", text(&out.stdout));
    }
    let out = keyturn(&gw.url, OPS_KEY, &["leases", "list"]);
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), ""), "its own: none");

    for caller in [CI_KEY, STRANGER_KEY] {
        let out = keyturn(&gw.url, caller, &["leases", "list", "--all"]);
        assert_eq!((out.status.code(), out.stdout.is_empty()), (Some(3), true), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("admin_principals"), "{}", text(&out.stderr));
    }
    let out = keyturn(&gw.url, OPS_KEY, &["leases", "list", "--all", "--role", "x&all=false"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = keyturn(&gw.url, OPS_KEY, &["leases", "list", "--all", "--state", "revoked"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
