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
        crate::lease::admin::Admins::new(
            crate::aws::secretsmanager::SecretsManagerStore::new(sdk, config.secrets_manager_endpoint.as_deref()),
            crate::aws::rds::RdsClient::new(sdk),
        ),
        SystemClock { offset: config.clock_offset },
        PasswordPolicy::default(),
    ))
}

#[cfg(test)]
mod tests {
    /// Both lease functions build their service from a roles file of comments only (the
    /// default a stack deploys), with no network call: nothing to check, nothing to read.
    #[tokio::test]
    async fn both_functions_start_with_a_roles_file_of_comments_only() {
        let dir = std::env::temp_dir().join(format!("keyturn-empty-roles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("roles.toml");
        std::fs::write(&file, "# No roles: see roles.example.toml.\n").unwrap();
        let vars = [
            ("KEYTURN_ROLES_FILE", file.to_str().unwrap()),
            ("KEYTURN_LEASE_TABLE", "keyturn-leases"),
            // Nothing listens there: a call would fail the check below.
            ("SECRETS_MANAGER_ENDPOINT", "http://127.0.0.1:9"),
        ];
        let config =
            crate::config::LeaseConfig::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let service = super::build(&config, &sdk).expect("the service builds");
        assert_eq!(service.roles_for("arn:aws:iam::123456789012:role/anyone").count(), 0);
        assert!(service.check_admin_secrets().await.is_empty(), "the reaper's cold-start check has nothing to read");
        std::fs::remove_dir_all(&dir).ok();
    }
}
