//! `exec`'s wait for a new IAM user's access key. IAM is eventually consistent: AWS refuses
//! a key for some seconds after it was created, and the issuer's answer says for how long
//! at most (`propagation_delay_seconds`). Before the command runs, `exec` calls
//! `sts:GetCallerIdentity` signed with the new key (in the caller's region, through the
//! endpoint the caller's AWS settings name: `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_STS`, a
//! profile's `endpoint_url`) until it answers, with a short backoff, for that long at most.
//!
//! Any failure counts as "not valid yet": AWS answers `InvalidClientTokenId` for a key it
//! does not know yet, but an emulator (moto) answers its authentication errors without
//! AWS's codes, and a failure that has nothing to do with the key (STS unreachable from
//! here) ends at the bound like the rest. Only `aws-iam-user` credentials wait: an STS
//! session's keys and a database login work at once.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_sts::config::retry::RetryConfig;
use keyturn::contract::{IssuedAnswer, IssuedCredential, KIND_AWS_IAM_USER};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

/// The longest wait an answer may ask for. AWS's propagation takes seconds; a larger value
/// is taken as this, so that a wrong answer cannot hold a CI job for an hour.
pub const MAX_WAIT: Duration = Duration::from_secs(120);
/// The first pause between two attempts; each pause doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The least time an attempt gets, even at the bound: the last one must be able to answer.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

/// How long `exec` waits for the key of the API's `answer` to work: `None` when it does
/// not wait (another kind, or no delay given: the contract reads a delay that is not a
/// whole number of seconds as none).
pub fn bound(answer: &IssuedAnswer) -> Option<Duration> {
    let IssuedCredential::Aws(keys) = &answer.credential else { return None };
    if answer.lease.kind != KIND_AWS_IAM_USER {
        return None;
    }
    let seconds = keys.propagation_delay_seconds.filter(|&s| s > 0)?;
    Some(Duration::from_secs(seconds).min(MAX_WAIT))
}

/// The pauses between attempts, in order: short at first, as a key usually works within
/// seconds, then once a second.
pub fn pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_PAUSE), |pause| Some((*pause * 2).min(MAX_PAUSE)))
}

/// How the wait ended, with the time it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The key signed a request that STS accepted.
    Works(Duration),
    /// The bound passed and the key was still refused (or STS never answered).
    StillRefused(Duration),
}

/// Calls GetCallerIdentity with the key (`access_key_id`, `secret`) until it answers or
/// `bound` has passed. `sdk` is the caller's AWS configuration: its region and endpoint
/// settings are used, its credentials are not.
pub async fn wait_for_key(sdk: &SdkConfig, access_key_id: &str, secret: &SecretString, bound: Duration) -> Waited {
    let key = Credentials::new(access_key_id, secret.expose_secret(), None, None, "keyturn-lease");
    // This loop is the retry: the SDK's own would retry a timeout past the bound.
    let config =
        aws_sdk_sts::config::Builder::from(sdk).credentials_provider(key).retry_config(RetryConfig::disabled()).build();
    let sts = aws_sdk_sts::Client::from_conf(config);
    let start = Instant::now();
    let deadline = start + bound;
    let mut pauses = pauses();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(left.max(MIN_ATTEMPT), sts.get_caller_identity().send()).await;
        if matches!(attempt, Ok(Ok(_))) {
            return Waited::Works(start.elapsed());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Waited::StillRefused(start.elapsed());
        }
        tokio::time::sleep(pauses.next().unwrap_or(MAX_PAUSE).min(left)).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// An issue's answer of `kind` with `extra` fields, as the contract reads it.
    fn answer(kind: &str, extra: Value) -> IssuedAnswer {
        let mut body = json!({"lease_id": "l", "kind": kind, "expires_at": 1, "access_key_id": "AKIA1",
                              "secret_access_key": "s", "engine": "postgres", "host": "db", "port": 5432,
                              "username": "u", "password": "p"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        IssuedAnswer::from_value(&body).unwrap()
    }

    #[test]
    fn only_an_iam_users_key_waits_and_for_at_most_two_minutes() {
        let user = |delay: Value| answer("aws-iam-user", json!({"propagation_delay_seconds": delay}));
        assert_eq!(bound(&user(json!(10))), Some(Duration::from_secs(10)));
        assert_eq!(bound(&user(json!(86_400))), Some(MAX_WAIT), "nonsense is taken as the most");
        for none in [json!(0), json!(-5), json!("10"), json!(2.5), Value::Null] {
            assert_eq!(bound(&user(none.clone())), None, "{none}");
        }
        let sts = answer("aws-sts", json!({"session_token": "t", "propagation_delay_seconds": 10}));
        assert_eq!(bound(&sts), None);
        assert_eq!(bound(&answer("database", json!({"propagation_delay_seconds": 10}))), None);
    }

    #[test]
    fn the_pauses_double_from_a_quarter_second_to_one_second() {
        let ms: Vec<_> = pauses().take(5).map(|p| p.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 1000, 1000]);
    }
}
