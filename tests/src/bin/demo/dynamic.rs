//! Part 2: dynamic credentials of every kind through the `keyturn` CLI, the harness's
//! gateway (API Gateway's IAM authorization) and the real issue-credentials binary; then
//! the caller's leases, a renewal, a revocation, a lease left to expire and removed by
//! the real reap-leases binary, and refused callers.

use std::sync::Arc;
use std::time::Duration;

use keyturn::time::iso8601_unix;
use keyturn_tests::gateway::{self, Keys};
use keyturn_tests::iam::{identity, signing_as};
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::lease::{assumable_role, CI, STRANGER};
use keyturn_tests::{allow_policy, random_token, TestEnv};

use crate::show::{self, Cli, Run, OUT};

/// The CI job's access key, which the gateway knows as [`CI`]'s session.
const CI_KEY: (&str, &str) = ("AKIDKEYTURNDEMO", "demo-secret-key");
/// A caller no role allows ([`STRANGER`], a web server's session).
const STRANGER_KEY: (&str, &str) = ("AKIDKEYTURNWEB", "web-secret-key");

/// The roles file: one role per kind, each for sessions of the `ci-runner` role.
async fn roles(env: &TestEnv) -> (String, String, String) {
    let pg_admin = env.create_secret("pg-admin", &env.admin_secret()).await;
    let maria_admin = env.create_secret("maria-admin", &env.mariadb_admin_secret()).await;
    let (pg_group, _) = env.pg_group_with_table("readers").await;
    let (maria_group, _) = env.mariadb_group_with_table("shoppers").await;
    let target_role = assumable_role(env, "deployer").await;
    let boundary = env.create_policy("boundary", &allow_policy(&["iam:*", "sts:*"])).await;
    let path = format!("/{}/", env.unique("leases"));
    let prefix = format!("k{}_", &random_token()[..4]);
    let roles = format!(
        r#"username_prefix = "{prefix}"

[[role]]
name = "ci"
kind = "database"
admin_secret = "{pg_admin}"
groups = ["{pg_group}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "shop"
kind = "database"
admin_secret = "{maria_admin}"
groups = ["{maria_group}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/{target_role}"
external_id = "ext-42"
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "legacy"
kind = "aws-iam-user"
path = "{path}"
permissions_boundary = "{boundary}"
inline_policy = '{inline}'
default_ttl = "1h"
max_ttl = "2h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "orders-iam"
kind = "rds-iam-token"
engine = "postgres"
host = "orders.cluster-abc.us-east-1.rds.amazonaws.com"
port = 5432
region = "us-east-1"
db_user = "orders_app"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#,
        inline = allow_policy(&["iam:ListUsers", "iam:GetUser"]),
    );
    (roles, pg_group, maria_group)
}

/// Every kind, then what happens to a lease after it is issued.
pub async fn every_kind(env: &TestEnv) {
    let (roles, pg_group, maria_group) = roles(env).await;
    let vars = env.lease_env(&roles).await;
    let mut emulator = Emulator::start(&env.h.work.join("emulator-leases.log"));
    let (issuer_log, reaper_log) = (env.h.work.join("issue-credentials.log"), env.h.work.join("reap-leases.log"));
    emulator.run_function(&function_binary("issue-credentials"), "issue-credentials", &vars, &issuer_log);
    emulator.run_function(&function_binary("reap-leases"), "reap-leases", &vars, &reaper_log);
    let emulator = Arc::new(emulator);
    let keys = Keys::from([
        (CI_KEY.0.to_owned(), (CI_KEY.1.to_owned(), CI.to_owned())),
        (STRANGER_KEY.0.to_owned(), (STRANGER_KEY.1.to_owned(), STRANGER.to_owned())),
    ]);
    let gw = gateway::start(gateway::lambda(emulator.clone(), "issue-credentials"), keys).await;
    let cli = Cli::new(&gw.url, env.h.ca_file.clone());
    show::note(&format!("(the caller: {CI}; function logs: {} and {})", issuer_log.display(), reaper_log.display()));

    show::section("The roles this caller may request", "one per kind, from the deployment's roles file.");
    cli.run(CI_KEY, &["roles"], "name, kind, default and maximum TTL");

    databases(&cli, env, &pg_group, &maria_group);
    let iam_user = aws(&cli, env).await;
    let kept = renew_and_list(&cli, env).await;
    revoke(&cli, env, &kept, &iam_user).await;
    expire_and_reap(&cli, env, &emulator).await;

    show::section("Refused callers", "the gateway refuses a bad signature; the issuer, a caller no role allows.");
    cli.run((CI_KEY.0, "not-the-secret"), &["creds", "ci"], "signed with the wrong secret key");
    cli.run(STRANGER_KEY, &["creds", "ci"], "signed correctly, by a web server's role, which no role allows");
}

/// A PostgreSQL and a MariaDB user, each made for one command and dropped when it ends.
fn databases(cli: &Cli, env: &TestEnv, pg_group: &str, maria_group: &str) {
    show::section(
        "A PostgreSQL user for one command (database)",
        "keyturn exec: a new user in the role's group, handed to psql in its environment only, dropped when psql exits.",
    );
    let query = format!("select 'psql logged in as ' || session_user || ', read ' || id from {pg_group}.items");
    cli.run(CI_KEY, &["exec", "ci", "--ttl", "5m", "--", "psql", "-tA", "-c", &query], "psql with a user of its own");

    show::section(
        "A MariaDB user for one command (database)",
        "the same on MariaDB (its client takes the user from the command line, the rest from the environment).",
    );
    let client = format!(
        "mariadb --no-defaults --protocol=TCP --ssl-ca={} --ssl-verify-server-cert -u \"$MYSQL_USER\" -N \
         -e \"select current_user(), id from {maria_group}.items\"",
        env.h.ca_file.display()
    );
    cli.run(CI_KEY, &["exec", "shop", "--ttl", "5m", "--", "sh", "-c", &client], "the mariadb client as that user");
}

/// An STS session, an IAM user and an RDS token, each used where it can be here. Returns
/// the IAM user's run.
async fn aws(cli: &Cli, env: &TestEnv) -> Run {
    show::section(
        "An STS session (aws-sts)",
        "keyturn creds prints export lines for eval; the session's keys then sign as the role.",
    );
    let run = cli.run(CI_KEY, &["creds", "deploy"], "AssumeRole, tagged with the caller and the lease");
    signs(env, &run, 1).await;

    show::section(
        "An IAM user (aws-iam-user)",
        "a user of its own under the role's path, with the role's boundary and policy, and one access key.",
    );
    let iam_user = cli.run(CI_KEY, &["creds", "legacy", "--ttl", "30m"], "a new IAM user and its key");
    signs(env, &iam_user, 20).await;

    show::section(
        "An RDS IAM auth token (rds-iam-token)",
        "a token signed for the role's endpoint and user, valid 15 minutes: psql's password there (no RDS here).",
    );
    cli.run(CI_KEY, &["creds", "orders-iam"], "signed locally; nothing is created");
    iam_user
}

/// Whether the keys a `creds` run printed sign, and as whom (`sts:GetCallerIdentity`).
async fn signs(env: &TestEnv, run: &Run, tries: u32) {
    let token = run.vars.get("AWS_SESSION_TOKEN").map(String::as_str);
    let sdk = signing_as(env, run.var("AWS_ACCESS_KEY_ID"), run.var("AWS_SECRET_ACCESS_KEY"), token);
    let arn = identity(&sdk, tries).await;
    show::note(&format!("GetCallerIdentity with these keys: {}", arn.as_deref().unwrap_or("refused")));
}

/// A MariaDB user kept past one command (`creds`), the caller's leases, and a renewal.
/// Returns the MariaDB user's run.
async fn renew_and_list(cli: &Cli, env: &TestEnv) -> Run {
    show::section(
        "A lease kept, listed and renewed",
        "creds gives a MariaDB user for 10 minutes; leases list shows every live lease of this caller; \
         renew extends one (up to the role's max_ttl).",
    );
    let kept = cli.run(CI_KEY, &["creds", "shop", "--ttl", "10m"], "a MariaDB user kept for a while");
    logs_in(env, &kept).await;
    cli.run(CI_KEY, &["leases", "list"], "lease, role, kind, state, expiry, seconds left, user");
    cli.run(CI_KEY, &["leases", "renew", &kept.lease_id(), "--ttl", "30m"], "30 minutes from now");
    kept
}

/// Whether the MariaDB user a `creds` run printed logs in.
async fn logs_in(env: &TestEnv, run: &Run) {
    let (user, password) = (run.var("MYSQL_USER"), run.var("MYSQL_PWD"));
    let works = env.can_login_mariadb(user, password).await;
    let exists = env.mariadb_user_exists(user).await;
    show::note(&format!(
        "{user} logs in to MariaDB: {}; the account exists: {}",
        if works { "yes" } else { "no (refused)" },
        if exists { "yes" } else { "no" }
    ));
}

/// Explicit revocation: the MariaDB user and the IAM user are deleted at once.
async fn revoke(cli: &Cli, env: &TestEnv, kept: &Run, iam_user: &Run) {
    show::section(
        "Revocation",
        "leases revoke deletes the lease's user now: the MariaDB login and the IAM key are refused from then on.",
    );
    cli.run(CI_KEY, &["leases", "revoke", &kept.lease_id()], "the MariaDB user");
    logs_in(env, kept).await;
    cli.run(CI_KEY, &["leases", "revoke", &iam_user.lease_id()], "the IAM user");
    signs(env, iam_user, 1).await;
}

/// A lease of a second (the kind's minimum) left to expire: on a MariaDB whose event
/// scheduler is off (RDS's default) only the reaper ends it; the real reap-leases binary
/// runs as its schedule would run it.
async fn expire_and_reap(cli: &Cli, env: &TestEnv, emulator: &Emulator) {
    show::section(
        "Expiry and the reaper",
        "a one-second lease left to expire; this MariaDB's event scheduler is off (RDS's default), so the \
         user logs in until reap-leases, run on its schedule, drops it.",
    );
    let short = cli.run(CI_KEY, &["creds", "shop", "--ttl", "1s"], "the shortest TTL");
    logs_in(env, &short).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    show::note(&format!("two seconds later ({}): the lease has expired", iso8601_unix(now())));
    logs_in(env, &short).await;
    println!(
        "\n{OUT}$ cargo lambda invoke reap-leases --data-file events/reap-leases/scheduled.json      # what EventBridge Scheduler sends every minute"
    );
    let sample = keyturn_tests::project_root().join("events/reap-leases/scheduled.json");
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample).expect("the sample event")).expect("JSON");
    let report = tokio::task::block_in_place(|| emulator.invoke_json("reap-leases", &event));
    println!("{OUT}    {report}");
    logs_in(env, &short).await;
    cli.run(CI_KEY, &["leases", "list"], "the STS session and the RDS token stay until they expire by themselves");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
