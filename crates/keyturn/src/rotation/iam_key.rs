//! IAM access key rotation on the two-keys-per-user limit: the active key (AWSCURRENT), the
//! previous key, still valid (AWSPREVIOUS), and, at the next rotation, revoked (deleted).
//!
//! createSecret first proves the secret holds the user's AWSCURRENT key (it signs
//! `sts:GetCallerIdentity` with it: key ids are not secret), then deletes the key the secret
//! left behind two rotations ago (and any key an interrupted createSecret created but never
//! stored), creates a key and stores it as
//! AWSPENDING; setSecret checks IAM knows it; testSecret signs `sts:GetCallerIdentity`
//! with it until IAM's eventual consistency lets it through. Keys keyturn did not create
//! are never deleted: keyturn names each key it creates in a user tag whose key is the
//! access key id (the tag the IAM console shows as the key's description).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::store::SecretStore;
use super::{Outcome, RotationError, RotationTarget, StepContext};

/// Key names accepted for each field, the first being the one keyturn documents. The
/// names a secret uses are kept when keyturn writes the next version.
const USERNAME_KEYS: [&str; 3] = ["username", "UserName", "userName"];
const ACCESS_KEY_ID_KEYS: [&str; 3] = ["accessKeyId", "AccessKeyId", "aws_access_key_id"];
const SECRET_KEY_KEYS: [&str; 3] = ["secretAccessKey", "SecretAccessKey", "aws_secret_access_key"];

/// The user tag keyturn sets just before `CreateAccessKey` (value: [`TAG_PREFIX`], the
/// token, `-`, the time in seconds since the epoch) and removes once the new key carries
/// its own tag: a key created after that time, untagged, while the marker is still there,
/// is one an interrupted createSecret made.
pub const CREATING_TAG: &str = "keyturn-creating-key";

/// Prefix of the value of the user tag keyturn puts on each key it creates; the rotation's
/// token follows. Letters, digits and `-` only: moto fails to verify the signature of
/// some `TagUser` requests whose value holds a space or `:`.
pub const TAG_PREFIX: &str = "keyturn-rotation-";

/// An IAM key secret: `{"username", "accessKeyId", "secretAccessKey"}` (AWS-style aliases
/// accepted). Debug shows the user and key id, never the secret key.
#[derive(Clone)]
pub struct IamKeySecret {
    pub username: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    raw: Map<String, Value>,
    names: [&'static str; 3],
}

impl std::fmt::Debug for IamKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamKeySecret")
            .field("username", &self.username)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl IamKeySecret {
    /// Parses a secret value; the error names the problem, never a value.
    pub fn parse(value: &SecretString) -> Result<Self, String> {
        let raw = match serde_json::from_str::<Value>(value.expose_secret()) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("not a JSON object".into()),
            Err(e) => return Err(format!("malformed JSON at line {} column {}", e.line(), e.column())),
        };
        let field = |names: [&'static str; 3]| -> Result<(&'static str, String), String> {
            for name in names {
                match raw.get(name) {
                    Some(Value::String(s)) if !s.is_empty() => return Ok((name, s.clone())),
                    Some(Value::String(_)) => return Err(format!("key {name:?} is empty")),
                    Some(_) => return Err(format!("key {name:?} must be a string")),
                    None => {}
                }
            }
            Err(format!("missing key {:?}", names[0]))
        };
        let (u, username) = field(USERNAME_KEYS)?;
        let (a, access_key_id) = field(ACCESS_KEY_ID_KEYS)?;
        let (s, secret) = field(SECRET_KEY_KEYS)?;
        Ok(Self { username, access_key_id, secret_access_key: SecretString::from(secret), raw, names: [u, a, s] })
    }

    /// The same secret holding another key; every other key of the JSON is kept.
    pub fn with_key(&self, access_key_id: &str, secret_access_key: &SecretString) -> SecretString {
        let mut raw = self.raw.clone();
        raw.insert(self.names[1].into(), Value::String(access_key_id.to_owned()));
        raw.insert(self.names[2].into(), Value::String(secret_access_key.expose_secret().to_owned()));
        SecretString::from(Value::Object(raw).to_string())
    }
}

/// An IAM user as the scope check and testSecret need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamUser {
    pub arn: String,
    pub path: String,
    pub tags: BTreeMap<String, String>,
}

/// One of a user's access keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub active: bool,
    /// Creation time, seconds since the epoch.
    pub created: Option<i64>,
}

/// A failure calling IAM or STS.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct IamError {
    pub operation: &'static str,
    pub message: String,
    /// The user or key does not exist.
    pub not_found: bool,
    pub retryable: bool,
}

/// The IAM operations key rotation needs (production: [`crate::aws::iam::IamClient`]).
pub trait IamKeys: Send + Sync {
    fn user(&self, username: &str) -> impl Future<Output = Result<IamUser, IamError>> + Send;
    fn keys(&self, username: &str) -> impl Future<Output = Result<Vec<AccessKey>, IamError>> + Send;
    /// Creates a key; the secret key is only ever returned here.
    fn create_key(&self, username: &str) -> impl Future<Output = Result<(String, SecretString), IamError>> + Send;
    /// Marks a key Inactive; a key that is already gone is success.
    fn deactivate_key(&self, username: &str, key_id: &str) -> impl Future<Output = Result<(), IamError>> + Send;
    /// Deletes a key; a key that is already gone is success.
    fn delete_key(&self, username: &str, key_id: &str) -> impl Future<Output = Result<(), IamError>> + Send;
    fn tag_user(&self, username: &str, key: &str, value: &str) -> impl Future<Output = Result<(), IamError>> + Send;
    fn untag_user(&self, username: &str, key: &str) -> impl Future<Output = Result<(), IamError>> + Send;
    /// `sts:GetCallerIdentity` signed with this key: the caller's ARN.
    fn caller_arn(&self, key_id: &str, secret: &SecretString) -> impl Future<Output = Result<String, IamError>> + Send;
}

/// Which users the function may touch: under an IAM path, or carrying a tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    pub path_prefix: Option<String>,
    /// Tag key, and the value it must have (any value when `None`).
    pub tag: Option<(String, Option<String>)>,
}

impl Scope {
    /// Whether `user` is in scope; the error says why not.
    pub fn check(&self, user: &IamUser) -> Result<(), String> {
        if let Some(prefix) = &self.path_prefix {
            if user.path.starts_with(prefix.as_str()) {
                return Ok(());
            }
        }
        if let Some((key, value)) = &self.tag {
            match (user.tags.get(key), value) {
                (Some(_), None) => return Ok(()),
                (Some(found), Some(wanted)) if found == wanted => return Ok(()),
                _ => {}
            }
        }
        let mut wanted = Vec::new();
        if let Some(prefix) = &self.path_prefix {
            wanted.push(format!("path under {prefix:?}"));
        }
        if let Some((key, value)) = &self.tag {
            wanted.push(match value {
                Some(v) => format!("tag {key}={v}"),
                None => format!("tag {key}"),
            });
        }
        Err(format!(
            "user {} (path {:?}) is outside this function's scope ({})",
            user.arn,
            user.path,
            wanted.join(" or ")
        ))
    }
}

/// Why a key is deleted at createSecret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The AWSPREVIOUS key: revoked now that a new key takes its place.
    Previous,
    /// A key keyturn created (its tag says so) but never stored: an interrupted createSecret.
    Orphan,
}

/// The time in a [`CREATING_TAG`] value, if it is one of keyturn's.
fn creating_since(value: &str) -> Option<i64> {
    value.strip_prefix(TAG_PREFIX)?.rsplit('-').next()?.parse().ok()
}

/// Which keys createSecret must delete so one can be created. Pure: the user's keys, the
/// key ids the secret's AWSCURRENT and AWSPREVIOUS hold, and the user's tags.
pub fn plan_removals(
    keys: &[AccessKey],
    current: &str,
    previous: Option<&str>,
    tags: &BTreeMap<String, String>,
) -> Result<Vec<(String, Removal)>, String> {
    if !keys.iter().any(|k| k.id == current) {
        return Err(format!("the AWSCURRENT key {current} is not one of the user's keys in IAM"));
    }
    let creating = tags.get(CREATING_TAG).and_then(|v| creating_since(v));
    let mut removals = Vec::new();
    let mut foreign = Vec::new();
    for key in keys.iter().filter(|k| k.id != current) {
        let made_while_creating = matches!((creating, key.created), (Some(since), Some(at)) if at >= since);
        if Some(key.id.as_str()) == previous {
            removals.push((key.id.clone(), Removal::Previous));
        } else if tags.get(&key.id).is_some_and(|v| v.starts_with(TAG_PREFIX)) || made_while_creating {
            removals.push((key.id.clone(), Removal::Orphan));
        } else {
            foreign.push(key.id.as_str());
        }
    }
    if !foreign.is_empty() {
        return Err(format!(
            "key {} is neither in the secret nor created by keyturn; keyturn does not delete keys it did not \
             create: delete it, or store it in the secret, then rotate again",
            foreign.join(", ")
        ));
    }
    Ok(removals)
}

/// Why createSecret will not act on the AWSCURRENT key.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// STS refused the key, or it signs as someone else: the secret does not hold the
    /// user's key. Not retryable.
    Unproven(String),
    /// STS could not be asked (transport, throttling, server error): retryable as it is.
    Unreachable(IamError),
}

/// Judges `sts:GetCallerIdentity` signed with the AWSCURRENT key: it must answer with the
/// user's ARN. Pure: the call's result and the ARN from `GetUser`. Messages name the key id,
/// never the secret key.
pub fn judge_proof(key_id: &str, user_arn: &str, answer: Result<String, IamError>) -> Result<(), Refusal> {
    const NOTHING: &str = "keyturn acts for a user only with a key the secret proves it holds; nothing was changed";
    match answer {
        Ok(arn) if arn == user_arn => Ok(()),
        Ok(arn) => Err(Refusal::Unproven(format!("key {key_id} signs as {arn}, not as {user_arn}; {NOTHING}"))),
        Err(e) if e.retryable => Err(Refusal::Unreachable(e)),
        Err(e) => Err(Refusal::Unproven(format!(
            "the secret access key does not sign for key {key_id} of {user_arn} (STS refused it: {e}); {NOTHING}"
        ))),
    }
}

/// IAM key rotation: the IAM client, the scope and testSecret's bound. Built once per
/// container.
pub struct IamKeyRotation<I> {
    iam: I,
    scope: Scope,
    test_timeout: Duration,
    deactivate_previous: bool,
}

impl<I: IamKeys> IamKeyRotation<I> {
    pub fn new(iam: I, scope: Scope, test_timeout: Duration) -> Self {
        Self { iam, scope, test_timeout, deactivate_previous: false }
    }

    /// Marks the previous key Inactive at finishSecret instead of leaving it valid until
    /// the next rotation deletes it. An inactive key is refused by AWS but can be
    /// reactivated by hand, which a deleted one cannot.
    pub fn deactivating_previous(mut self, on: bool) -> Self {
        self.deactivate_previous = on;
        self
    }

    fn parse<S: SecretStore>(
        ctx: &StepContext<'_, S>,
        value: &SecretString,
        what: &str,
    ) -> Result<IamKeySecret, RotationError> {
        IamKeySecret::parse(value).map_err(|problem| RotationError::InvalidSecret {
            secret: ctx.arn().to_owned(),
            what: what.to_owned(),
            problem,
        })
    }

    fn iam_error<S: SecretStore>(
        ctx: &StepContext<'_, S>,
        action: &'static str,
    ) -> impl Fn(IamError) -> RotationError + use<I, S> {
        let secret = ctx.arn().to_owned();
        move |e| RotationError::Iam { secret: secret.clone(), action, retryable: e.retryable, message: e.to_string() }
    }

    /// The user, which must exist and be in scope.
    async fn user_in_scope<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        username: &str,
    ) -> Result<IamUser, RotationError> {
        let user = self.iam.user(username).await.map_err(|e| match e.not_found {
            true => RotationError::InvalidSecret {
                secret: ctx.arn().to_owned(),
                what: "AWSCURRENT".into(),
                problem: format!("IAM user {username:?} does not exist"),
            },
            false => Self::iam_error(ctx, "reading the IAM user")(e),
        })?;
        self.scope
            .check(&user)
            .map_err(|problem| RotationError::OutOfScope { secret: ctx.arn().to_owned(), problem })?;
        Ok(user)
    }
}

impl<I: IamKeys> RotationTarget for IamKeyRotation<I> {
    fn strategy(&self) -> &'static str {
        "iam-two-keys"
    }

    async fn create<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        current: SecretString,
    ) -> Result<SecretString, RotationError> {
        let current = Self::parse(ctx, &current, "AWSCURRENT")?;
        let user = self.user_in_scope(ctx, &current.username).await?;
        let previous = match ctx.previous().await? {
            Some(value) => IamKeySecret::parse(&value).ok().filter(|p| p.username == current.username),
            None => None,
        };
        let keys = self.iam.keys(&current.username).await.map_err(Self::iam_error(ctx, "listing the user's keys"))?;
        let removals = plan_removals(
            &keys,
            &current.access_key_id,
            previous.as_ref().map(|p| p.access_key_id.as_str()),
            &user.tags,
        )
        .map_err(|problem| RotationError::InvalidSecret {
            secret: ctx.arn().to_owned(),
            what: "AWSCURRENT".into(),
            problem,
        })?;
        // Key ids are not secret: before acting for the user, the secret must prove it holds
        // the user's key by signing with it.
        let proof = self.iam.caller_arn(&current.access_key_id, &current.secret_access_key).await;
        judge_proof(&current.access_key_id, &user.arn, proof).map_err(|refusal| match refusal {
            Refusal::Unproven(problem) => {
                RotationError::InvalidSecret { secret: ctx.arn().to_owned(), what: "AWSCURRENT".into(), problem }
            }
            Refusal::Unreachable(e) => Self::iam_error(ctx, "proving the AWSCURRENT key (sts:GetCallerIdentity)")(e),
        })?;
        for (key_id, why) in &removals {
            self.iam.delete_key(&current.username, key_id).await.map_err(Self::iam_error(ctx, "deleting a key"))?;
            if let Err(e) = self.iam.untag_user(&current.username, key_id).await {
                warn!(secret_arn = %ctx.arn(), key_id, error = %e, "could not remove the key's tag");
            }
            info!(secret_arn = %ctx.arn(), key_id, reason = ?why, "access key deleted");
        }
        // Marks what is being done before doing it, so an interrupted step can tell the
        // key it made from keys made by hand, whenever it was interrupted.
        let tag = format!("{TAG_PREFIX}{}", ctx.token);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.iam
            .tag_user(&current.username, CREATING_TAG, &format!("{tag}-{now}"))
            .await
            .map_err(Self::iam_error(ctx, "marking the key creation"))?;
        let (key_id, secret) =
            self.iam.create_key(&current.username).await.map_err(Self::iam_error(ctx, "creating a key"))?;
        self.iam
            .tag_user(&current.username, &key_id, &tag)
            .await
            .map_err(Self::iam_error(ctx, "tagging the new key"))?;
        if let Err(e) = self.iam.untag_user(&current.username, CREATING_TAG).await {
            warn!(secret_arn = %ctx.arn(), error = %e, "could not remove the creation marker");
        }
        info!(secret_arn = %ctx.arn(), key_id, user = %user.arn, "access key created");
        Ok(current.with_key(&key_id, &secret))
    }

    async fn set<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<Outcome, RotationError> {
        let pending = Self::parse(ctx, &ctx.pending().await?, "AWSPENDING")?;
        self.user_in_scope(ctx, &pending.username).await?;
        let keys = self.iam.keys(&pending.username).await.map_err(Self::iam_error(ctx, "listing the user's keys"))?;
        if !keys.iter().any(|k| k.id == pending.access_key_id && k.active) {
            return Err(RotationError::InvalidSecret {
                secret: ctx.arn().to_owned(),
                what: "AWSPENDING".into(),
                problem: format!("key {} is not an active key of {} in IAM", pending.access_key_id, pending.username),
            });
        }
        Ok(Outcome::Done)
    }

    async fn after_finish<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<(), RotationError> {
        if !self.deactivate_previous {
            return Ok(());
        }
        let (Some(previous), current) = (ctx.previous().await?, ctx.current().await?) else { return Ok(()) };
        let (previous, current) =
            (Self::parse(ctx, &previous, "AWSPREVIOUS")?, Self::parse(ctx, &current, "AWSCURRENT")?);
        if previous.username != current.username || previous.access_key_id == current.access_key_id {
            return Ok(());
        }
        self.iam
            .deactivate_key(&previous.username, &previous.access_key_id)
            .await
            .map_err(Self::iam_error(ctx, "deactivating the previous key"))?;
        info!(secret_arn = %ctx.arn(), key_id = %previous.access_key_id, "previous access key deactivated");
        Ok(())
    }

    async fn test<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<(), RotationError> {
        let pending = Self::parse(ctx, &ctx.pending().await?, "AWSPENDING")?;
        let user = self.user_in_scope(ctx, &pending.username).await?;
        let deadline = tokio::time::Instant::now() + self.test_timeout;
        let mut pause = Duration::from_millis(200);
        loop {
            // IAM is eventually consistent: a new key may be refused for a few seconds.
            match self.iam.caller_arn(&pending.access_key_id, &pending.secret_access_key).await {
                Ok(arn) if arn == user.arn => return Ok(()),
                Ok(arn) => {
                    return Err(RotationError::InvalidSecret {
                        secret: ctx.arn().to_owned(),
                        what: "AWSPENDING".into(),
                        problem: format!("key {} signs as {arn}, not as {}", pending.access_key_id, user.arn),
                    })
                }
                Err(e) if tokio::time::Instant::now() + pause < deadline => {
                    info!(secret_arn = %ctx.arn(), error = %e, retry_in_ms = pause.as_millis() as u64, "new key not valid yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(RotationError::Iam {
                        secret: ctx.arn().to_owned(),
                        action: "signing with the pending key",
                        retryable: true,
                        message: format!("still refused after {} s: {e}", self.test_timeout.as_secs()),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> AccessKey {
        AccessKey { id: id.into(), active: true, created: Some(1_000) }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_previous_key_is_revoked_and_orphans_removed() {
        assert_eq!(plan_removals(&[key("A")], "A", None, &tags(&[])).unwrap(), vec![]);
        assert_eq!(
            plan_removals(&[key("A"), key("B")], "B", Some("A"), &tags(&[])).unwrap(),
            vec![("A".to_string(), Removal::Previous)]
        );
        let orphan_tag = tags(&[("C", "keyturn-rotation-1234")]);
        assert_eq!(
            plan_removals(&[key("B"), key("C")], "B", Some("A"), &orphan_tag).unwrap(),
            vec![("C".to_string(), Removal::Orphan)]
        );
    }

    #[test]
    fn a_key_made_after_the_creation_marker_is_an_orphan() {
        let marker = tags(&[(CREATING_TAG, "keyturn-rotation-5e3c-aa-900")]);
        assert_eq!(
            plan_removals(&[key("A"), key("C")], "A", None, &marker).unwrap(),
            vec![("C".to_string(), Removal::Orphan)]
        );
        // A key older than the marker was not made by that createSecret.
        let later = tags(&[(CREATING_TAG, "keyturn-rotation-5e3c-aa-2000")]);
        assert!(plan_removals(&[key("A"), key("C")], "A", None, &later).is_err());
        let foreign_marker = tags(&[(CREATING_TAG, "someone-else-900")]);
        assert!(plan_removals(&[key("A"), key("C")], "A", None, &foreign_marker).is_err());
    }

    #[test]
    fn keys_keyturn_did_not_create_are_never_deleted() {
        let err = plan_removals(&[key("A"), key("X")], "A", None, &tags(&[("X", "laptop")])).unwrap_err();
        assert!(err.contains("key X is neither in the secret nor created by keyturn"), "{err}");
        let err = plan_removals(&[key("X"), key("Y")], "A", None, &tags(&[])).unwrap_err();
        assert!(err.contains("AWSCURRENT key A is not one of the user's keys"), "{err}");
    }

    #[test]
    fn the_current_key_must_sign_as_the_user() {
        let user = "arn:aws:iam::1:user/keyturn/ci";
        let failure = |retryable| IamError {
            operation: "GetCallerIdentity",
            message: "InvalidClientTokenId: no such key".into(),
            not_found: false,
            retryable,
        };
        assert!(judge_proof("AKIA1", user, Ok(user.into())).is_ok());
        let Err(Refusal::Unproven(problem)) = judge_proof("AKIA1", user, Ok("arn:aws:iam::1:user/other".into())) else {
            panic!("another ARN must be refused");
        };
        assert!(problem.contains("AKIA1 signs as arn:aws:iam::1:user/other, not as"), "{problem}");
        let Err(Refusal::Unproven(problem)) = judge_proof("AKIA1", user, Err(failure(false))) else {
            panic!("a refused signature must be refused for good");
        };
        assert!(
            problem.contains("does not sign for key AKIA1") && problem.contains("nothing was changed"),
            "{problem}"
        );
        assert!(matches!(judge_proof("AKIA1", user, Err(failure(true))), Err(Refusal::Unreachable(_))));
    }

    #[test]
    fn secrets_keep_their_key_names_and_hide_the_secret_key() {
        let s = IamKeySecret::parse(&SecretString::from(
            r#"{"UserName":"ci","AccessKeyId":"AKIA1","SecretAccessKey":"s3cr3t","note":"x"}"#,
        ))
        .unwrap();
        assert_eq!((s.username.as_str(), s.access_key_id.as_str()), ("ci", "AKIA1"));
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let next = s.with_key("AKIA2", &SecretString::from("n3w"));
        let v: Value = serde_json::from_str(next.expose_secret()).unwrap();
        assert_eq!(v, serde_json::json!({"UserName":"ci","AccessKeyId":"AKIA2","SecretAccessKey":"n3w","note":"x"}));
        for (json, expected) in [
            (r#"{"username":"u","accessKeyId":"A"}"#, "missing key \"secretAccessKey\""),
            (r#"{"accessKeyId":"A","secretAccessKey":"s"}"#, "missing key \"username\""),
            (r#"{"username":"","accessKeyId":"A","secretAccessKey":"s"}"#, "key \"username\" is empty"),
            ("[]", "not a JSON object"),
        ] {
            assert!(IamKeySecret::parse(&SecretString::from(json)).unwrap_err().contains(expected), "{json}");
        }
    }

    #[test]
    fn scope_is_a_path_or_a_tag() {
        let user = |path: &str, t: &[(&str, &str)]| IamUser {
            arn: "arn:aws:iam::1:user/u".into(),
            path: path.into(),
            tags: tags(t),
        };
        let scope =
            Scope { path_prefix: Some("/keyturn/".into()), tag: Some(("rotate".into(), Some("keyturn".into()))) };
        assert!(scope.check(&user("/keyturn/ci/", &[])).is_ok());
        assert!(scope.check(&user("/", &[("rotate", "keyturn")])).is_ok());
        let err = scope.check(&user("/", &[("rotate", "other")])).unwrap_err();
        assert!(err.contains("outside this function's scope") && err.contains("tag rotate=keyturn"), "{err}");
        assert!(Scope::default().check(&user("/", &[])).is_err(), "no scope configured: nothing is in scope");
    }
}
