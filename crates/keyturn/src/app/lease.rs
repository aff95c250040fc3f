//! The lease functions' wiring (issue-credentials and reap-leases share it): their
//! configuration turned into the lease service, with the DynamoDB, Secrets Manager, RDS and
//! AWS credential adapters and the database backends.

use crate::lease::ports::{Ports, SystemClock};
use crate::lease::role::Roles;
use crate::lease::service::LeaseService;
use crate::lease::store::LeaseStore;
use crate::password::PasswordPolicy;

/// The ports as both lease functions run them: AWS's adapters, the database backends,
/// the system clock; the lease store DynamoDB unless the bench puts its in-memory one.
pub struct Deployed<S = crate::aws::dynamodb::DynamoLeaseStore>(std::marker::PhantomData<S>);

impl<S: LeaseStore + 'static> Ports for Deployed<S> {
    type Store = S;
    type Users = crate::backend::Databases;
    type Aws = crate::aws::credentials::AwsIssuer;
    type Secrets = crate::aws::secretsmanager::SecretsManagerStore;
    type Rds = crate::aws::rds::RdsClient;
    type Clock = SystemClock;
}

/// The service as both lease functions run it.
pub type Issuer = LeaseService<Deployed>;

/// Why the lease service could not be built (at cold start: the function does not start).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("roles file: {0}")]
    Roles(#[from] crate::lease::role::RolesError),
    #[error(transparent)]
    Tls(#[from] crate::backend::tls::TlsSetupError),
}

/// Turns the lease functions' configuration into the service: the one wiring `main`, the
/// tests and the bench share.
pub fn build(config: &crate::config::LeaseConfig, sdk: &aws_config::SdkConfig) -> Result<Issuer, BuildError> {
    build_with_store(config, sdk, crate::aws::dynamodb::DynamoLeaseStore::new(sdk, config.lease_table.clone()))
}

/// [`build`] with another lease store (the bench's in-memory one, to measure the database
/// work alone).
pub fn build_with_store<S: LeaseStore + 'static>(
    config: &crate::config::LeaseConfig,
    sdk: &aws_config::SdkConfig,
    store: S,
) -> Result<LeaseService<Deployed<S>>, BuildError> {
    let roles = Roles::load(&config.roles_file)?;
    let mut users = crate::backend::Databases::new(&config.extra_ca_files, config.timeouts)?;
    users.postgres = users.postgres.with_generated_password_iterations(config.scram_iterations);
    Ok(LeaseService::new(
        roles,
        store,
        users,
        crate::aws::credentials::AwsIssuer::new(sdk),
        crate::aws::secretsmanager::SecretsManagerStore::new(sdk, config.secrets_manager_endpoint.as_deref()),
        crate::aws::rds::RdsClient::new(sdk),
        SystemClock { offset: config.clock_offset },
        PasswordPolicy::default(),
    ))
}
