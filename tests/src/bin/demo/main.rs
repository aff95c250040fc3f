//! `make demo`: the whole bundle at work on this machine, printed as a story a newcomer
//! reads top to bottom. PostgreSQL 15 and MariaDB (TLS from a fresh CA) and moto (the AWS
//! APIs, with IAM authentication on, so that a deleted key is really refused) start on
//! loopback; every function runs as its real binary under cargo-lambda's Lambda Runtime
//! API emulator. The parts:
//!
//! 1. Rotation ([`rotation`]): a PostgreSQL and a MariaDB secret rotated three times
//!    each, single-user and alternating-users, by rotate-database; an IAM user's access
//!    key rotated three times by rotate-iam-key. After each rotation: every version of
//!    the secret, its stages, and whether its credentials still log in (or sign).
//! 2. Dynamic credentials ([`dynamic`]): the `keyturn` CLI, signing with SigV4, through a
//!    local gateway that verifies signatures as API Gateway does, to issue-credentials:
//!    a PostgreSQL and a MariaDB user each used by a command, an STS session, an IAM user
//!    and an RDS token; the caller's leases; a renewal; a revocation; a lease left to
//!    expire and reap-leases removing its user; refused callers.
//!
//! Nothing secret is printed: passwords, secret access keys, session tokens and RDS
//! tokens show as keyed fingerprints ([`keyturn_tests::password_fingerprint`]), and each
//! command's output is checked for the secrets seen so far before it is printed
//! ([`show`]). Times are UTC, ISO 8601.

mod dynamic;
mod rotation;
mod show;

use keyturn_tests::TestEnv;

#[tokio::main]
async fn main() {
    let started = std::time::Instant::now();
    println!("Starting PostgreSQL 15, MariaDB (both with TLS from a fresh CA) and moto on loopback...");
    let env = TestEnv::new("demo").await;
    let mariadb_port = env.h.mariadb().port;
    // moto with IAM authentication on, for everything IAM: a second server (the first
    // accepts any signature, which the database part does not need).
    let aws = TestEnv::authenticated("demo").await;
    println!(
        "   PostgreSQL on 127.0.0.1:{}, MariaDB on 127.0.0.1:{mariadb_port}, moto on {} (IAM authentication on: {})",
        env.h.pg.port, env.h.moto.endpoint, aws.moto.endpoint
    );
    println!("   logs of every server and function: {}", env.h.work.display());

    show::part(
        "1. Rotation",
        "Secrets Manager's four steps (createSecret, setSecret, testSecret, finishSecret) invoked on the \
         real rotation functions, three rotations per secret.",
    );
    rotation::databases(&env).await;
    rotation::iam_key(&aws).await;

    show::part(
        "2. Dynamic credentials",
        "The keyturn CLI as a CI job runs it: each request signed with SigV4, verified by a local gateway as \
         API Gateway does, and served by the real issue-credentials function.",
    );
    dynamic::every_kind(&aws).await;

    println!(
        "\nDone in {} s. Everything above ran on this machine; the servers stop with this process.",
        started.elapsed().as_secs()
    );
}
