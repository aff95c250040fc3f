//! The `keyturn` command end to end: the real binary signs with SigV4 as the AWS CLI's
//! settings say, through the harness's gateway (which verifies the signature as API
//! Gateway's IAM authorization does) to the issuer, against PostgreSQL. The credentials it
//! prints log in; renew and revoke act on the lease; a bad signature, a caller no role
//! allows and an API that is down each end with their exit code and a message.

use std::process::{Command, Output};
use std::sync::Arc;

use keyturn_tests::gateway::{self, Gateway, Keys};
use keyturn_tests::lambda::function_binary;
use keyturn_tests::lease::{deploy, Deployment, Engine, CI, STRANGER};

const CI_KEY: (&str, &str) = ("AKIDKEYTURNCLICI", "ci-secret-key");
const STRANGER_KEY: (&str, &str) = ("AKIDKEYTURNCLIXX", "stranger-secret-key");

async fn setup(test: &str) -> (Deployment, Gateway) {
    let d = deploy(test, Engine::Postgres, "").await;
    let service = Arc::new(d.env.lease_service(&d.vars, 0));
    let keys = Keys::from([
        (CI_KEY.0.to_owned(), (CI_KEY.1.to_owned(), CI.to_owned())),
        (STRANGER_KEY.0.to_owned(), (STRANGER_KEY.1.to_owned(), STRANGER.to_owned())),
    ]);
    let gateway = gateway::start(service, keys).await;
    (d, gateway)
}

/// `keyturn ARGS` signing with `key`, seeing only the AWS settings given here. It blocks a
/// worker thread while it runs: the tests use the multi-threaded runtime, so the gateway,
/// on the same runtime, keeps serving.
fn keyturn(url: &str, key: (&str, &str), args: &[&str]) -> Output {
    Command::new(function_binary("keyturn"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KEYTURN_API_URL", url)
        .env("AWS_REGION", gateway::REGION)
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run keyturn")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

    let out = keyturn(&gw.url, CI_KEY, &["leases", "renew", &lease_id, "--ttl", "30m"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("now expires at"), "{}", text(&out.stdout));
    let out = keyturn(&gw.url, CI_KEY, &["leases", "revoke", &lease_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!d.env.can_login(user, password).await, "revoked: the user is gone");

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
