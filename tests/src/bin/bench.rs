//! `make bench`: the speed and size figures, as medians over repeated runs.
//!
//! - cold start: from spawning each release function binary to its first request for
//!   work (`GET .../runtime/invocation/next`) on a Runtime API socket opened here;
//! - warm rotation (PostgreSQL and MariaDB, both strategies): the four steps of one
//!   rotation, in-process with the library the binary uses, against the local databases
//!   and moto (RotateSecret itself is not counted: it is Secrets Manager's call, not the
//!   function's);
//! - dynamic PostgreSQL users (issue 8's database work, in-process on a warm admin
//!   session): one issuance (`new_user`) p50 and p99, issuances per second with 8
//!   concurrent callers, one deletion;
//! - dynamic credentials at the issuer's handler (issue 8), in-process, an API Gateway
//!   event in and a response out: with an in-memory lease store (the handler and the
//!   database work) and with moto's DynamoDB (whose every request is served one at a time
//!   by the harness, so its figures are this machine's moto, not DynamoDB); the reaper
//!   revoking 10,000 expired leases (in-memory store) and 200 (moto);
//! - AWS credentials at the handler (issue 9), in-memory lease store: an RDS IAM token
//!   (signed locally, no network), an STS session and an IAM user against moto (moto's
//!   figures), and an IAM user's revocation;
//! - the CLI (issue 10), whole `keyturn` processes signing with SigV4, through the
//!   harness's gateway to the issuer's handler in process (in-memory lease store, the
//!   local PostgreSQL): `keyturn creds` and `keyturn exec ROLE -- true` (issue, run,
//!   revoke), and `keyturn --version` for the process alone;
//! - the release binaries' sizes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyturn::rotation::database::Strategy;
use keyturn::rotation::Step;
use keyturn_tests::lambda::function_binary;
use keyturn_tests::{random_token, TestEnv};
use serde_json::json;

const RUNS: usize = 25;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// p50 and p99 of the samples.
fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 99 / 100])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "OVER TARGET"
    }
}

/// Median time from spawning `function` with `vars` to its first request for work.
fn cold_start(function: &str, vars: &[(String, String)]) -> Duration {
    let binary = function_binary(function);
    let samples = (0..RUNS)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let started = Instant::now();
            let mut child = Command::new(&binary)
                .env_clear()
                .envs(vars.iter().cloned())
                .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", function)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn rotate-database");
            let (stream, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).unwrap();
            let elapsed = started.elapsed();
            assert!(line.contains("/runtime/invocation/next"), "unexpected first request: {line}");
            child.kill().ok();
            child.wait().ok();
            elapsed
        })
        .collect();
    median(samples)
}

/// Median of a whole rotation, and of each step.
/// The databases the bench rotates.
#[derive(Clone, Copy, PartialEq)]
enum Db {
    Postgres,
    Mariadb,
}

async fn warm_rotation(env: &TestEnv, db: Db, strategy: Strategy) -> (Duration, [Duration; 4]) {
    let prefix = if db == Db::Postgres { "pg" } else { "maria" };
    let user = env.unique(&format!("{prefix}_{}", strategy.as_str())).replace('-', "_");
    let password = random_token();
    let (mut secret, admin) = match db {
        Db::Postgres => {
            env.create_role(&user, &password).await;
            (env.user_secret(&user, &password), env.admin_secret())
        }
        Db::Mariadb => {
            env.create_mariadb_account(&user, &password, "").await;
            (env.mariadb_secret(&user, &password), env.mariadb_admin_secret())
        }
    };
    if strategy == Strategy::AlternatingUsers {
        secret["masterarn"] = json!(env.create_secret(&format!("{user}-master"), &admin).await);
    }
    let arn = env.create_secret(&user, &secret).await;
    let rotator = env.rotator(strategy);
    let mut samples = Vec::new();
    let mut per_step: [Vec<Duration>; 4] = Default::default();
    for run in 0..=RUNS {
        let token = env.start_rotation(&arn).await;
        let started = Instant::now();
        for (i, step) in [Step::Create, Step::Set, Step::Test, Step::Finish].into_iter().enumerate() {
            let step_started = Instant::now();
            env.step(&rotator, &arn, &token, step).await.expect("rotation step");
            // The first rotation warms connections and caches, as the first invocation does.
            if run > 0 {
                per_step[i].push(step_started.elapsed());
            }
        }
        if run > 0 {
            samples.push(started.elapsed());
        }
    }
    let (u, p) = env.login_of(&arn, "AWSCURRENT").await;
    let works = match db {
        Db::Postgres => env.can_login(&u, &p).await,
        Db::Mariadb => env.can_login_mariadb(&u, &p).await,
    };
    assert!(works, "the benchmarked rotation must work");
    (median(samples), per_step.map(median))
}

/// Median of one login and `SELECT 1` through the backend, over TLS and in plaintext (on
/// the cluster that also takes plaintext; the test's own is TLS only).
async fn login() -> (Duration, Duration) {
    use keyturn::backend::{Credentials, DatabaseBackend, TlsMode, Username};
    let env = &TestEnv::accepting_plaintext("bench_login").await;
    let user = env.unique("login");
    let password = random_token();
    env.create_role(&user, &password).await;
    let backend = env.pg_backend(Default::default());
    let login = Credentials { username: Username::parse(&user).unwrap(), password: password.into() };
    let mut figures = Vec::new();
    for tls in [TlsMode::VerifyFull, TlsMode::Disabled] {
        let endpoint = env.pg_endpoint(tls);
        let mut samples = Vec::new();
        for _ in 0..=RUNS {
            let started = Instant::now();
            backend.verify(&endpoint, &login).await.expect("login");
            samples.push(started.elapsed());
        }
        figures.push(median(samples));
    }
    (figures[0], figures[1])
}

/// Dynamic PostgreSQL users through one backend (its admin session kept open): p50 and
/// p99 of `new_user` over 200 issuances one at a time, issuances per second with 8
/// callers at once (800 in all), and the median `delete_user`.
async fn dynamic_users(env: &TestEnv) -> (Duration, Duration, f64, Duration) {
    use keyturn::backend::{DeleteUser, DynamicUsers, NewUser, TlsMode, Username};
    use std::time::SystemTime;
    let group = env.unique("grp");
    env.create_role(&group, &random_token()).await;
    let backend = std::sync::Arc::new(env.pg_backend(Default::default()));
    let endpoint = env.pg_endpoint(TlsMode::VerifyFull);
    let admin = env.pg_admin_credentials();
    let groups = vec![group.clone()];
    let request = move |name: String| NewUser {
        username: Username::parse(&name).unwrap(),
        groups: groups.clone(),
        password: random_token().into(),
        expires_at: SystemTime::now() + Duration::from_secs(900),
        connection_limit: keyturn::lease::kind::database::DEFAULT_CONNECTION_LIMIT,
    };
    let mut names = Vec::new();
    let mut samples = Vec::new();
    for i in 0..=200 {
        let name = format!("kt_bench_{i}_{}", &random_token()[..8]);
        let started = Instant::now();
        backend.new_user(&endpoint, &admin, request(name.clone())).await.expect("new_user");
        if i > 0 {
            samples.push(started.elapsed()); // the first opened the admin session
        }
        names.push(name);
    }
    let (p50, p99) = percentiles(samples);

    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let (backend, endpoint, admin, request) =
                (backend.clone(), endpoint.clone(), admin.clone(), request.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                for i in 0..100 {
                    let name = format!("kt_bench_c{c}_{i}_{}", &random_token()[..8]);
                    backend.new_user(&endpoint, &admin, request(name.clone())).await.expect("new_user");
                    made.push(name);
                }
                made
            })
        })
        .collect();
    for caller in callers {
        names.extend(caller.await.unwrap());
    }
    let per_second = 800.0 / started.elapsed().as_secs_f64();

    let mut deletions = Vec::new();
    for name in names {
        let started = Instant::now();
        let req = DeleteUser { username: Username::parse(&name).unwrap(), reassign_to: Some(group.clone()) };
        backend.delete_user(&endpoint, &admin, req).await.expect("delete_user");
        deletions.push(started.elapsed());
    }
    (p50, p99, per_second, median(deletions))
}

/// One issuance of role `ci` through the handler; panics unless it is a 201.
async fn issue_at_handler<S: keyturn::lease::store::LeaseStore + 'static>(service: &LeaseServiceOf<S>, ttl: u64) {
    issue_role(service, "ci", ttl).await;
}

/// One issuance of `role` through the handler: the 201's body; panics on anything else.
async fn issue_role<S: keyturn::lease::store::LeaseStore + 'static>(
    service: &LeaseServiceOf<S>,
    role: &str,
    ttl: u64,
) -> serde_json::Value {
    use keyturn::lease::api::{self, ApiRequest};
    let body = format!(r#"{{"ttl_seconds": {ttl}}}"#);
    let path = format!("/v1/credentials/{role}");
    let event = keyturn_tests::apigw::request("POST", &path, Some(&body), keyturn_tests::lease::CI);
    let request = ApiRequest::from_event(event).expect("event");
    let response = api::handle(service, &request).await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    response.body.expect("a 201 has a body")
}

/// p50 and p99 of `n` issuances of `role`, one at a time, in-memory lease store.
async fn issue_times(
    service: &LeaseServiceOf<keyturn::lease::store::memory::MemoryStore>,
    role: &str,
    n: usize,
) -> (Duration, Duration) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        issue_role(service, role, 900).await;
        samples.push(started.elapsed());
    }
    percentiles(samples)
}

/// Issue 9's kinds, in-process with an in-memory lease store: an RDS IAM token (local
/// signing only), an STS session and an IAM user (both against moto: moto's figures), and
/// an IAM user's revocation.
async fn aws_kinds(env: &TestEnv) {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let allow = keyturn_tests::allow_policy(&["s3:GetObject"]);
    let boundary = env.create_policy("boundary", &allow).await;
    let role = env.unique("deploy");
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]});
    iam.create_role().role_name(&role).assume_role_policy_document(trust.to_string()).send().await.expect("CreateRole");
    let roles = format!(
        r#"[[role]]
name = "pg-iam"
kind = "rds-iam-token"
engine = "postgres"
host = "orders.cluster-abc.us-east-1.rds.amazonaws.com"
port = 5432
region = "us-east-1"
db_user = "orders_app"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/{role}"
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "legacy"
kind = "aws-iam-user"
path = "/{path}/"
permissions_boundary = "{boundary}"
inline_policy = '{allow}'
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#,
        path = env.unique("bench"),
    );
    let vars = env.lease_env(&roles).await;
    let config = keyturn::config::LeaseConfig::from_vars(vars).expect("lease config");
    let service =
        keyturn::app::lease::build_with_store(&config, &env.sdk, keyturn::lease::store::memory::MemoryStore::default())
            .expect("lease service");
    issue_role(&service, "pg-iam", 900).await;
    let (p50, p99) = issue_times(&service, "pg-iam", 1000).await;
    println!(
        "issue an RDS IAM token at the handler: p50 {}  p99 {}  target p50 < 1 ms   {}",
        ms(p50),
        ms(p99),
        verdict(p50 < Duration::from_millis(1))
    );
    let (p50, p99) = issue_times(&service, "deploy", 50).await;
    println!("issue an STS session, moto STS:        p50 {}  p99 {} (moto-bound)", ms(p50), ms(p99));
    let mut issued = Vec::new();
    let mut samples = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        issued.push(issue_role(&service, "legacy", 900).await);
        samples.push(started.elapsed());
    }
    println!("issue an IAM user, moto IAM:           p50 {} (moto-bound; 6 IAM calls)", ms(median(samples)));
    let mut samples = Vec::new();
    for body in &issued {
        let lease = body["lease_id"].as_str().expect("lease id");
        let started = Instant::now();
        service.revoke(keyturn_tests::lease::CI, lease).await.expect("revoke");
        samples.push(started.elapsed());
    }
    println!("revoke an IAM user, moto IAM:          p50 {} (moto-bound)", ms(median(samples)));
}

type LeaseServiceOf<S> = keyturn::lease::service::LeaseService<keyturn::app::lease::Deployed<S>>;

/// p50 and p99 of one issuance at the handler (200, one at a time, after one that warms
/// the admin session), and issuances per second with 8 callers (`per_caller` each).
async fn issuance<S: keyturn::lease::store::LeaseStore + 'static>(
    service: std::sync::Arc<LeaseServiceOf<S>>,
    per_caller: usize,
) -> (Duration, Duration, f64) {
    let mut samples = Vec::new();
    for i in 0..=200 {
        let started = Instant::now();
        issue_at_handler(&service, 900).await;
        if i > 0 {
            samples.push(started.elapsed());
        }
    }
    let (p50, p99) = percentiles(samples);
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    issue_at_handler(&service, 900).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    (p50, p99, (8 * per_caller) as f64 / started.elapsed().as_secs_f64())
}

/// `count` leases of one second issued (8 callers), then, once expired, reaper runs (batch
/// 1000, 16 at once) until none is due: how long the runs took, and how many were revoked.
async fn reaper<S: keyturn::lease::store::LeaseStore + 'static>(
    service: std::sync::Arc<LeaseServiceOf<S>>,
    count: usize,
) -> (Duration, usize) {
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let service = service.clone();
            tokio::spawn(async move {
                for _ in (c..count).step_by(8) {
                    issue_at_handler(&service, 1).await;
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let mut revoked = 0;
    loop {
        let limits = keyturn::lease::service::ReapLimits {
            batch: 1000,
            concurrency: 16,
            deadline: Instant::now() + Duration::from_secs(45),
        };
        let report = service.reap(limits).await.expect("reaper run");
        assert_eq!(report.failed, 0, "{report:?}");
        revoked += report.revoked;
        if report.due == 0 {
            break;
        }
    }
    (started.elapsed(), revoked)
}

/// Median of one Secrets Manager call (DescribeSecret) against moto.
async fn store_round_trip(env: &TestEnv) -> Duration {
    let arn = env.create_secret("rtt", &json!({"k": "v"})).await;
    let mut samples = Vec::new();
    for _ in 0..=RUNS {
        let started = Instant::now();
        env.sm.describe_secret().secret_id(&arn).send().await.unwrap();
        samples.push(started.elapsed());
    }
    median(samples)
}

/// Issue 10's figures: `keyturn` processes end to end, the handler in process.
async fn cli(env: &TestEnv) {
    use keyturn_tests::gateway::{self, Keys};
    let deployment = keyturn_tests::lease::deploy("bench_cli", keyturn_tests::lease::Engine::Postgres, "").await;
    let config = keyturn::config::LeaseConfig::from_vars(deployment.vars).expect("lease config");
    let store = keyturn::lease::store::memory::MemoryStore::default();
    let service = keyturn::app::lease::build_with_store(&config, &env.sdk, store).expect("lease service");
    const KEY: (&str, &str) = ("AKIDKEYTURNBENCH", "bench-secret-key");
    let keys = Keys::from([(KEY.0.to_owned(), (KEY.1.to_owned(), keyturn_tests::lease::CI.to_owned()))]);
    let gw = gateway::start(gateway::in_process(std::sync::Arc::new(service)), keys).await;
    let time = |args: &'static [&'static str]| {
        let url = gw.url.clone();
        tokio::task::spawn_blocking(move || {
            let samples = (0..RUNS)
                .map(|_| {
                    let started = Instant::now();
                    let out = gateway::cli(&url, KEY).args(args).output().expect("run keyturn");
                    assert!(out.status.success(), "keyturn {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                    started.elapsed()
                })
                .collect();
            percentiles(samples)
        })
    };
    let (version, _) = time(&["--version"]).await.expect("keyturn --version");
    let (creds, creds99) = time(&["creds", "ci", "--quiet"]).await.expect("keyturn creds");
    let (exec, exec99) = time(&["exec", "ci", "--quiet", "--", "true"]).await.expect("keyturn exec");
    println!("keyturn --version (the process alone): p50 {}", ms(version));
    println!("keyturn creds, end to end, handler in process: p50 {}  p99 {}", ms(creds), ms(creds99));
    println!(
        "keyturn exec ci -- true (issue, run, revoke):   p50 {}  p99 {}  target p50 < 100 ms   {}",
        ms(exec),
        ms(exec99),
        verdict(exec < Duration::from_millis(100))
    );
}

#[tokio::main]
async fn main() {
    // Log as the deployed function does by default (INFO, JSON), to a sink. Installed
    // before the harness, whose debug-level capture for the tests would otherwise apply.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .init();
    let env = TestEnv::new("bench").await;
    if !cfg!(debug_assertions) {
        println!("release build: {}", function_binary("rotate-database").parent().unwrap().display());
    } else {
        println!("WARNING: debug build; run `make bench` for release figures");
    }
    println!("runs per figure: {RUNS} (median)");
    let iam_vars: Vec<(String, String)> = env
        .function_env(Strategy::SingleUser)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("KEYTURN_"))
        .chain([("KEYTURN_IAM_PATH_PREFIX".to_owned(), "/keyturn/".to_owned())])
        .collect();
    for (function, vars) in [("rotate-database", env.function_env(Strategy::SingleUser)), ("rotate-iam-key", iam_vars)]
    {
        let cold = cold_start(function, &vars);
        println!(
            "cold start, {function:<16} (to first /next): {:>10}  target < 30 ms   {}",
            ms(cold),
            verdict(cold < Duration::from_millis(30))
        );
    }
    for (db, name) in [(Db::Postgres, "PostgreSQL"), (Db::Mariadb, "MariaDB")] {
        for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
            let (warm, steps) = warm_rotation(&env, db, strategy).await;
            println!(
                "warm rotation, {name:<10} {:<18} {:>10}  target < 50 ms   {}",
                format!("{}:", strategy.as_str()),
                ms(warm),
                verdict(warm < Duration::from_millis(50))
            );
            let names = ["createSecret", "setSecret", "testSecret", "finishSecret"];
            let breakdown: Vec<String> = names.iter().zip(steps).map(|(n, d)| format!("{n} {}", ms(d))).collect();
            println!("    per step: {}", breakdown.join(", "));
        }
    }
    let (tls, plain) = login().await;
    println!("  for scale: one PostgreSQL login + SELECT 1: {} over verify-full TLS, {} plaintext", ms(tls), ms(plain));
    println!("  for scale: one Secrets Manager call to moto (DescribeSecret): {}", ms(store_round_trip(&env).await));
    let (p50, p99, per_second, delete) = dynamic_users(&env).await;
    println!(
        "dynamic PostgreSQL user, new_user:    p50 {}  p99 {}  target p50 < 2 ms, p99 < 8 ms   {}",
        ms(p50),
        ms(p99),
        verdict(p50 < Duration::from_millis(2) && p99 < Duration::from_millis(8))
    );
    println!(
        "dynamic PostgreSQL user, 8 callers:   {per_second:.0} issuances/s  target >= 1000/s   {}",
        verdict(per_second >= 1000.0)
    );
    println!("dynamic PostgreSQL user, delete_user: p50 {}", ms(delete));
    use keyturn_tests::lease::{deploy, Engine};
    let deployment = deploy("bench_memory", Engine::Postgres, "").await;
    let config = keyturn::config::LeaseConfig::from_vars(deployment.vars).expect("lease config");
    let memory = std::sync::Arc::new(
        keyturn::app::lease::build_with_store(&config, &env.sdk, keyturn::lease::store::memory::MemoryStore::default())
            .expect("lease service"),
    );
    let (p50, p99, per_second) = issuance(memory.clone(), 125).await;
    println!(
        "issue at the handler, in-memory store: p50 {}  p99 {}  target p50 < 2 ms, p99 < 8 ms   {}",
        ms(p50),
        ms(p99),
        verdict(p50 < Duration::from_millis(2) && p99 < Duration::from_millis(8))
    );
    println!(
        "issue at the handler, in-memory store, 8 callers: {per_second:.0}/s  target >= 1000/s   {}",
        verdict(per_second >= 1000.0)
    );
    // Its own deployment (prefix, table): each reaper's sweep would take the other's users
    // for orphans.
    let dynamo = std::sync::Arc::new(deploy("bench_dynamo", Engine::Postgres, "").await.service);
    let (p50, p99, per_second) = issuance(dynamo.clone(), 25).await;
    println!(
        "issue at the handler, moto DynamoDB:   p50 {}  p99 {}  8 callers {per_second:.0}/s (moto-bound)",
        ms(p50),
        ms(p99)
    );
    let (took, revoked) = reaper(memory, 10_000).await;
    println!(
        "reaper, 10,000 expired leases, in-memory store: {:.1} s ({revoked} revoked)  target < 60 s   {}",
        took.as_secs_f64(),
        verdict(took < Duration::from_secs(60) && revoked == 10_000)
    );
    // moto copies the whole table for every transaction (its rollback), so its cost grows
    // with the table: a few hundred leases say what the path costs there.
    let (took, revoked) = reaper(dynamo, 200).await;
    println!(
        "reaper, 200 expired leases, moto DynamoDB:      {:.1} s ({revoked} revoked; {:.1} ms a lease)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / 200.0
    );
    aws_kinds(&env).await;
    cli(&env).await;
    for function in ["rotate-database", "rotate-iam-key", "issue-credentials", "reap-leases", "keyturn"] {
        let size = std::fs::metadata(function_binary(function)).unwrap().len();
        println!(
            "binary size, {function:<16}                {:>7.2} MB  target < 12 MB   {}",
            size as f64 / 1e6,
            verdict(size < 12_000_000)
        );
    }
}
