//! `make bench`: the speed and size figures, as medians over repeated runs.
//!
//! - cold start: from spawning the release rotate-database binary to its first request
//!   for work (`GET .../runtime/invocation/next`) on a Runtime API socket opened here;
//! - warm rotation: the four steps of one rotation, in-process with the library the binary
//!   uses, against the local PostgreSQL and moto (RotateSecret itself is not counted: it is
//!   Secrets Manager's call, not the function's);
//! - the release binary's size.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyturn::rotation::database::Strategy;
use keyturn::rotation::Step;
use keyturn_tests::lambda::function_binary;
use keyturn_tests::{random_token, TestEnv};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use postgres_protocol::password::scram_sha_256;
use serde_json::json;

const RUNS: usize = 25;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
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

fn cold_start(env: &TestEnv) -> Duration {
    let binary = function_binary("rotate-database");
    let samples = (0..RUNS)
        .map(|_| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let started = Instant::now();
            let mut child = Command::new(&binary)
                .env_clear()
                .envs(env.function_env(Strategy::SingleUser))
                .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
                .env("AWS_LAMBDA_FUNCTION_NAME", "rotate-database")
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
            assert!(
                line.contains("/runtime/invocation/next"),
                "unexpected first request: {line}"
            );
            child.kill().ok();
            child.wait().ok();
            elapsed
        })
        .collect();
    median(samples)
}

async fn warm_rotation(env: &TestEnv, strategy: Strategy) -> Duration {
    let user = env.unique(strategy.as_str()).replace('-', "_");
    let password = random_token();
    env.pg_admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            escape_identifier(&user),
            escape_literal(&scram_sha_256(password.as_bytes()))
        ))
        .await
        .unwrap();
    let mut secret = env.user_secret(&user, &password);
    if strategy == Strategy::AlternatingUsers {
        secret["masterarn"] = json!(env.create_secret("master", &env.admin_secret()).await);
    }
    let arn = env.create_secret(&user, &secret).await;
    let rotator = env.rotator(strategy);
    let mut samples = Vec::new();
    for run in 0..=RUNS {
        let token = env.start_rotation(&arn).await;
        let started = Instant::now();
        for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
            env.step(&rotator, &arn, &token, step).await.expect("rotation step");
        }
        // The first rotation warms connections and caches, as the first invocation does.
        if run > 0 {
            samples.push(started.elapsed());
        }
    }
    let (u, p) = env.login_of(&arn, "AWSCURRENT").await;
    assert!(env.can_login(&u, &p).await, "the benchmarked rotation must work");
    median(samples)
}

#[tokio::main]
async fn main() {
    let env = TestEnv::new("bench").await;
    let binary = function_binary("rotate-database");
    if !cfg!(debug_assertions) {
        println!("release build: {}", binary.display());
    } else {
        println!("WARNING: debug build; run `make bench` for release figures");
    }
    println!("runs per figure: {RUNS} (median)");
    let cold = cold_start(&env);
    println!(
        "cold start (spawn to first /next):      {:>10}  target < 30 ms   {}",
        ms(cold),
        verdict(cold < Duration::from_millis(30))
    );
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let warm = warm_rotation(&env, strategy).await;
        println!(
            "warm rotation, PostgreSQL {:<18} {:>10}  target < 50 ms   {}",
            format!("{}:", strategy.as_str()),
            ms(warm),
            verdict(warm < Duration::from_millis(50))
        );
    }
    let size = std::fs::metadata(&binary).unwrap().len();
    println!(
        "binary size (rotate-database):          {:>7.2} MB  target < 12 MB   {}",
        size as f64 / 1e6,
        verdict(size < 12_000_000)
    );
}
