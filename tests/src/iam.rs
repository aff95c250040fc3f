//! IAM as the tests and the demo look at it (on [`TestEnv::authenticated`], where moto
//! checks signatures): a user whose access key is stored in a secret (what rotate-iam-key
//! rotates), the keys IAM holds for a user, and whether a key signs.

use std::time::Duration;

use aws_sdk_sts::config::{Credentials, SharedCredentialsProvider};
use serde_json::json;

use crate::TestEnv;

/// A user named `name` (made unique) under `path` with one access key, and a secret holding
/// it as rotate-iam-key reads one (`username`, `accessKeyId`, `secretAccessKey`). Returns
/// (the secret's ARN, the user's name).
pub async fn user_with_key_secret(env: &TestEnv, name: &str, path: &str) -> (String, String) {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let user = env.unique(name);
    iam.create_user().user_name(&user).path(path).send().await.expect("CreateUser");
    let key = iam.create_access_key().user_name(&user).send().await.expect("CreateAccessKey").access_key.unwrap();
    let secret = json!({"username": user, "accessKeyId": key.access_key_id, "secretAccessKey": key.secret_access_key});
    (env.create_secret(name, &secret).await, user)
}

/// The access keys IAM holds for `user`: (key id, whether it is Active).
pub async fn access_keys(env: &TestEnv, user: &str) -> Vec<(String, bool)> {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let out = iam.list_access_keys().user_name(user).send().await.expect("ListAccessKeys");
    out.access_key_metadata()
        .iter()
        .filter_map(|k| {
            let active = k.status() == Some(&aws_sdk_iam::types::StatusType::Active);
            k.access_key_id().map(|id| (id.to_owned(), active))
        })
        .collect()
}

/// `env`'s AWS settings signing with another key (an issued one, a rotated one).
pub fn signing_as(env: &TestEnv, key_id: &str, secret: &str, session_token: Option<&str>) -> aws_config::SdkConfig {
    let credentials = Credentials::new(key_id, secret, session_token.map(str::to_owned), None, "other key");
    env.sdk.to_builder().credentials_provider(SharedCredentialsProvider::new(credentials)).build()
}

/// The ARN `sdk`'s key signs as (`sts:GetCallerIdentity`), once moto lets it in, tried
/// `tries` times 250 ms apart (a new IAM user's key may take a while on AWS: the issuer's
/// answer says how long); `None` when it is refused each time.
pub async fn identity(sdk: &aws_config::SdkConfig, tries: u32) -> Option<String> {
    for attempt in 0..tries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if let Ok(out) = aws_sdk_sts::Client::new(sdk).get_caller_identity().send().await {
            return out.arn().map(str::to_owned);
        }
    }
    None
}
