//! Part 1: rotation through the real function binaries: rotate-database for a PostgreSQL
//! and a MariaDB secret in each strategy, rotate-iam-key for an IAM user's access key.
//! After each rotation, every version of the secret: its stages, its user or key, and
//! whether it still logs in (or signs).

use keyturn::rotation::database::Strategy;
use keyturn_tests::iam::{access_keys, identity, signing_as, user_with_key_secret};
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::{password_fingerprint, random_token, TestEnv};
use serde_json::{json, Value};

use crate::show::{self, OUT};

/// What a secret's credentials are, and so how a version is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Mariadb,
    IamKey,
}

/// PostgreSQL and MariaDB, single-user and alternating-users: one deployment of
/// rotate-database per strategy (the strategy is the deployment's, the engine the
/// secret's).
pub async fn databases(env: &TestEnv) {
    let binary = function_binary("rotate-database");
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let mut emulator = Emulator::start(&env.h.work.join(format!("emulator-{}.log", strategy.as_str())));
        let log = env.h.work.join(format!("rotate-database-{}.log", strategy.as_str()));
        emulator.run_function(&binary, "rotate-database", &env.function_env(strategy), &log);

        for kind in [Kind::Postgres, Kind::Mariadb] {
            let name = match (strategy, kind) {
                (Strategy::SingleUser, Kind::Postgres) => "app",
                (Strategy::SingleUser, _) => "shop",
                (Strategy::AlternatingUsers, Kind::Postgres) => "svc",
                (Strategy::AlternatingUsers, _) => "web",
            };
            let user = env.unique(name);
            let password = random_token();
            let (mut secret, admin) = if kind == Kind::Mariadb {
                env.create_mariadb_account(&user, &password, "").await;
                (env.mariadb_secret(&user, &password), env.mariadb_admin_secret())
            } else {
                env.create_role(&user, &password).await;
                (env.user_secret(&user, &password), env.admin_secret())
            };
            let what = match strategy {
                Strategy::SingleUser => "the user changes its own password; the old one stops working at once.",
                Strategy::AlternatingUsers => {
                    secret["masterarn"] = json!(env.create_secret(&format!("{name}-admin"), &admin).await);
                    "the admin gives a clone user the new password, so the previous version keeps working."
                }
            };
            let arn = env.create_secret(name, &secret).await;
            let engine = if kind == Kind::Mariadb { "MariaDB" } else { "PostgreSQL" };
            show::section(&format!("{engine}, {}: secret {}", strategy.as_str(), secret_name(&arn)), what);
            note_deployment("rotate-database", &format!("KEYTURN_STRATEGY={}", strategy.as_str()), &log);
            for round in 1..=3 {
                rotate(env, &emulator, "rotate-database", &arn, round).await;
                print_versions(env, &arn, kind).await;
            }
        }
    }
}

/// An IAM user's access key, rotated by rotate-iam-key: a new key each time, the
/// previous one kept (AWSPREVIOUS) until the next rotation deletes it.
pub async fn iam_key(env: &TestEnv) {
    const PATH: &str = "/keyturn/";
    let (arn, user) = user_with_key_secret(env, "deployer", PATH).await;
    let mut emulator = Emulator::start(&env.h.work.join("emulator-iam.log"));
    let log = env.h.work.join("rotate-iam-key.log");
    emulator.run_function(&function_binary("rotate-iam-key"), "rotate-iam-key", &env.iam_rotation_env(PATH), &log);
    show::section(
        &format!("IAM access key of user {user}: secret {}", secret_name(&arn)),
        "a new key per rotation; the previous one works until the next rotation deletes it (at most two keys).",
    );
    note_deployment("rotate-iam-key", &format!("KEYTURN_IAM_PATH_PREFIX={PATH}"), &log);
    for round in 1..=3 {
        rotate(env, &emulator, "rotate-iam-key", &arn, round).await;
        print_versions(env, &arn, Kind::IamKey).await;
        let held: Vec<String> = access_keys(env, &user)
            .await
            .into_iter()
            .map(|(id, active)| format!("{id} ({})", if active { "Active" } else { "Inactive" }))
            .collect();
        println!("{OUT}  IAM holds for {user}: {}", held.join(", "));
    }
}

fn note_deployment(function: &str, setting: &str, log: &std::path::Path) {
    show::note(&format!("({function} with {setting}; its log: {})", log.display()));
}

/// A secret's name, from its ARN (`...:secret:NAME-AbCdEf`).
fn secret_name(arn: &str) -> &str {
    arn.rsplit_once(":secret:").map_or(arn, |(_, name)| name)
}

/// One rotation as Secrets Manager runs it: `RotateSecret` leaves a pending version, then
/// the four steps through `cargo lambda invoke`.
async fn rotate(env: &TestEnv, emulator: &Emulator, function: &str, arn: &str, round: u32) {
    let token = env.start_rotation(arn).await;
    let started = std::time::Instant::now();
    if let Err(e) = emulator.rotate(function, arn, &token) {
        eprintln!("{function} failed: {e}");
        std::process::exit(1);
    }
    println!(
        "\n{OUT}rotation {round} (token {}…): four steps through cargo lambda invoke in {} ms",
        &token[..8],
        started.elapsed().as_millis()
    );
}

/// Every version of the secret, oldest first: id, stages, user (or access key id), the
/// password's (or secret key's) fingerprint, and whether it logs in (or signs).
async fn print_versions(env: &TestEnv, arn: &str, kind: Kind) {
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
    let (who, secret, works, header) = match kind {
        Kind::IamKey => ("accessKeyId", "secretAccessKey", "signs?", ("access key id", "secret key")),
        _ => ("username", "password", "logs in?", ("username", "password")),
    };
    println!("{OUT}  {:<10} {:<26} {:<22} {:<12} {works}", "version", "stages", header.0, header.1);
    for v in rows {
        let id = v.version_id().unwrap_or_default();
        let Ok(value) = env.sm.get_secret_value().secret_id(arn).version_id(id).send().await else {
            continue;
        };
        let Some(json) = value.secret_string().and_then(|s| serde_json::from_str::<Value>(s).ok()) else {
            continue;
        };
        let (name, password) = (json[who].as_str().unwrap_or("?"), json[secret].as_str().unwrap_or(""));
        let stages = if v.version_stages().is_empty() { "(none)".to_owned() } else { v.version_stages().join(",") };
        let accepted = match kind {
            Kind::Postgres => env.can_login(name, password).await,
            Kind::Mariadb => env.can_login_mariadb(name, password).await,
            Kind::IamKey => identity(&signing_as(env, name, password, None), 1).await.is_some(),
        };
        let answer = if accepted { "yes" } else { "no (refused)" };
        // The password's fingerprint: equal passwords show equal, and nothing of them shows.
        let shown = password_fingerprint(password);
        println!("{OUT}  {:<10} {:<26} {:<22} {:<12} {answer}", &id[..8.min(id.len())], stages, name, shown);
    }
}
