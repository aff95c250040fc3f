//! IAM, STS and the RDS token signer behind [`AwsCredentials`]: the AWS credentials a lease
//! hands out (STS sessions, IAM users with one access key, RDS IAM tokens).
//!
//! An IAM user is built so that no credential of it can outlive its lease: CreateUser sets
//! its permissions boundary (nothing attached later can exceed it), then its expiry policy
//! (an explicit Deny of everything after the lease's end, and from the start of every IAM
//! change to the user itself) is put before it is given any permission, and its access key
//! comes last. So whichever step fails, and even if the caller's cleanup never runs, the
//! user has either no key yet or a key that stops working when the lease ends. Deletion
//! takes everything away in the other order and tolerates every half-built state: it is
//! also the cleanup of a creation that stopped midway, and another reaper may be deleting
//! the same user at the same time.
//!
//! Errors go through `describe_sdk_error` (via `iam_error`): a service's code and message,
//! never a response body, since CreateAccessKey's and AssumeRole's bodies hold secret keys.

use std::future::Future;
use std::time::SystemTime;

use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::operation::delete_user::DeleteUserError;
use aws_sdk_iam::types::Tag as IamTag;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use aws_sdk_rds::config::{ProvideCredentials, Region};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag as StsTag};
use secrecy::SecretString;

use super::iam::iam_error;
use crate::backend::aws::{
    tag, AssumeRole, AwsCredentials, AwsError, AwsKeys, DeleteIamUser, IamUserDeleted, ListIamUsers, NewIamUser,
    RdsToken, UpdateIamUser, ROLE_POLICY,
};
use crate::lease::kind::aws_iam_user::{expiry_policy_document, EXPIRY_POLICY};
use crate::time::iso8601;

/// IAM and STS clients, and the SDK configuration whose credentials sign RDS tokens.
#[derive(Clone, Debug)]
pub struct AwsIssuer {
    iam: aws_sdk_iam::Client,
    sts: aws_sdk_sts::Client,
    sdk: aws_config::SdkConfig,
}

impl AwsIssuer {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self { iam: aws_sdk_iam::Client::new(sdk), sts: aws_sdk_sts::Client::new(sdk), sdk: sdk.clone() }
    }
}

/// A failure of keyturn's own, not the service's.
fn failure(operation: &'static str, message: impl Into<String>, retryable: bool) -> AwsError {
    AwsError { operation, message: message.into(), not_found: false, retryable }
}

/// Every item of a paginated IAM listing (`Marker` / `IsTruncated` followed to the end).
macro_rules! list_all {
    ($operation:literal, $request:expr) => {
        $request.into_paginator().items().send().try_collect().await.map_err(|e| iam_error($operation, e))
    };
}

/// Sends a removal; `Ok` also when what it removes is already gone (removed by another
/// reaper, or never made by a creation that stopped halfway).
async fn remove<T, E>(
    operation: &'static str,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<(), AwsError>
where
    E: ProvideErrorMetadata + std::error::Error,
{
    match request.await.map_err(|e| iam_error(operation, e)) {
        Err(e) if !e.not_found => Err(e),
        _ => Ok(()),
    }
}

/// `None` for an empty list, so that no empty list parameter is sent.
fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

impl AwsIssuer {
    async fn put_expiry(&self, user: &str, path: &str, expires_at: SystemTime) -> Result<(), AwsError> {
        self.iam
            .put_user_policy()
            .user_name(user)
            .policy_name(EXPIRY_POLICY)
            .policy_document(expiry_policy_document(path, &iso8601(expires_at)))
            .send()
            .await
            .map_err(|e| iam_error("PutUserPolicy", e))?;
        Ok(())
    }

    async fn access_key_ids(&self, user: &str) -> Result<Vec<String>, AwsError> {
        let keys = list_all!("ListAccessKeys", self.iam.list_access_keys().user_name(user))?;
        Ok(keys.into_iter().filter_map(|k| k.access_key_id).collect())
    }

    /// Takes away every access key, policy, group membership and the login profile. A
    /// listing answering NoSuchEntity means the user is gone: that error is returned.
    async fn remove_access(&self, user: &str, keys: Vec<String>) -> Result<(), AwsError> {
        let iam = &self.iam;
        for key in keys {
            remove("DeleteAccessKey", iam.delete_access_key().user_name(user).access_key_id(key).send()).await?;
        }
        let attached = list_all!("ListAttachedUserPolicies", iam.list_attached_user_policies().user_name(user))?;
        for arn in attached.into_iter().filter_map(|p| p.policy_arn) {
            remove("DetachUserPolicy", iam.detach_user_policy().user_name(user).policy_arn(arn).send()).await?;
        }
        for name in list_all!("ListUserPolicies", iam.list_user_policies().user_name(user))? {
            remove("DeleteUserPolicy", iam.delete_user_policy().user_name(user).policy_name(name).send()).await?;
        }
        for group in list_all!("ListGroupsForUser", iam.list_groups_for_user().user_name(user))? {
            let request = iam.remove_user_from_group().user_name(user).group_name(group.group_name);
            remove("RemoveUserFromGroup", request.send()).await?;
        }
        // NoSuchEntity is the usual answer: keyturn never gives a console password.
        remove("DeleteLoginProfile", iam.delete_login_profile().user_name(user).send()).await
    }

    /// The credentials keyturn never creates, which make DeleteUser answer DeleteConflict
    /// when someone added them: only looked for then, so that a normal delete costs no
    /// calls for them.
    async fn remove_other_credentials(&self, user: &str) -> Result<(), AwsError> {
        let iam = &self.iam;
        for key in list_all!("ListSSHPublicKeys", iam.list_ssh_public_keys().user_name(user))? {
            let request = iam.delete_ssh_public_key().user_name(user).ssh_public_key_id(key.ssh_public_key_id);
            remove("DeleteSSHPublicKey", request.send()).await?;
        }
        for certificate in list_all!("ListSigningCertificates", iam.list_signing_certificates().user_name(user))? {
            let request = iam.delete_signing_certificate().user_name(user).certificate_id(certificate.certificate_id);
            remove("DeleteSigningCertificate", request.send()).await?;
        }
        // Not paginated: a user has at most a few per service.
        let service = iam
            .list_service_specific_credentials()
            .user_name(user)
            .send()
            .await
            .map_err(|e| iam_error("ListServiceSpecificCredentials", e))?;
        for credential in service.service_specific_credentials() {
            let id = credential.service_specific_credential_id();
            let request = iam.delete_service_specific_credential().user_name(user).service_specific_credential_id(id);
            remove("DeleteServiceSpecificCredential", request.send()).await?;
        }
        for device in list_all!("ListMFADevices", iam.list_mfa_devices().user_name(user))? {
            let serial = device.serial_number;
            let request = iam.deactivate_mfa_device().user_name(user).serial_number(&serial);
            remove("DeactivateMFADevice", request.send()).await?;
            // A virtual device (its serial is an ARN) belonged to this user alone and would
            // linger unassigned in the account; a hardware one cannot be deleted by API.
            if serial.starts_with("arn:") {
                remove("DeleteVirtualMFADevice", iam.delete_virtual_mfa_device().serial_number(&serial).send()).await?;
            }
        }
        Ok(())
    }

    /// DeleteUser; `Ok(false)` when IAM answers DeleteConflict (something is still
    /// attached to the user).
    async fn delete_user(&self, user: &str) -> Result<bool, AwsError> {
        match self.iam.delete_user().user_name(user).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(DeleteUserError::is_delete_conflict_exception) => Ok(false),
            Err(e) => Err(iam_error("DeleteUser", e)),
        }
    }

    /// Everything after the first listing of the user's keys; NoSuchEntity anywhere in
    /// the error means the user went away meanwhile.
    async fn take_apart(&self, user: &str, keys: Vec<String>) -> Result<(), AwsError> {
        self.remove_access(user, keys).await?;
        if self.delete_user(user).await? {
            return Ok(());
        }
        // Something else holds the user: credentials keyturn never made, or a key or
        // policy added since the listing (a creation still running). Clear all of it once.
        self.remove_other_credentials(user).await?;
        self.remove_access(user, self.access_key_ids(user).await?).await?;
        if self.delete_user(user).await? {
            return Ok(());
        }
        Err(failure("DeleteUser", "DeleteConflict: the user still has something attached after cleanup", true))
    }
}

impl AwsCredentials for AwsIssuer {
    // Each call is boxed: the SDK's futures are deep, and nested unboxed in the lease
    // service and the API handler their layout runs past the compiler's default
    // recursion limit. One allocation per AWS call is nothing beside its round trip.
    fn assume_role(&self, req: AssumeRole) -> impl Future<Output = Result<AwsKeys, AwsError>> + Send {
        Box::pin(async move {
            let duration = i32::try_from(req.duration.as_secs())
                .map_err(|_| failure("AssumeRole", "the session duration is out of range", false))?;
            let tags = req
                .tags
                .iter()
                .map(|(key, value)| StsTag::builder().key(key).value(value).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failure("AssumeRole", e.to_string(), false))?;
            let policy_arns =
                req.policy_arns.iter().map(|arn| PolicyDescriptorType::builder().arn(arn).build()).collect();
            let out = self
                .sts
                .assume_role()
                .role_arn(&req.role_arn)
                .role_session_name(&req.session_name)
                .duration_seconds(duration)
                .set_policy(req.session_policy)
                .set_policy_arns(non_empty(policy_arns))
                .set_external_id(req.external_id)
                .set_tags(non_empty(tags))
                // Transitive: a session this one assumes carries the same keyturn tags, and no
                // session in the chain can set them to other values (IAM refuses it).
                .set_transitive_tag_keys(non_empty(req.tags.iter().map(|(key, _)| key.clone()).collect()))
                .send()
                .await
                .map_err(|e| iam_error("AssumeRole", e))?;
            let credentials =
                out.credentials.ok_or_else(|| failure("AssumeRole", "no credentials in the response", true))?;
            Ok(AwsKeys {
                expiration: u64::try_from(credentials.expiration.secs()).ok(),
                access_key_id: credentials.access_key_id,
                secret_access_key: SecretString::from(credentials.secret_access_key),
                session_token: Some(SecretString::from(credentials.session_token)),
            })
        })
    }

    fn new_iam_user(&self, req: NewIamUser) -> impl Future<Output = Result<AwsKeys, AwsError>> + Send {
        Box::pin(async move {
            let user = req.user_name.as_str();
            // The expiry tag is written from `expires_at`, so that it cannot disagree with the
            // expiry policy whatever tags the caller passed.
            let expires_tag = (tag::EXPIRES_AT.to_owned(), iso8601(req.expires_at));
            let tags = req
                .tags
                .iter()
                .filter(|(key, _)| key != tag::EXPIRES_AT)
                .chain([&expires_tag])
                .map(|(key, value)| IamTag::builder().key(key).value(value).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| failure("CreateUser", e.to_string(), false))?;
            self.iam
                .create_user()
                .user_name(user)
                .path(&req.path)
                .permissions_boundary(&req.permissions_boundary)
                .set_tags(non_empty(tags))
                .send()
                .await
                .map_err(|e| iam_error("CreateUser", e))?;
            // Before any permission: see the module's documentation.
            self.put_expiry(user, &req.path, req.expires_at).await?;
            for arn in &req.policy_arns {
                self.iam
                    .attach_user_policy()
                    .user_name(user)
                    .policy_arn(arn)
                    .send()
                    .await
                    .map_err(|e| iam_error("AttachUserPolicy", e))?;
            }
            if let Some(document) = &req.inline_policy {
                self.iam
                    .put_user_policy()
                    .user_name(user)
                    .policy_name(ROLE_POLICY)
                    .policy_document(document)
                    .send()
                    .await
                    .map_err(|e| iam_error("PutUserPolicy", e))?;
            }
            for group in &req.groups {
                self.iam
                    .add_user_to_group()
                    .user_name(user)
                    .group_name(group)
                    .send()
                    .await
                    .map_err(|e| iam_error("AddUserToGroup", e))?;
            }
            let out = self
                .iam
                .create_access_key()
                .user_name(user)
                .send()
                .await
                .map_err(|e| iam_error("CreateAccessKey", e))?;
            let key = out.access_key.ok_or_else(|| failure("CreateAccessKey", "no key in the response", false))?;
            Ok(AwsKeys {
                access_key_id: key.access_key_id,
                secret_access_key: SecretString::from(key.secret_access_key),
                session_token: None,
                expiration: None,
            })
        })
    }

    fn update_iam_user(&self, req: UpdateIamUser) -> impl Future<Output = Result<(), AwsError>> + Send {
        Box::pin(async move {
            // The policy first: it is what AWS enforces; the tag only reports it.
            self.put_expiry(&req.user_name, &req.path, req.expires_at).await?;
            let expires = IamTag::builder()
                .key(tag::EXPIRES_AT)
                .value(iso8601(req.expires_at))
                .build()
                .map_err(|e| failure("TagUser", e.to_string(), false))?;
            self.iam
                .tag_user()
                .user_name(&req.user_name)
                .tags(expires)
                .send()
                .await
                .map_err(|e| iam_error("TagUser", e))?;
            Ok(())
        })
    }

    fn delete_iam_user(&self, req: DeleteIamUser) -> impl Future<Output = Result<IamUserDeleted, AwsError>> + Send {
        Box::pin(async move {
            let user = req.user_name.as_str();
            let keys = match self.access_key_ids(user).await {
                Err(e) if e.not_found => return Ok(IamUserDeleted { existed: false }),
                other => other?,
            };
            match self.take_apart(user, keys).await {
                // Gone since the first listing: another reaper deleted it, which is the outcome
                // wanted.
                Ok(()) | Err(AwsError { not_found: true, .. }) => Ok(IamUserDeleted { existed: true }),
                Err(e) => Err(e),
            }
        })
    }

    fn list_iam_users(&self, req: ListIamUsers) -> impl Future<Output = Result<Vec<String>, AwsError>> + Send {
        Box::pin(async move {
            let users = self
                .iam
                .list_users()
                .path_prefix(&req.path)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| iam_error("ListUsers", e))?;
            // PathPrefix also matches deeper paths (`/keyturn/other/` under `/keyturn/`), which
            // belong to someone else.
            Ok(users
                .into_iter()
                .filter(|u| u.path == req.path && u.user_name.starts_with(&req.prefix))
                .map(|u| u.user_name)
                .collect())
        })
    }

    fn rds_token(&self, req: RdsToken) -> impl Future<Output = Result<SecretString, AwsError>> + Send {
        Box::pin(async move {
            const OPERATION: &str = "GenerateDbAuthToken";
            // The generator writes the user into the URL it signs without encoding it: a `&`
            // or `=` would sign another query than the one naming this user.
            let plain = |c: char| c.is_ascii_alphanumeric() || "-._~@$".contains(c);
            if req.db_user.is_empty() || !req.db_user.chars().all(plain) {
                return Err(failure(OPERATION, "the database user name must be letters, digits and -._~@$", false));
            }
            // Loaded here rather than by the generator so that a failure to get credentials
            // (worth retrying) is told apart from a bad request, without quoting either error.
            let provider = self
                .sdk
                .credentials_provider()
                .ok_or_else(|| failure(OPERATION, "no credentials to sign with", false))?;
            let credentials = provider
                .provide_credentials()
                .await
                .map_err(|_| failure(OPERATION, "could not load the credentials to sign with", true))?;
            let config = TokenConfig::builder()
                .hostname(&req.host)
                .port(u64::from(req.port))
                .region(Region::new(req.region))
                .username(&req.db_user)
                .expires_in(crate::lease::kind::rds_iam_token::TOKEN_LIFE.as_secs())
                .credentials(credentials)
                .build()
                .map_err(|_| failure(OPERATION, "invalid token parameters", false))?;
            let token = AuthTokenGenerator::new(config)
                .auth_token(&self.sdk)
                .await
                .map_err(|_| failure(OPERATION, "could not sign the token", false))?;
            Ok(SecretString::from(token.to_string()))
        })
    }
}
