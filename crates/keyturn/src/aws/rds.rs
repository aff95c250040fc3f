//! RDS lookups for admin secrets that RDS manages (those of RDS's master user): such a
//! secret holds only `username` and `password`, and its `aws:rds:primaryDB*Arn` tag says
//! which instance or cluster it belongs to, as in AWS's templates. The answer also says
//! which secret RDS manages for that instance or cluster (`MasterUserSecret`), which
//! [`crate::rotation::database::rds_managed_endpoint`] checks against the secret.

use aws_sdk_rds::Client;
use std::future::Future;

use super::describe_sdk_error;
use crate::rotation::database::{RdsEndpoint, RdsLookup};

/// An RDS client, built once per container.
#[derive(Clone, Debug)]
pub struct RdsClient {
    client: Client,
}

impl RdsClient {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self { client: Client::new(sdk) }
    }
}

impl RdsLookup for RdsClient {
    // Each call is boxed: the SDK's futures are deep, and nested unboxed in the services and
    // handlers above, their layout runs past the compiler's default recursion limit. One
    // allocation per call is nothing beside its round trip.
    fn instance(&self, arn: &str) -> impl Future<Output = Result<RdsEndpoint, String>> + Send {
        Box::pin(async move {
            let out = self
                .client
                .describe_db_instances()
                .db_instance_identifier(arn)
                .send()
                .await
                .map_err(|e| describe_sdk_error(&e).0)?;
            let db = out.db_instances().first().ok_or("no such DB instance")?;
            let endpoint = db.endpoint().ok_or("the instance has no endpoint yet")?;
            Ok(RdsEndpoint {
                host: endpoint.address().ok_or("the instance endpoint has no address")?.to_owned(),
                port: endpoint.port().and_then(|p| u16::try_from(p).ok()).ok_or("the instance endpoint has no port")?,
                engine: db.engine().unwrap_or_default().to_owned(),
                master_user_secret: db.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_owned),
            })
        })
    }

    fn cluster(&self, arn: &str) -> impl Future<Output = Result<RdsEndpoint, String>> + Send {
        Box::pin(async move {
            let out = self
                .client
                .describe_db_clusters()
                .db_cluster_identifier(arn)
                .send()
                .await
                .map_err(|e| describe_sdk_error(&e).0)?;
            let db = out.db_clusters().first().ok_or("no such DB cluster")?;
            Ok(RdsEndpoint {
                host: db.endpoint().ok_or("the cluster has no endpoint yet")?.to_owned(),
                port: db.port().and_then(|p| u16::try_from(p).ok()).ok_or("the cluster has no port")?,
                engine: db.engine().unwrap_or_default().to_owned(),
                master_user_secret: db.master_user_secret().and_then(|s| s.secret_arn()).map(str::to_owned),
            })
        })
    }
}
