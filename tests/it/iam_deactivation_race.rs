//! KEYTURN_IAM_DEACTIVATE_PREVIOUS against a writer who races finishSecret: two
//! PutSecretValue calls landing between the last stage move and the deactivation put a
//! victim's key id in AWSPREVIOUS (key ids are not secret). The victim's key must stay
//! Active, whether the victim is in the function's scope or not. The race is played
//! deterministically: a store wrapper runs the writer's calls right after the real
//! UpdateSecretVersionStage.

use std::time::Duration;

use keyturn::aws::iam::IamClient;
use keyturn::aws::secretsmanager::SecretsManagerStore;
use keyturn::rotation::iam_key::{IamKeyRotation, Scope};
use keyturn::rotation::store::{
    SecretMetadata, SecretStore, Selector, StageMove, StoreError, VersionInfo, AWSCURRENT, AWSPENDING,
};
use keyturn::rotation::{RotationEvent, Rotator, Step};
use keyturn_tests::TestEnv;
use secrecy::SecretString;
use serde_json::{json, Value};

const PATH: &str = "/keyturn/";

/// Secrets Manager, plus the writer's PutSecretValue calls right after AWSCURRENT moves.
struct RacingStore {
    inner: SecretsManagerStore,
    sm: aws_sdk_secretsmanager::Client,
    writer_puts: Vec<Value>,
}

impl SecretStore for RacingStore {
    async fn describe(&self, secret_id: &str) -> Result<SecretMetadata, StoreError> {
        self.inner.describe(secret_id).await
    }
    async fn get(&self, secret_id: &str, selector: Selector<'_>) -> Result<Option<SecretString>, StoreError> {
        self.inner.get(secret_id, selector).await
    }
    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.put_pending(secret_id, token, value, rotation_token).await
    }
    async fn move_stage(&self, secret_id: &str, change: &StageMove) -> Result<(), StoreError> {
        self.inner.move_stage(secret_id, change).await?;
        if change.stage == AWSPENDING {
            // The writer wins the race (after finishSecret's last stage move, before
            // after_finish reads AWSPREVIOUS and AWSCURRENT): two versions staged AWSCURRENT, so the first becomes
            // AWSPREVIOUS. Only PutSecretValue, on the writer's own secret.
            for value in &self.writer_puts {
                self.sm
                    .put_secret_value()
                    .secret_id(secret_id)
                    .secret_string(value.to_string())
                    .version_stages(AWSCURRENT)
                    .send()
                    .await
                    .expect("writer's PutSecretValue");
            }
        }
        Ok(())
    }
    async fn list_versions(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        self.inner.list_versions(secret_id).await
    }
}

async fn user_with_key(env: &TestEnv, name: &str, path: &str) -> (String, String, String) {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let user = env.unique(name);
    iam.create_user().user_name(&user).path(path).send().await.expect("CreateUser");
    let key = iam.create_access_key().user_name(&user).send().await.expect("CreateAccessKey").access_key.unwrap();
    (user, key.access_key_id, key.secret_access_key)
}

async fn key_status(env: &TestEnv, user: &str, key: &str) -> String {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let out = iam.list_access_keys().user_name(user).send().await.expect("ListAccessKeys");
    let found = out.access_key_metadata().iter().find(|k| k.access_key_id() == Some(key)).expect("key exists");
    found.status().unwrap().as_str().to_owned()
}

async fn deactivates(victim_path: &str) -> (String, String) {
    let env = TestEnv::authenticated("rvdeact").await;
    // The writer: their own user and key, their own secret.
    let (writer, w_id, w_secret) = user_with_key(&env, "writer", PATH).await;
    let arn = env
        .create_secret("writer", &json!({"username": writer, "accessKeyId": w_id, "secretAccessKey": w_secret}))
        .await;
    // The victim: another user whose key the writer never held (key ids are not secret).
    let (victim, v_id, _) = user_with_key(&env, "victim", victim_path).await;
    assert_eq!(key_status(&env, &victim, &v_id).await, "Active");

    let store = RacingStore {
        inner: SecretsManagerStore::new(&env.sdk, None),
        sm: env.sm.clone(),
        writer_puts: vec![
            json!({"username": victim, "accessKeyId": v_id, "secretAccessKey": "not-known-to-the-writer"}),
            json!({"username": victim, "accessKeyId": "AKIAANYTHINGELSE0000", "secretAccessKey": "x"}),
        ],
    };
    let scope = Scope { path_prefix: Some(PATH.into()), tag: None };
    let target =
        IamKeyRotation::new(IamClient::new(&env.sdk), scope, Duration::from_secs(5)).deactivating_previous(true);
    let rotator = Rotator::new(store, target);
    let token = env.start_rotation(&arn).await;
    for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
        let event = RotationEvent { step, secret_id: arn.clone(), token: token.clone(), rotation_token: None };
        rotator.handle(&event).await.unwrap_or_else(|e| panic!("{}: {e}", step.as_str()));
    }
    (key_status(&env, &victim, &v_id).await, victim)
}

#[tokio::test]
async fn a_writer_cannot_get_another_users_key_deactivated() {
    let (status, victim) = deactivates(PATH).await;
    assert_eq!(status, "Active", "the key of {victim}, never held by the writer, was deactivated");
}

#[tokio::test]
async fn nor_one_outside_the_functions_scope() {
    let (status, victim) = deactivates("/other-team/").await;
    assert_eq!(status, "Active", "the key of {victim} (outside the scope) was deactivated");
}
