//! rotate-iam-key's wiring: its configuration turned into the rotator, with the Secrets
//! Manager and IAM adapters.

/// rotate-iam-key's rotator, as [`build`] wires it.
pub type IamRotator = crate::rotation::Rotator<
    crate::aws::secretsmanager::SecretsManagerStore,
    crate::rotation::iam_key::IamKeyRotation<crate::aws::iam::IamClient>,
>;

/// Turns rotate-iam-key's configuration into its rotator: the one wiring `main` and the
/// tests share.
pub fn build(config: &crate::config::RotateIamKeyConfig, sdk: &aws_config::SdkConfig) -> IamRotator {
    let store = crate::aws::secretsmanager::SecretsManagerStore::new(sdk, config.secrets_manager_endpoint.as_deref());
    let target = crate::rotation::iam_key::IamKeyRotation::new(
        crate::aws::iam::IamClient::new(sdk),
        config.scope.clone(),
        config.test_timeout,
    )
    .deactivating_previous(config.deactivate_previous);
    crate::rotation::Rotator::new(store, target)
}
