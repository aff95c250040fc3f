//! rotate-database's wiring: its configuration turned into the rotator, with the Secrets
//! Manager and RDS adapters and the database backends.

/// rotate-database's rotator, as [`build`] wires it.
pub type DatabaseRotator = crate::rotation::Rotator<
    crate::aws::secretsmanager::SecretsManagerStore,
    crate::rotation::database::DatabaseRotation<crate::backend::Databases, crate::aws::rds::RdsClient>,
>;

/// Turns rotate-database's configuration into its rotator: the one wiring `main`, the
/// tests and the bench share.
pub fn build(
    config: &crate::config::RotateDatabaseConfig,
    sdk: &aws_config::SdkConfig,
) -> Result<DatabaseRotator, crate::backend::tls::TlsSetupError> {
    let store = crate::aws::secretsmanager::SecretsManagerStore::new(sdk, config.secrets_manager_endpoint.as_deref());
    let backend = crate::backend::Databases::new(&config.extra_ca_files, config.timeouts)?;
    let target = crate::rotation::database::DatabaseRotation::new(
        backend,
        crate::aws::rds::RdsClient::new(sdk),
        config.strategy,
        config.passwords.clone(),
    )
    .with_admin_secrets(config.admin_secrets.clone());
    Ok(crate::rotation::Rotator::new(store, target))
}
