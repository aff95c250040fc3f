//! keyturn's integration tests, one module per area, in one test binary: linked once, and
//! run in one process whose services (PostgreSQL, moto, MariaDB; `keyturn_tests::harness`)
//! every module shares. Tests isolate themselves by name; whatever a test changes
//! server-wide (moto's IAM authentication, MariaDB's global sql_mode, a session that makes
//! revocations fail) it does on a server of its own the harness starts for it, as tests
//! of different modules run beside each other. Run one area with
//! `cargo test --workspace --test it -- lease_api::` (docs/testing.md).

// Rotation: Secrets Manager's four steps on each engine and on IAM keys.
mod iam_deactivation_race;
mod iam_rotation;
mod mariadb_rotation;
mod mariadb_sql_mode;
mod postgres_rotation;
mod secret_attacks;
mod timeouts;

// Dynamic credentials: the database backends, the lease store, the issuer's API.
mod aws_credentials;
mod lease_api;
mod lease_attacks;
mod lease_aws;
mod lease_connections;
mod lease_store;
mod mariadb_definer;
mod mariadb_dynamic;
mod postgres_dynamic;
mod rds_admin;
mod reaper;

// The function binaries under the Lambda Runtime API emulator, and their configuration.
mod lambda_e2e;
mod lease_e2e;
mod roles_file;
mod samples;
mod trace_logs;

// The CLI (and roles deploy against moto's CloudFormation and Lambda), and the drivers
// applications log in with.
mod cli;
mod cli_hostile;
mod cli_iam_wait;
mod cli_install;
mod cli_retry;
mod clients;
mod roles_deploy;
