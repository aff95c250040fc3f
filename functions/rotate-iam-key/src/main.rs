//! rotate-iam-key: the Secrets Manager rotation function for IAM access keys.
//!
//! `main` reads configuration and builds the Secrets Manager, IAM and STS clients once per
//! container; each invocation only borrows them.

// The rotation future nests deep async calls; the default limit is too low to lay it out.
#![recursion_limit = "256"]

use keyturn::aws::iam::IamClient;
use keyturn::aws::secretsmanager::SecretsManagerStore;
use keyturn::config::RotateIamKeyConfig;
use keyturn::rotation::iam_key::IamKeyRotation;
use keyturn::rotation::Rotator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    keyturn::telemetry::init();
    let config = RotateIamKeyConfig::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let store = SecretsManagerStore::new(&sdk, config.secrets_manager_endpoint.as_deref());
    let target = IamKeyRotation::new(IamClient::new(&sdk), config.scope, config.test_timeout)
        .deactivating_previous(config.deactivate_previous);
    let rotator = &Rotator::new(store, target);
    keyturn::lambda::serve_rotation(rotator).await
}
