//! `make demo`: brings up PostgreSQL, MariaDB and the AWS emulator, rotates a secret of
//! each engine three times per strategy through the real rotate-database binary under
//! cargo-lambda's Runtime API emulator, and after each rotation prints the versions, their
//! stages, and which credentials log in. Then dynamic credentials as people and CI jobs
//! get them: the `keyturn` CLI, signing with SigV4, through the harness's gateway (API
//! Gateway's IAM authorization) to the real issue-credentials binary under cargo-lambda.

use keyturn::rotation::database::Strategy;
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::{random_token, TestEnv};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    println!("Starting PostgreSQL 15, MariaDB (both with TLS from a fresh CA) and moto on loopback...");
    let env = TestEnv::new("demo").await;
    let mariadb_port = env.h.mariadb().port;
    println!(
        "  PostgreSQL on 127.0.0.1:{}, MariaDB on 127.0.0.1:{mariadb_port}, moto on {}",
        env.h.pg.port, env.h.moto.endpoint
    );
    let binary = function_binary("rotate-database");

    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let mut emulator = Emulator::start(&env.h.work.join(format!("emulator-{}.log", strategy.as_str())));
        let log = env.h.work.join(format!("rotate-database-{}.log", strategy.as_str()));
        emulator.run_function(&binary, "rotate-database", &env.function_env(strategy), &log);

        for mariadb in [false, true] {
            let name = match (strategy, mariadb) {
                (Strategy::SingleUser, false) => "app",
                (Strategy::SingleUser, true) => "shop",
                (Strategy::AlternatingUsers, false) => "svc",
                (Strategy::AlternatingUsers, true) => "web",
            };
            let user = env.unique(name);
            let password = random_token();
            let (mut secret, admin) = if mariadb {
                env.create_mariadb_account(&user, &password, "").await;
                (env.mariadb_secret(&user, &password), env.mariadb_admin_secret())
            } else {
                env.create_role(&user, &password).await;
                (env.user_secret(&user, &password), env.admin_secret())
            };
            if strategy == Strategy::AlternatingUsers {
                secret["masterarn"] = json!(env.create_secret(&format!("{name}-admin"), &admin).await);
            }
            let arn = env.create_secret(name, &secret).await;
            let engine = if mariadb { "MariaDB" } else { "PostgreSQL" };
            println!("\n=== {engine}, {} rotation of {arn}", strategy.as_str());
            println!("    (KEYTURN_STRATEGY={}; function log: {})", strategy.as_str(), log.display());

            for round in 1..=3 {
                let token = env.start_rotation(&arn).await;
                let started = std::time::Instant::now();
                for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
                    let file = env.h.work.join(format!("{token}-{step}.json"));
                    let event = json!({"Step": step, "SecretId": arn, "ClientRequestToken": token});
                    std::fs::write(&file, event.to_string()).expect("write event");
                    if let Err(e) = emulator.invoke("rotate-database", &file) {
                        eprintln!("{step} failed:\n{e}");
                        std::process::exit(1);
                    }
                }
                println!(
                    "\nrotation {round} (token {}…): four steps through cargo lambda invoke in {} ms",
                    &token[..8],
                    started.elapsed().as_millis()
                );
                print_versions(&env, &arn, mariadb).await;
            }
        }
    }
    dynamic_credentials(&env).await;
    println!("\nDone. Everything above ran on this machine; the services stop with this process.");
}

/// `keyturn roles`, `keyturn exec` with psql, `keyturn leases list`, and a refused
/// signature, each printed with its output.
async fn dynamic_credentials(env: &TestEnv) {
    use keyturn_tests::gateway::{self, Keys};
    use keyturn_tests::lease::{deploy, Engine, CI};
    const KEY: (&str, &str) = ("AKIDKEYTURNDEMO", "demo-secret-key");
    let d = deploy("demo_leases", Engine::Postgres, "").await;
    let mut emulator = Emulator::start(&env.h.work.join("emulator-issue-credentials.log"));
    let log = env.h.work.join("issue-credentials.log");
    emulator.run_function(&function_binary("issue-credentials"), "issue-credentials", &d.vars, &log);
    let keys = Keys::from([(KEY.0.to_owned(), (KEY.1.to_owned(), CI.to_owned()))]);
    let gw = gateway::start(gateway::lambda(emulator, "issue-credentials"), keys).await;
    println!("\n=== Dynamic credentials: the keyturn CLI as {CI}");
    println!("    (signed with SigV4; a local gateway verifies it as API Gateway does and invokes");
    println!("    the real issue-credentials binary; function log: {})", log.display());
    let psql = "select 'psql logged in as ' || session_user";
    for (args, key, note) in [
        (vec!["roles"], KEY, "the roles this caller may request"),
        (vec!["exec", "ci", "--ttl", "5m", "--", "psql", "-tA", "-c", psql], KEY, "psql with a user of its own"),
        (vec!["leases", "list"], KEY, "nothing live: exec revoked its lease when psql ended"),
        (vec!["creds", "ci"], (KEY.0, "a-wrong-secret"), "signed with the wrong secret"),
    ] {
        let shown: Vec<String> =
            args.iter().map(|a| if a.contains(' ') { format!("\"{a}\"") } else { a.to_string() }).collect();
        println!("\n$ keyturn {}      # {note}", shown.join(" "));
        let mut command = gateway::cli(&gw.url, key);
        command.args(&args).env("PGSSLMODE", "verify-full").env("PGSSLROOTCERT", &env.h.ca_file);
        let out = tokio::task::block_in_place(|| command.output()).expect("run keyturn");
        print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        println!("(exit {})", out.status.code().map_or("by a signal".to_owned(), |c| c.to_string()));
    }
}

async fn print_versions(env: &TestEnv, arn: &str, mariadb: bool) {
    let versions = env
        .sm
        .list_secret_version_ids()
        .secret_id(arn)
        .include_deprecated(true)
        .send()
        .await
        .expect("ListSecretVersionIds");
    let mut rows: Vec<_> = versions.versions().iter().collect();
    let created =
        |v: &&aws_sdk_secretsmanager::types::SecretVersionsListEntry| v.created_date().map_or(0.0, |d| d.as_secs_f64());
    rows.sort_by(|a, b| created(a).total_cmp(&created(b)));
    // The password's fingerprint: equal passwords show equal, and nothing of them shows.
    println!("  {:<10} {:<26} {:<22} {:<12} logs in?", "version", "stages", "username", "password");
    for v in rows {
        let id = v.version_id().unwrap_or_default();
        let Ok(value) = env.sm.get_secret_value().secret_id(arn).version_id(id).send().await else {
            continue;
        };
        let Some(json) = value.secret_string().and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
            continue;
        };
        let (user, password) = (json["username"].as_str().unwrap_or("?"), json["password"].as_str().unwrap_or(""));
        let stages = if v.version_stages().is_empty() { "(none)".to_owned() } else { v.version_stages().join(",") };
        let logs_in = match mariadb {
            true => env.can_login_mariadb(user, password).await,
            false => env.can_login(user, password).await,
        };
        let works = if logs_in { "yes" } else { "no (refused)" };
        let shown = keyturn_tests::password_fingerprint(password);
        println!("  {:<10} {:<26} {:<22} {:<12} {works}", &id[..8.min(id.len())], stages, user, shown);
    }
}
