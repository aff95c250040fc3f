//! IAM and STS behind [`IamKeys`]: one client each, built once per container. testSecret's
//! `GetCallerIdentity` signs with the pending key through a per-request credentials
//! override, so no client is built per call.

use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_sts::config::Credentials;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;

use super::describe_sdk_error;
use crate::backend::aws::AwsError;
use crate::rotation::iam_key::{AccessKey, IamKeys, IamUser};

/// IAM and STS clients.
#[derive(Clone, Debug)]
pub struct IamClient {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
}

impl IamClient {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self { iam: aws_sdk_iam::Client::new(sdk), sts: aws_sdk_sts::Client::new(sdk) }
    }
}

/// An IAM or STS SDK error as keyturn reports it; `not_found` for NoSuchEntity.
pub(super) fn iam_error<E>(operation: &'static str, err: aws_sdk_iam::error::SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let not_found = err.as_service_error().and_then(|e| e.code()) == Some("NoSuchEntity");
    let (message, retryable) = describe_sdk_error(&err);
    AwsError { operation, message, not_found, retryable }
}

impl IamKeys for IamClient {
    // Each call is boxed: the SDK's futures are deep, and nested unboxed in the services and
    // handlers above, their layout runs past the compiler's default recursion limit. One
    // allocation per call is nothing beside its round trip.
    fn user(&self, username: &str) -> impl Future<Output = Result<IamUser, AwsError>> + Send {
        Box::pin(async move {
            let out = self.iam.get_user().user_name(username).send().await.map_err(|e| iam_error("GetUser", e))?;
            let user = out.user().ok_or_else(|| AwsError {
                operation: "GetUser",
                message: "no user in the response".into(),
                not_found: true,
                retryable: false,
            })?;
            Ok(IamUser {
                arn: user.arn().to_owned(),
                path: user.path().to_owned(),
                tags: user.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect(),
            })
        })
    }

    fn keys(&self, username: &str) -> impl Future<Output = Result<Vec<AccessKey>, AwsError>> + Send {
        Box::pin(async move {
            let out = self
                .iam
                .list_access_keys()
                .user_name(username)
                .send()
                .await
                .map_err(|e| iam_error("ListAccessKeys", e))?;
            Ok(out
                .access_key_metadata()
                .iter()
                .filter_map(|k| {
                    let active = k.status() == Some(&aws_sdk_iam::types::StatusType::Active);
                    let created = k.create_date().map(|d| d.secs());
                    Some(AccessKey { id: k.access_key_id()?.to_owned(), active, created })
                })
                .collect())
        })
    }

    fn create_key(&self, username: &str) -> impl Future<Output = Result<(String, SecretString), AwsError>> + Send {
        Box::pin(async move {
            let out = self
                .iam
                .create_access_key()
                .user_name(username)
                .send()
                .await
                .map_err(|e| iam_error("CreateAccessKey", e))?;
            let key = out.access_key().ok_or_else(|| AwsError {
                operation: "CreateAccessKey",
                message: "no key in the response".into(),
                not_found: false,
                retryable: false,
            })?;
            Ok((key.access_key_id().to_owned(), SecretString::from(key.secret_access_key().to_owned())))
        })
    }

    fn deactivate_key(&self, username: &str, key_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send {
        Box::pin(async move {
            let inactive = aws_sdk_iam::types::StatusType::Inactive;
            match self.iam.update_access_key().user_name(username).access_key_id(key_id).status(inactive).send().await {
                Ok(_) => Ok(()),
                Err(e) => match iam_error("UpdateAccessKey", e) {
                    gone if gone.not_found => Ok(()),
                    other => Err(other),
                },
            }
        })
    }

    fn delete_key(&self, username: &str, key_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send {
        Box::pin(async move {
            match self.iam.delete_access_key().user_name(username).access_key_id(key_id).send().await {
                Ok(_) => Ok(()),
                Err(e) => match iam_error("DeleteAccessKey", e) {
                    gone if gone.not_found => Ok(()),
                    other => Err(other),
                },
            }
        })
    }

    fn tag_user(&self, username: &str, key: &str, value: &str) -> impl Future<Output = Result<(), AwsError>> + Send {
        Box::pin(async move {
            let tag = aws_sdk_iam::types::Tag::builder().key(key).value(value).build().map_err(|e| AwsError {
                operation: "TagUser",
                message: e.to_string(),
                not_found: false,
                retryable: false,
            })?;
            self.iam.tag_user().user_name(username).tags(tag).send().await.map_err(|e| iam_error("TagUser", e))?;
            Ok(())
        })
    }

    fn untag_user(&self, username: &str, key: &str) -> impl Future<Output = Result<(), AwsError>> + Send {
        Box::pin(async move {
            self.iam
                .untag_user()
                .user_name(username)
                .tag_keys(key)
                .send()
                .await
                .map_err(|e| iam_error("UntagUser", e))?;
            Ok(())
        })
    }

    fn caller_arn(&self, key_id: &str, secret: &SecretString) -> impl Future<Output = Result<String, AwsError>> + Send {
        Box::pin(async move {
            let credentials = Credentials::new(key_id, secret.expose_secret(), None, None, "keyturn-pending-key");
            let out = self
                .sts
                .get_caller_identity()
                .customize()
                .config_override(aws_sdk_sts::config::Builder::default().credentials_provider(credentials))
                .send()
                .await
                .map_err(|e| iam_error("GetCallerIdentity", e))?;
            out.arn().map(str::to_owned).ok_or_else(|| AwsError {
                operation: "GetCallerIdentity",
                message: "no ARN in the response".into(),
                not_found: false,
                retryable: true,
            })
        })
    }
}
