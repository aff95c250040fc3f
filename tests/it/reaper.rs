//! The reaper with little to do, and what it says: a roles file of comments only (the
//! default a stack deploys), a role removed from the file while its lease lives, an admin
//! secret it cannot read. In process, through the service the functions build, against
//! moto and the harness PostgreSQL.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keyturn_tests::lease::{deploy, issue_ci, reap_limits, Engine};
use keyturn_tests::{captured_logs, TestEnv};
use tracing::Instrument;

/// A loopback port that counts the connections made to it and answers none: a Secrets
/// Manager endpoint for a service that must not call Secrets Manager.
fn counting_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (format!("http://127.0.0.1:{port}"), count)
}

/// The lease service as the functions build it from `vars`, with Secrets Manager at `endpoint`.
fn service_at(env: &TestEnv, vars: &[(String, String)], endpoint: &str) -> keyturn::app::lease::Issuer {
    let mut config = keyturn::config::LeaseConfig::from_vars(vars.to_vec()).unwrap();
    config.secrets_manager_endpoint = Some(endpoint.to_owned());
    keyturn::app::lease::build(&config, &env.sdk).unwrap()
}

/// The captured log lines of the span `run` that hold `text`.
fn lines_of(run: &str, text: &str) -> Vec<String> {
    captured_logs().lines().filter(|l| l.contains(run) && l.contains(text)).map(str::to_owned).collect()
}

#[tokio::test]
async fn with_no_roles_the_reaper_calls_no_secrets_manager_and_says_why_once() {
    let env = TestEnv::new("reapidle").await;
    let vars = env.lease_env("# No roles yet: see roles.example.toml.\n").await;
    let (endpoint, calls) = counting_endpoint();
    let service = service_at(&env, &vars, &endpoint);
    let run = env.unique("reaper-run");
    async {
        assert!(service.check_admin_secrets().await.is_empty());
        for _ in 0..2 {
            let report = service.reap(reap_limits()).await.expect("the run");
            assert_eq!((report.due, report.revoked, report.failed), (0, 0, 0));
            assert!(report.sweep_errors.is_empty() && report.orphans_dropped.is_empty());
        }
    }
    .instrument(tracing::info_span!("reaper_test", run = %run))
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no Secrets Manager call");
    let said = lines_of(&run, "orphan sweep skipped");
    assert_eq!(said.len(), 1, "once over two runs: {said:?}");
    assert!(said[0].contains("database, aws-iam-user"), "names the kinds: {}", said[0]);

    // The same count sees the calls of a roles file with a database role: the check reads
    // its admin secret (and fails, as nothing answers there).
    let admin = env.create_secret("admin", &env.admin_secret()).await;
    let roles = format!(
        "[[role]]\nname = \"ci\"\nkind = \"database\"\nadmin_secret = \"{admin}\"\ngroups = [\"g\"]\ndefault_ttl = \"15m\"\nmax_ttl = \"1h\"\n\
         allowed_principals = [\"arn:aws:iam::123456789012:role/ci-runner\"]\n"
    );
    let service = service_at(&env, &env.lease_env(&roles).await, &endpoint);
    assert_eq!(service.check_admin_secrets().await.len(), 1);
    assert!(calls.load(Ordering::SeqCst) > 0, "the counter counts");
}

#[tokio::test]
async fn the_cold_start_check_names_each_admin_secret_it_cannot_read_and_its_roles() {
    let env = TestEnv::new("reapcheck").await;
    let missing = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{}-AbCdEf", env.unique("missing"));
    let good = env.create_secret("admin", &env.admin_secret()).await;
    let role = |name: &str, admin: &str| {
        format!(
            "[[role]]\nname = \"{name}\"\nkind = \"database\"\nadmin_secret = \"{admin}\"\ngroups = [\"g\"]\ndefault_ttl = \"15m\"\nmax_ttl = \"1h\"\n\
             allowed_principals = [\"arn:aws:iam::123456789012:role/ci-runner\"]\n\n"
        )
    };
    let roles = [role("ci", &missing), role("etl", &missing), role("ok", &good)].concat();
    let vars = env.lease_env(&roles).await;
    let service = env.lease_service(&vars, 0);
    let problems = service.check_admin_secrets().await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let lines = lines_of(&missing, "admin secret cannot be used");
    assert_eq!(lines.len(), 1, "one line per secret: {lines:?}");
    for part in ["\"roles\":\"ci, etl\"", "\"level\":\"ERROR\"", "not found"] {
        assert!(lines[0].contains(part), "{part} in {}", lines[0]);
    }
    assert!(!lines[0].contains(&env.pg.admin_password));
}

#[tokio::test]
async fn the_lease_of_a_role_removed_from_the_roles_file_is_still_revoked() {
    let s = deploy("reapremoved", Engine::Postgres, "").await;
    let (user, password, _) = issue_ci(&s.service, 60).await;
    assert!(s.env.can_login(&user, &password).await);

    let empty = s.env.h.work.join(format!("{}-empty-roles.toml", s.env.unique("r")));
    std::fs::write(&empty, "# every role removed\n").unwrap();
    let vars: Vec<(String, String)> = s
        .vars
        .iter()
        .map(|(k, v)| match k.as_str() {
            "KEYTURN_ROLES_FILE" => (k.clone(), empty.to_str().unwrap().to_owned()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    // An hour later, by the reaper's clock.
    let reaper = s.env.lease_service(&vars, 3600);
    let report = reaper.reap(reap_limits()).await.unwrap();
    assert_eq!((report.revoked, report.failed), (1, 0), "{report:?}");
    assert!(!s.env.can_login(&user, &password).await, "revoked without its role");
}
