//! keyturn: credentials that nobody rotates by hand and that do not outlive their use.
//!
//! Every decision lives in this crate; the Lambda binaries under `functions/` only build
//! configuration and clients once per container and hand events to it.
//!
//! - [`rotation`]: Secrets Manager's four-step rotation protocol, as pure decisions over a
//!   secret's metadata plus small I/O traits, and the database and IAM key rotations built
//!   on it.
//! - [`backend`]: one interface per credential kind: databases (PostgreSQL; MySQL and
//!   MariaDB, with TLS) and, with `lease`, AWS credentials (STS sessions, IAM users, RDS
//!   tokens).
//! - [`lease`]: dynamic credentials with leases: the roles file and the pure decisions
//!   (TTLs, renewal cap, who may act, principal patterns, usernames, session names), clock
//!   injected, the `LeaseStore` trait, and with `lease` the service and its HTTP API.
//! - [`aws`]: the Secrets Manager, RDS, IAM, STS and DynamoDB adapters behind those traits.
//! - [`contract`]: the credentials API's routes, request and answers as types (serde
//!   only, in every feature set): what the issuer writes and the CLI reads.
//! - `app`: the wiring, one builder per function (configuration to wired service).
//!
//! Features: `database` (drivers, RDS) for rotate-database, `iam` (IAM, STS) for
//! rotate-iam-key, `lease` (both, and DynamoDB) for the credentials issuer and the reaper.
//! - [`password`]: the local CSPRNG password generator.
//! - [`config`]: typed configuration read once from the environment.
//! - [`telemetry`]: JSON log lines that honour Lambda's logging controls.
//! - [`metrics`]: CloudWatch metrics as embedded-metric-format lines (the reaper's).
//! - [`lambda`]: serving rotation events under the Lambda runtime.
//! - [`time`]: UTC times to the second (`YYYY-MM-DDTHH:MM:SSZ`), in every feature set.

#[cfg(any(feature = "database", feature = "iam", feature = "lease"))]
pub mod app;
pub mod aws;
pub mod backend;
#[cfg(any(feature = "database", feature = "iam"))]
pub mod config;
pub mod contract;
pub mod lambda;
pub mod lease;
pub mod metrics;
pub mod password;
pub mod rotation;
pub mod telemetry;
pub mod time;

#[cfg(test)]
mod layer_rule;
