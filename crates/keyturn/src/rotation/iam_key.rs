//! IAM access key rotation on the two-keys-per-user limit: the active key (AWSCURRENT), the
//! previous key, still valid (AWSPREVIOUS), and, at the next rotation, revoked (deleted).
//!
//! createSecret first proves the secret holds the user's AWSCURRENT key (it signs
//! `sts:GetCallerIdentity` with it: key ids are not secret), then deletes the key the secret
//! left behind two rotations ago (and any key an interrupted createSecret created but never
//! stored), creates a key and stores it as AWSPENDING; setSecret checks IAM knows it;
//! testSecret signs `sts:GetCallerIdentity` with it until IAM's eventual consistency lets it
//! through. Only keys keyturn created or adopted for this secret are ever deleted: keyturn
//! names each key it creates in a user tag whose key is the access key id and whose value
//! names the secret and the rotation ([`Marks`]; the tag the IAM console shows as the key's
//! description). A key id in a secret is never enough to make a key deletable: keyturn
//! adopts (tags for the secret) only the AWSCURRENT key the secret has just proven it holds,
//! and only when that key has no such tag yet ([`plan_adoption`]), so the key stored by hand
//! before the first rotation is revoked like any other two rotations later.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tracing::{info, warn};

use super::store::{SecretStore, Selector};
use super::{Outcome, RotationError, RotationTarget, StepContext};
use crate::backend::aws::AwsError;

/// Key names accepted for each field, the first being the one keyturn documents. The
/// names a secret uses are kept when keyturn writes the next version.
const USERNAME_KEYS: [&str; 3] = ["username", "UserName", "userName"];
const ACCESS_KEY_ID_KEYS: [&str; 3] = ["accessKeyId", "AccessKeyId", "aws_access_key_id"];
const SECRET_KEY_KEYS: [&str; 3] = ["secretAccessKey", "SecretAccessKey", "aws_secret_access_key"];

/// The user tag keyturn sets just before `CreateAccessKey` (value:
/// [`Marks::creating_tag`]) and removes once the new key carries its own tag: a key
/// created soon after that time, untagged, while the marker of the same secret and token
/// is still there, is one an interrupted createSecret made.
pub const CREATING_TAG: &str = "keyturn-creating-key";

/// The user tag createSecret sets on every user whose keys it rotates, and never removes
/// (value: `keyturn-rotation-<secret>`, of the first secret that rotated it): a lease
/// user's expiry policy denies IAM writes on users carrying it
/// (`lease::kind::aws_iam_user::expiry_policy_document`), whatever path they are under.
/// Defined with keyturn's other tag keys.
pub const ROTATED_TAG: &str = crate::backend::aws::tag::ROTATED;

/// Prefix of every tag value keyturn writes; the secret's digest and the rotation's token
/// follow ([`Marks`]). Letters, digits and `-` only: moto fails to verify the signature of
/// some `TagUser` requests whose value holds a space or `:`.
pub const TAG_PREFIX: &str = "keyturn-rotation-";

/// What follows the secret in the tag of a key keyturn adopted rather than created
/// ([`Marks::adoption_tag`]).
const ADOPTED: &str = "adopted-";

/// The user tag values keyturn writes during one rotation of one secret:
/// `keyturn-rotation-<secret>-<token>` names a key it created (the tag whose key is the key
/// id), `keyturn-rotation-<secret>-adopted-<token>` the key stored by hand it adopted, and
/// `keyturn-rotation-<secret>-<token>-<time>` is the creation marker. `<secret>` is the first
/// 16 hex digits of the SHA-256 of the secret's ARN, so tags keyturn wrote for one secret
/// are never evidence for another secret naming the same user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marks {
    /// `keyturn-rotation-<secret>-`
    secret: String,
    token: String,
}

impl Marks {
    pub fn new(secret_arn: &str, token: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(secret_arn.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self { secret: format!("{TAG_PREFIX}{hex}-"), token: token.to_owned() }
    }

    /// The value of the [`ROTATED_TAG`] this rotation sets: `keyturn-rotation-<secret>`.
    pub fn rotated_tag(&self) -> String {
        self.secret.trim_end_matches('-').to_owned()
    }

    /// The value of the `<key id>` tag on the key this rotation creates.
    pub fn key_tag(&self) -> String {
        format!("{}{}", self.secret, self.token)
    }

    /// The value of the `<key id>` tag this rotation puts on the AWSCURRENT key it adopts
    /// ([`plan_adoption`]): `keyturn-rotation-<secret>-adopted-<token>`, a tag for this
    /// secret like the others, which says how it came to be.
    pub fn adoption_tag(&self) -> String {
        format!("{}{ADOPTED}{}", self.secret, self.token)
    }

    /// The value of the [`CREATING_TAG`] marker this rotation sets at `now` (seconds since
    /// the epoch).
    pub fn creating_tag(&self, now: u64) -> String {
        format!("{}{}-{now}", self.secret, self.token)
    }

    /// Whether a `<key id>` tag value says keyturn created or adopted the key for this
    /// secret (in this rotation or an earlier one).
    pub fn created_for_this_secret(&self, value: &str) -> bool {
        value.len() > self.secret.len() && value.starts_with(&self.secret)
    }

    /// The time in a [`CREATING_TAG`] value this very rotation (same secret, same token)
    /// set; `None` for any other marker.
    pub fn creating_since(&self, value: &str) -> Option<i64> {
        value.strip_prefix(&self.secret)?.strip_prefix(&self.token)?.strip_prefix('-')?.parse().ok()
    }
}

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

/// The IAM operations key rotation needs (production: [`crate::aws::iam::IamClient`]).
pub trait IamKeys: Send + Sync {
    fn user(&self, username: &str) -> impl Future<Output = Result<IamUser, AwsError>> + Send;
    fn keys(&self, username: &str) -> impl Future<Output = Result<Vec<AccessKey>, AwsError>> + Send;
    /// Creates a key; the secret key is only ever returned here.
    fn create_key(&self, username: &str) -> impl Future<Output = Result<(String, SecretString), AwsError>> + Send;
    /// Marks a key Inactive; a key that is already gone is success.
    fn deactivate_key(&self, username: &str, key_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// Deletes a key; a key that is already gone is success.
    fn delete_key(&self, username: &str, key_id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn tag_user(&self, username: &str, key: &str, value: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn untag_user(&self, username: &str, key: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    /// `sts:GetCallerIdentity` signed with this key: the caller's ARN.
    fn caller_arn(&self, key_id: &str, secret: &SecretString) -> impl Future<Output = Result<String, AwsError>> + Send;
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
    /// A key keyturn created for this secret (its tag, or this rotation's own marker, says
    /// so) that the secret does not name: an interrupted createSecret's.
    Orphan,
}

/// How long after its creation marker a key can have been made by the interrupted step
/// that set it, in seconds: a Lambda invocation lasts at most 15 minutes.
pub const MARKER_WINDOW_SECS: i64 = 15 * 60;

/// Leeway between the function's clock (the marker's time) and IAM's (the key's creation
/// date, in whole seconds), on either side of [`MARKER_WINDOW_SECS`].
pub const CLOCK_LEEWAY_SECS: i64 = 60;

/// Whether a key created at `at` can have been made by the step that set a marker at `since`.
fn within_marker_window(since: i64, at: i64) -> bool {
    since - CLOCK_LEEWAY_SECS <= at && at <= since + MARKER_WINDOW_SECS + CLOCK_LEEWAY_SECS
}

/// Which keys createSecret must delete so one can be created. Pure: the user's keys, the
/// key ids the secret's AWSCURRENT and AWSPREVIOUS hold (AWSPREVIOUS only when it names the
/// same user), the user's tags, and the tag values this rotation of this secret writes.
///
/// A key other than AWSCURRENT is deleted only on keyturn's own evidence for this secret:
/// - its `<key id>` user tag is one keyturn wrote for this secret (any of its rotations, on
///   a key it created or adopted): the AWSPREVIOUS key (revoked now), or a key the secret
///   no longer names (an orphan);
/// - it has no such tag, and this very rotation (same secret, same token) left its
///   creation marker at most [`MARKER_WINDOW_SECS`] (and [`CLOCK_LEEWAY_SECS`]) before the
///   key was made: the step was interrupted between `CreateAccessKey` and tagging the key,
///   and is being retried.
///
/// Anything else is refused, never deleted: a key made by hand that keyturn did not adopt
/// (one the secret never held as a proven AWSCURRENT, or that carried a tag of its own
/// then), a key keyturn made or adopted for another secret, a key made after another
/// rotation's marker. Tags are written by keyturn, not by whoever writes the secret, so a
/// secret's content alone never makes a key deletable.
pub fn plan_removals(
    keys: &[AccessKey],
    current: &str,
    previous: Option<&str>,
    tags: &BTreeMap<String, String>,
    marks: &Marks,
) -> Result<Vec<(String, Removal)>, PlanError> {
    if !keys.iter().any(|k| k.id == current) {
        return Err(PlanError::NotTheUsersKey(format!(
            "the AWSCURRENT key {current} is not one of the user's keys in IAM"
        )));
    }
    let creating = tags.get(CREATING_TAG).and_then(|v| marks.creating_since(v));
    let mut removals = Vec::new();
    let (mut previous_not_ours, mut foreign) = (None, Vec::new());
    for key in keys.iter().filter(|k| k.id != current) {
        let tag = tags.get(&key.id);
        let tagged_ours = tag.is_some_and(|v| marks.created_for_this_secret(v));
        let made_by_this_step = tag.is_none()
            && matches!((creating, key.created), (Some(since), Some(at)) if within_marker_window(since, at));
        let is_previous = Some(key.id.as_str()) == previous;
        match (tagged_ours || made_by_this_step, is_previous) {
            (true, true) => removals.push((key.id.clone(), Removal::Previous)),
            (true, false) => removals.push((key.id.clone(), Removal::Orphan)),
            (false, true) => previous_not_ours = Some(key.id.as_str()),
            (false, false) => foreign.push(key.id.as_str()),
        }
    }
    let mut problems = Vec::new();
    if let Some(id) = previous_not_ours {
        problems.push(format!(
            "the AWSPREVIOUS key {id} was not created by keyturn for this secret, nor adopted (no user tag {id} \
             from this secret's rotations; keyturn adopts the AWSCURRENT key only if it has no tag {id} at all), \
             and keyturn only deletes keys it created or adopted for the secret: if nothing uses it any more, \
             delete it by hand, then rotate again"
        ));
    }
    if !foreign.is_empty() {
        problems.push(format!(
            "key {} is neither in the secret nor created by keyturn for it; keyturn does not delete keys it did \
             not create: delete it, or store it in the secret, then rotate again",
            foreign.join(", ")
        ));
    }
    match problems.is_empty() {
        true => Ok(removals),
        false => Err(PlanError::NotKeyturns(problems.join("; "))),
    }
}

/// What createSecret does with the AWSCURRENT key's own tag, once the secret has proven it
/// holds that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// Tagged for this secret already: keyturn created or adopted it.
    Ours,
    /// No `<key id>` tag: a key made by hand and stored in the secret. keyturn tags it for
    /// this secret with this value, so that it revokes it like its own two rotations later.
    Adopt(String),
    /// A tag keyturn did not write for this secret (another secret's, an earlier keyturn's
    /// without the secret, a description): left as it is, so the key is never deleted by
    /// this secret's rotations. Says why.
    Leave(String),
}

/// Whether createSecret adopts the AWSCURRENT key `current`. Pure: the user's tags and the
/// tag values this rotation of this secret writes. Called only once the secret has proven
/// it holds the key (its writer holds the key's secret, so nothing is gained by them if
/// keyturn later deletes it); only a key with no `<key id>` tag at all is adopted: a key
/// tagged for another secret is never re-tagged (that secret's rotations would no longer
/// revoke it), nor is a tag keyturn did not write overwritten.
pub fn plan_adoption(current: &str, tags: &BTreeMap<String, String>, marks: &Marks) -> Adoption {
    match tags.get(current) {
        None => Adoption::Adopt(marks.adoption_tag()),
        Some(value) if marks.created_for_this_secret(value) => Adoption::Ours,
        Some(value) if value.starts_with(TAG_PREFIX) => Adoption::Leave(format!(
            "its tag {current} was written by keyturn for another secret (or by a version of keyturn that did not \
             name the secret)"
        )),
        Some(_) => Adoption::Leave(format!("it carries a tag {current} keyturn did not write (a description)")),
    }
}

/// Why createSecret cannot make room for a new key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The secret's AWSCURRENT key is not one of the user's keys.
    #[error("{0}")]
    NotTheUsersKey(String),
    /// A key would have to go that keyturn did not create for this secret.
    #[error("{0}")]
    NotKeyturns(String),
}

/// Why createSecret will not act on the AWSCURRENT key.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// STS refused the key, or it signs as someone else: the secret does not hold the
    /// user's key. Not retryable.
    Unproven(String),
    /// STS could not be asked (transport, throttling, server error): retryable as it is.
    Unreachable(AwsError),
}

/// Judges `sts:GetCallerIdentity` signed with the AWSCURRENT key: it must answer with the
/// user's ARN. Pure: the call's result and the ARN from `GetUser`. Messages name the key id,
/// never the secret key.
pub fn judge_proof(key_id: &str, user_arn: &str, answer: Result<String, AwsError>) -> Result<(), Refusal> {
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
    ) -> impl Fn(AwsError) -> RotationError + use<I, S> {
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
        let marks = Marks::new(ctx.arn(), ctx.token);
        let user = self.user_in_scope(ctx, &current.username).await?;
        let previous = match ctx.previous().await? {
            Some(value) => IamKeySecret::parse(&value).ok().filter(|p| p.username == current.username),
            None => None,
        };
        let keys = self.iam.keys(&current.username).await.map_err(Self::iam_error(ctx, "listing the user's keys"))?;
        let plan = plan_removals(
            &keys,
            &current.access_key_id,
            previous.as_ref().map(|p| p.access_key_id.as_str()),
            &user.tags,
            &marks,
        );
        let refused = |e: PlanError| match e {
            PlanError::NotTheUsersKey(problem) => {
                RotationError::InvalidSecret { secret: ctx.arn().to_owned(), what: "AWSCURRENT".into(), problem }
            }
            PlanError::NotKeyturns(problem) => RotationError::OutOfScope { secret: ctx.arn().to_owned(), problem },
        };
        if let Err(e @ PlanError::NotTheUsersKey(_)) = plan {
            return Err(refused(e));
        }
        // Key ids are not secret: before acting for the user, or saying more about its keys,
        // the secret must prove it holds the user's key by signing with it.
        let proof = self.iam.caller_arn(&current.access_key_id, &current.secret_access_key).await;
        judge_proof(&current.access_key_id, &user.arn, proof).map_err(|refusal| match refusal {
            Refusal::Unproven(problem) => {
                RotationError::InvalidSecret { secret: ctx.arn().to_owned(), what: "AWSCURRENT".into(), problem }
            }
            Refusal::Unreachable(e) => Self::iam_error(ctx, "proving the AWSCURRENT key (sts:GetCallerIdentity)")(e),
        })?;
        let removals = plan.map_err(refused)?;
        // Proven, so the key stored by hand becomes this secret's: revoked two rotations on.
        match plan_adoption(&current.access_key_id, &user.tags, &marks) {
            Adoption::Ours => {}
            Adoption::Adopt(tag) => {
                self.iam
                    .tag_user(&current.username, &current.access_key_id, &tag)
                    .await
                    .map_err(Self::iam_error(ctx, "adopting the AWSCURRENT key"))?;
                info!(secret_arn = %ctx.arn(), key_id = %current.access_key_id, "AWSCURRENT access key adopted");
            }
            Adoption::Leave(why) => warn!(
                secret_arn = %ctx.arn(),
                key_id = %current.access_key_id,
                "AWSCURRENT access key not adopted: {why}; once it is AWSPREVIOUS, rotation stops until it is \
                 deleted by hand"
            ),
        }
        for (key_id, why) in &removals {
            self.iam.delete_key(&current.username, key_id).await.map_err(Self::iam_error(ctx, "deleting a key"))?;
            if let Err(e) = self.iam.untag_user(&current.username, key_id).await {
                warn!(secret_arn = %ctx.arn(), key_id, error = %e, "could not remove the key's tag");
            }
            info!(secret_arn = %ctx.arn(), key_id, reason = ?why, "access key deleted");
        }
        // Before the user gets a key of keyturn's: from then on lease users may not touch it.
        if !user.tags.contains_key(ROTATED_TAG) {
            self.iam
                .tag_user(&current.username, ROTATED_TAG, &marks.rotated_tag())
                .await
                .map_err(Self::iam_error(ctx, "marking the user as rotated by keyturn"))?;
        }
        // Marks what is being done before doing it, so an interrupted step can tell the
        // key it made from keys made by hand, whenever it was interrupted.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.iam
            .tag_user(&current.username, CREATING_TAG, &marks.creating_tag(now))
            .await
            .map_err(Self::iam_error(ctx, "marking the key creation"))?;
        let (key_id, secret) =
            self.iam.create_key(&current.username).await.map_err(Self::iam_error(ctx, "creating a key"))?;
        self.iam
            .tag_user(&current.username, &key_id, &marks.key_tag())
            .await
            .map_err(Self::iam_error(ctx, "tagging the new key"))?;
        // A marker left in place would make a later retry of this token take a key made by
        // hand meanwhile for its own: fail instead. The retry deletes the key just made (it
        // carries this secret's tag) and starts over.
        self.iam.untag_user(&current.username, CREATING_TAG).await.map_err(|e| RotationError::Iam {
            secret: ctx.arn().to_owned(),
            action: "removing the creation marker",
            retryable: true,
            message: e.to_string(),
        })?;
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
        // The rotation's own version (not whatever AWSCURRENT labels now: a writer may put
        // versions between the stage moves and these reads) says whose key this is.
        let (Some(previous), Some(rotated)) = (ctx.previous().await?, ctx.read(Selector::Version(ctx.token)).await?)
        else {
            return Ok(());
        };
        let (previous, rotated) =
            (Self::parse(ctx, &previous, "AWSPREVIOUS")?, Self::parse(ctx, &rotated, "the rotated version")?);
        if previous.username != rotated.username || previous.access_key_id == rotated.access_key_id {
            return Ok(());
        }
        // AWSPREVIOUS may also have been replaced: only a key keyturn created or adopted for
        // this secret is deactivated, never another key of the user that a writer merely named.
        let user = self.user_in_scope(ctx, &previous.username).await?;
        let marks = Marks::new(ctx.arn(), ctx.token);
        if !user.tags.get(&previous.access_key_id).is_some_and(|tag| marks.created_for_this_secret(tag)) {
            warn!(
                secret_arn = %ctx.arn(),
                key_id = %previous.access_key_id,
                "previous access key not deactivated: keyturn did not create or adopt it for this secret"
            );
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

    const SECRET: &str = "arn:aws:secretsmanager:us-east-1:1:secret:ci-AbCdEf";
    const OTHER_SECRET: &str = "arn:aws:secretsmanager:us-east-1:1:secret:writer-XyZabc";

    /// The tags of this rotation ("tok") of SECRET.
    fn marks() -> Marks {
        Marks::new(SECRET, "tok")
    }

    fn plan(
        keys: &[AccessKey],
        current: &str,
        previous: Option<&str>,
        t: &[(&str, &str)],
    ) -> Result<Vec<(String, Removal)>, String> {
        plan_removals(keys, current, previous, &tags(t), &marks()).map_err(|e| e.to_string())
    }

    #[test]
    fn tags_are_bound_to_the_secret_and_the_token() {
        let (ours, older) = (marks(), Marks::new(SECRET, "old"));
        assert!(ours.key_tag().starts_with(TAG_PREFIX));
        assert!(ours.key_tag().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "moto-safe characters");
        assert!(ours.created_for_this_secret(&ours.key_tag()));
        assert!(ours.adoption_tag().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "moto-safe characters");
        assert!(ours.adoption_tag().contains("-adopted-tok") && ours.adoption_tag() != ours.key_tag());
        assert!(ours.created_for_this_secret(&older.adoption_tag()), "adopted by an earlier rotation");
        assert!(!ours.created_for_this_secret(&Marks::new(OTHER_SECRET, "tok").adoption_tag()));
        assert!(ours.created_for_this_secret(&older.key_tag()), "an earlier rotation of the same secret");
        assert!(!ours.created_for_this_secret(&Marks::new(OTHER_SECRET, "tok").key_tag()));
        assert!(!ours.created_for_this_secret("keyturn-rotation-tok"), "no secret in it");
        assert_eq!(ours.creating_since(&ours.creating_tag(900)), Some(900));
        assert_eq!(ours.creating_since(&older.creating_tag(900)), None, "another rotation's marker");
        assert_eq!(ours.creating_since(&Marks::new(OTHER_SECRET, "tok").creating_tag(900)), None);
        assert_eq!(Marks::new(SECRET, "tok-9").creating_since(&ours.creating_tag(900)), None);
        assert_eq!(ours.creating_since(&Marks::new(SECRET, "tok-9").creating_tag(900)), None);
    }

    #[test]
    fn the_previous_key_is_revoked_and_orphans_removed() {
        assert_eq!(plan(&[key("A")], "A", None, &[]).unwrap(), vec![]);
        let by_keyturn = Marks::new(SECRET, "v1").key_tag();
        assert_eq!(
            plan(&[key("A"), key("B")], "B", Some("A"), &[("A", &by_keyturn)]).unwrap(),
            vec![("A".to_string(), Removal::Previous)]
        );
        // A key keyturn made for this secret that the secret does not name.
        let lost = Marks::new(SECRET, "lost").key_tag();
        assert_eq!(
            plan(&[key("B"), key("C")], "B", Some("A"), &[("C", &lost)]).unwrap(),
            vec![("C".to_string(), Removal::Orphan)]
        );
        assert_eq!(
            plan(&[key("B"), key("C")], "B", None, &[("C", &marks().key_tag())]).unwrap(),
            vec![("C".to_string(), Removal::Orphan)]
        );
    }

    #[test]
    fn the_proven_current_key_is_adopted_only_when_it_has_no_tag() {
        let adopt = |t: &[(&str, &str)]| plan_adoption("A", &tags(t), &marks());
        assert_eq!(adopt(&[]), Adoption::Adopt(marks().adoption_tag()));
        assert_eq!(adopt(&[("B", "laptop"), (CREATING_TAG, &marks().creating_tag(900))]), adopt(&[]));
        assert_eq!(adopt(&[("A", &Marks::new(SECRET, "v1").key_tag())]), Adoption::Ours, "created for it");
        assert_eq!(adopt(&[("A", &Marks::new(SECRET, "v1").adoption_tag())]), Adoption::Ours, "adopted already");
        // Another secret's key is never re-tagged: that secret's rotations would no longer
        // revoke it. Nor is a tag keyturn did not write overwritten.
        for (tag, why) in [
            (Marks::new(OTHER_SECRET, "v1").key_tag(), "for another secret"),
            (Marks::new(OTHER_SECRET, "v1").adoption_tag(), "for another secret"),
            ("keyturn-rotation-v1".into(), "did not name the secret"),
            ("laptop".into(), "a description"),
        ] {
            let Adoption::Leave(reason) = adopt(&[("A", &tag)]) else { panic!("{tag} must be left as it is") };
            assert!(reason.contains(why), "{tag}: {reason}");
        }
    }

    #[test]
    fn an_adopted_key_is_revoked_two_rotations_later() {
        let adopted = Marks::new(SECRET, "v1").adoption_tag();
        assert_eq!(
            plan(&[key("A"), key("B")], "B", Some("A"), &[("A", &adopted)]).unwrap(),
            vec![("A".to_string(), Removal::Previous)]
        );
        // Another secret's adoption is no evidence for this one.
        let theirs = Marks::new(OTHER_SECRET, "v1").adoption_tag();
        assert!(plan(&[key("A"), key("B")], "B", Some("A"), &[("A", &theirs)]).is_err());
        assert!(plan(&[key("A"), key("B")], "B", None, &[("A", &theirs)]).is_err());
    }

    #[test]
    fn a_previous_key_keyturn_did_not_create_for_this_secret_is_never_deleted() {
        for tag in [
            None,
            Some("laptop".to_string()),
            Some(Marks::new(OTHER_SECRET, "v1").key_tag()),
            Some("keyturn-rotation-v1".into()),
        ] {
            let t: Vec<(&str, &str)> = tag.iter().map(|v| ("A", v.as_str())).collect();
            let err = plan(&[key("A"), key("B")], "B", Some("A"), &t).unwrap_err();
            assert!(err.contains("the AWSPREVIOUS key A was not created by keyturn for this secret"), "{tag:?}: {err}");
            assert!(err.contains("delete it by hand"), "{err}");
        }
    }

    #[test]
    fn a_key_made_right_after_this_rotations_marker_is_an_orphan() {
        let marker = marks().creating_tag(900);
        assert_eq!(
            plan(&[key("A"), key("C")], "A", None, &[(CREATING_TAG, &marker)]).unwrap(),
            vec![("C".to_string(), Removal::Orphan)]
        );
        // Clocks differ: a key dated a little before the marker is still the step's.
        let early = AccessKey { created: Some(900 - CLOCK_LEEWAY_SECS), ..key("C") };
        assert_eq!(plan(&[key("A"), early], "A", None, &[(CREATING_TAG, &marker)]).unwrap().len(), 1);
        // Made before the marker, or later than the step that set it could have run.
        let before = AccessKey { created: Some(900 - CLOCK_LEEWAY_SECS - 1), ..key("C") };
        let late = AccessKey { created: Some(900 + MARKER_WINDOW_SECS + CLOCK_LEEWAY_SECS + 1), ..key("C") };
        for c in [before, late, AccessKey { created: None, ..key("C") }] {
            assert!(plan(&[key("A"), c.clone()], "A", None, &[(CREATING_TAG, &marker)]).is_err(), "{c:?}");
        }
        // A key with a tag of its own (a description) was not made by the interrupted step.
        assert!(plan(&[key("A"), key("C")], "A", None, &[(CREATING_TAG, &marker), ("C", "laptop")]).is_err());
    }

    #[test]
    fn a_stale_or_foreign_marker_is_no_evidence() {
        for marker in [
            Marks::new(SECRET, "earlier").creating_tag(900),
            Marks::new(OTHER_SECRET, "tok").creating_tag(900),
            "keyturn-rotation-tok-900".to_string(),
            "someone-else-900".to_string(),
        ] {
            let err = plan(&[key("A"), key("C")], "A", None, &[(CREATING_TAG, &marker)]).unwrap_err();
            assert!(err.contains("key C is neither in the secret nor created by keyturn"), "{marker}: {err}");
        }
    }

    #[test]
    fn keys_keyturn_did_not_create_are_never_deleted() {
        let err = plan(&[key("A"), key("X")], "A", None, &[("X", "laptop")]).unwrap_err();
        assert!(err.contains("key X is neither in the secret nor created by keyturn"), "{err}");
        let writers = Marks::new(OTHER_SECRET, "v1").key_tag();
        let err = plan(&[key("A"), key("X")], "A", None, &[("X", &writers)]).unwrap_err();
        assert!(err.contains("key X is neither in the secret nor created by keyturn"), "another secret's key: {err}");
        let err = plan_removals(&[key("X"), key("Y")], "A", None, &tags(&[]), &marks()).unwrap_err();
        assert!(
            matches!(&err, PlanError::NotTheUsersKey(m) if m.contains("AWSCURRENT key A is not one of the user's keys"))
        );
    }

    #[test]
    fn the_current_key_must_sign_as_the_user() {
        let user = "arn:aws:iam::1:user/keyturn/ci";
        let failure = |retryable| AwsError {
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
