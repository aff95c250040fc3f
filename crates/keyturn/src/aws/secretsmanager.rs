//! Secrets Manager as the rotation engine's [`SecretStore`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::Client;
use secrecy::{ExposeSecret, SecretString};

use super::describe_sdk_error;
use crate::rotation::store::{SecretMetadata, SecretStore, Selector, StageMove, StoreError, VersionInfo};

/// A Secrets Manager client, built once per container.
#[derive(Clone, Debug)]
pub struct SecretsManagerStore {
    client: Client,
}

impl SecretsManagerStore {
    /// Wraps a client built from the shared SDK config; `endpoint` overrides the service's
    /// endpoint (AWS's templates honour `SECRETS_MANAGER_ENDPOINT` for VPC endpoints).
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let mut config = aws_sdk_secretsmanager::config::Builder::from(sdk);
        if let Some(url) = endpoint {
            config = config.endpoint_url(url);
        }
        Self { client: Client::from_conf(config.build()) }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn store_error<E>(operation: &'static str, err: aws_sdk_secretsmanager::error::SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let (message, retryable) = describe_sdk_error(&err);
    StoreError { operation, message, retryable }
}

impl SecretStore for SecretsManagerStore {
    // Each call is boxed: the SDK's futures are deep, and nested unboxed in the services and
    // handlers above, their layout runs past the compiler's default recursion limit. One
    // allocation per call is nothing beside its round trip.
    fn describe(&self, secret_id: &str) -> impl Future<Output = Result<SecretMetadata, StoreError>> + Send {
        Box::pin(async move {
            let out = self
                .client
                .describe_secret()
                .secret_id(secret_id)
                .send()
                .await
                .map_err(|e| store_error("DescribeSecret", e))?;
            let versions = out
                .version_ids_to_stages()
                .into_iter()
                .flatten()
                .map(|(id, stages)| (id.clone(), stages.iter().cloned().collect::<BTreeSet<_>>()))
                .collect();
            let tags = out
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                .collect::<BTreeMap<_, _>>();
            Ok(SecretMetadata {
                arn: out.arn().unwrap_or(secret_id).to_owned(),
                name: out.name().unwrap_or_default().to_owned(),
                rotation_enabled: out.rotation_enabled().unwrap_or(false),
                versions,
                tags,
            })
        })
    }

    fn get(
        &self,
        secret_id: &str,
        selector: Selector<'_>,
    ) -> impl Future<Output = Result<Option<SecretString>, StoreError>> + Send {
        Box::pin(async move {
            let request = self.client.get_secret_value().secret_id(secret_id);
            let request = match selector {
                Selector::Stage(stage) => request.version_stage(stage),
                Selector::Version(id) => request.version_id(id),
                Selector::VersionAndStage(id, stage) => request.version_id(id).version_stage(stage),
            };
            match request.send().await {
                Ok(out) => Ok(out.secret_string().map(|s| SecretString::from(s.to_owned()))),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
                Err(e) => Err(store_error("GetSecretValue", e)),
            }
        })
    }

    fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        Box::pin(async move {
            self.client
                .put_secret_value()
                .secret_id(secret_id)
                .client_request_token(token)
                .secret_string(value.expose_secret())
                .version_stages(crate::rotation::store::AWSPENDING)
                .set_rotation_token(rotation_token.map(str::to_owned))
                .send()
                .await
                .map_err(|e| store_error("PutSecretValue", e))?;
            Ok(())
        })
    }

    fn move_stage(&self, secret_id: &str, change: &StageMove) -> impl Future<Output = Result<(), StoreError>> + Send {
        Box::pin(async move {
            self.client
                .update_secret_version_stage()
                .secret_id(secret_id)
                .version_stage(change.stage)
                .set_move_to_version_id(change.move_to.clone())
                .set_remove_from_version_id(change.remove_from.clone())
                .send()
                .await
                .map_err(|e| store_error("UpdateSecretVersionStage", e))?;
            Ok(())
        })
    }

    fn list_versions(&self, secret_id: &str) -> impl Future<Output = Result<Vec<VersionInfo>, StoreError>> + Send {
        Box::pin(async move {
            let mut versions = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let out = self
                    .client
                    .list_secret_version_ids()
                    .secret_id(secret_id)
                    .include_deprecated(true)
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| store_error("ListSecretVersionIds", e))?;
                for v in out.versions() {
                    let Some(id) = v.version_id() else { continue };
                    versions.push(VersionInfo {
                        id: id.to_owned(),
                        stages: v.version_stages().iter().cloned().collect(),
                        created: v.created_date().map(|d| d.as_secs_f64()),
                    });
                }
                match out.next_token() {
                    Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                    _ => return Ok(versions),
                }
            }
        })
    }
}
