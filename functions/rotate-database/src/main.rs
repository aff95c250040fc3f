//! rotate-database: the Secrets Manager rotation function for database secrets
//! (PostgreSQL, Aurora PostgreSQL, MySQL, Aurora MySQL, MariaDB).
//!
//! `main` reads configuration and builds the AWS clients, TLS roots and backend once per
//! container (`keyturn::app::rotate_database::build`, which the tests and the bench also
//! use); each invocation only borrows them.

use keyturn::config::RotateDatabaseConfig;
use keyturn::telemetry::cannot_start;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    keyturn::telemetry::init();
    let config = RotateDatabaseConfig::from_env().map_err(cannot_start)?;
    let sdk = aws_config::load_from_env().await;
    let rotator = &keyturn::app::rotate_database::build(&config, &sdk).map_err(cannot_start)?;
    keyturn::lambda::serve_rotation(rotator).await
}
