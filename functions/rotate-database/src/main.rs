//! rotate-database: the Secrets Manager rotation function for database secrets
//! (PostgreSQL, Aurora PostgreSQL, MySQL, Aurora MySQL, MariaDB).
//!
//! `main` reads configuration and builds the AWS clients, TLS roots and backend once per
//! container; each invocation only borrows them.

// The rotation future nests deep async calls; the default limit is too low to lay it out.
#![recursion_limit = "256"]

use keyturn::aws::rds::RdsClient;
use keyturn::aws::secretsmanager::SecretsManagerStore;
use keyturn::backend::mysql::MysqlBackend;
use keyturn::backend::postgres::PostgresBackend;
use keyturn::backend::tls;
use keyturn::backend::Databases;
use keyturn::config::RotateDatabaseConfig;
use keyturn::rotation::database::DatabaseRotation;
use keyturn::rotation::Rotator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    keyturn::telemetry::init();
    let config = RotateDatabaseConfig::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let store = SecretsManagerStore::new(&sdk, config.secrets_manager_endpoint.as_deref());
    let backend = Databases {
        postgres: PostgresBackend::new(tls::client_config(&config.extra_ca_files)?, config.timeouts),
        mysql: MysqlBackend::new(&config.extra_ca_files, config.timeouts)?,
    };
    let target = DatabaseRotation::new(backend, RdsClient::new(&sdk), config.strategy, config.passwords)
        .with_admin_secrets(config.admin_secrets);
    let rotator = &Rotator::new(store, target);
    keyturn::lambda::serve_rotation(rotator).await
}
