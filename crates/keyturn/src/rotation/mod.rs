//! Secrets Manager's four-step rotation protocol (createSecret, setSecret, testSecret,
//! finishSecret), exactly as the service drives it.
//!
//! [`Rotator`] checks the token at every step ([`decide::gate`]), stores the pending value
//! and moves the stages; what a credential kind does at each step lives behind
//! [`RotationTarget`] (databases: [`database::DatabaseRotation`]). Every step is idempotent:
//! rerun after a crash at any point, it converges.

pub mod database;
pub mod decide;
pub mod store;

use std::future::Future;
use std::time::Instant;

use secrecy::SecretString;
use serde::Deserialize;
use tracing::{info, warn};

use crate::backend::BackendError;
use decide::Gate;
use store::{SecretMetadata, SecretStore, Selector, StoreError, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

/// One of the four steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    /// The step's name as Secrets Manager sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

/// The event Secrets Manager sends a rotation function. `RotationToken` is accepted though
/// `aws_lambda_events` does not model it; fields added by the service later are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    pub step: Step,
    pub secret_id: String,
    pub token: String,
    pub rotation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEvent {
    step: String,
    secret_id: String,
    client_request_token: String,
    rotation_token: Option<String>,
}

impl RotationEvent {
    /// Validates a raw event. Errors name the field at fault.
    pub fn from_value(value: serde_json::Value) -> Result<Self, RotationError> {
        let raw: RawEvent = serde_json::from_value(value).map_err(|e| RotationError::InvalidEvent(e.to_string()))?;
        let step = match raw.step.as_str() {
            "createSecret" => Step::Create,
            "setSecret" => Step::Set,
            "testSecret" => Step::Test,
            "finishSecret" => Step::Finish,
            other => {
                return Err(RotationError::UnknownStep {
                    secret: raw.secret_id,
                    step: other.to_owned(),
                })
            }
        };
        if raw.secret_id.is_empty() {
            return Err(RotationError::InvalidEvent("SecretId is empty".into()));
        }
        if raw.client_request_token.is_empty() {
            return Err(RotationError::InvalidEvent("ClientRequestToken is empty".into()));
        }
        Ok(Self {
            step,
            secret_id: raw.secret_id,
            token: raw.client_request_token,
            rotation_token: raw.rotation_token,
        })
    }
}

/// What a step did, for the step's log line and the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The step did its work.
    Done,
    /// The step found its work already done (a retry, or a rerun after a crash).
    AlreadyDone,
    /// The token's version is already AWSCURRENT.
    AlreadyCurrent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::AlreadyDone => "already-done",
            Outcome::AlreadyCurrent => "already-current",
        }
    }
}

/// Everything that can stop a step. Each variant names the secret (its ARN once known) and
/// what is wrong. No step changes anything before it has validated its inputs.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("invalid rotation event: {0}")]
    InvalidEvent(String),
    #[error("secret {secret}: unknown step {step:?} (expected createSecret, setSecret, testSecret or finishSecret)")]
    UnknownStep { secret: String, step: String },
    #[error("secret {secret}: rotation is not enabled")]
    RotationDisabled { secret: String },
    #[error("secret {secret}: version {token} is not a version of this secret")]
    UnknownToken { secret: String, token: String },
    #[error("secret {secret}: version {token} is not staged AWSPENDING")]
    NotPending { secret: String, token: String },
    #[error("secret {secret}: no value for {what}")]
    MissingValue { secret: String, what: String },
    #[error("secret {secret}: the {what} value is invalid: {problem}")]
    InvalidSecret {
        secret: String,
        what: String,
        problem: String,
    },
    #[error("secret {secret}: master secret {master}: {problem}")]
    MasterSecret {
        secret: String,
        master: String,
        problem: String,
    },
    #[error("secret {secret}: username {username:?} is {len} bytes, over the {max}-byte limit of {engine}")]
    UsernameTooLong {
        secret: String,
        username: String,
        len: usize,
        max: usize,
        engine: &'static str,
    },
    #[error("secret {secret}: none of the secret's versions logs in as {username:?} (tried {tried})")]
    NoWorkingCredentials {
        secret: String,
        username: String,
        tried: String,
    },
    #[error("secret {secret}: {action}: {source}")]
    Backend {
        secret: String,
        action: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("secret {secret}: {source}")]
    Store {
        secret: String,
        #[source]
        source: StoreError,
    },
}

impl RotationError {
    /// Whether running the same step again, unchanged, may succeed (throttling, timeouts,
    /// a database that is restarting). Validation failures are never retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            RotationError::Backend { source, .. } => source.is_retryable(),
            RotationError::Store { source, .. } => source.retryable,
            _ => false,
        }
    }

    /// A short, stable name for the kind of failure (Lambda's `errorType`).
    pub fn kind(&self) -> &'static str {
        match self {
            RotationError::InvalidEvent(_) => "InvalidEvent",
            RotationError::UnknownStep { .. } => "UnknownStep",
            RotationError::RotationDisabled { .. } => "RotationDisabled",
            RotationError::UnknownToken { .. } => "UnknownToken",
            RotationError::NotPending { .. } => "NotPending",
            RotationError::MissingValue { .. } => "MissingValue",
            RotationError::InvalidSecret { .. } => "InvalidSecret",
            RotationError::MasterSecret { .. } => "MasterSecret",
            RotationError::UsernameTooLong { .. } => "UsernameTooLong",
            RotationError::NoWorkingCredentials { .. } => "NoWorkingCredentials",
            RotationError::Backend { .. } => "Backend",
            RotationError::Store { .. } => "Store",
        }
    }
}

/// Read access to the secret being rotated, lent to a [`RotationTarget`] for one step.
pub struct StepContext<'a, S> {
    pub store: &'a S,
    pub meta: &'a SecretMetadata,
    pub token: &'a str,
}

impl<S: SecretStore> StepContext<'_, S> {
    /// The secret's ARN, for error messages and logs.
    pub fn arn(&self) -> &str {
        &self.meta.arn
    }

    /// Wraps a store failure with this secret's ARN.
    pub fn store_error(&self, source: StoreError) -> RotationError {
        RotationError::Store {
            secret: self.meta.arn.clone(),
            source,
        }
    }

    /// Reads one version; `Ok(None)` if it has no value.
    pub async fn read(&self, selector: Selector<'_>) -> Result<Option<SecretString>, RotationError> {
        self.store
            .get(&self.meta.arn, selector)
            .await
            .map_err(|e| self.store_error(e))
    }

    /// Reads one version that must exist.
    pub async fn require(&self, selector: Selector<'_>, what: &str) -> Result<SecretString, RotationError> {
        self.read(selector).await?.ok_or_else(|| RotationError::MissingValue {
            secret: self.meta.arn.clone(),
            what: what.to_owned(),
        })
    }

    /// The AWSCURRENT value.
    pub async fn current(&self) -> Result<SecretString, RotationError> {
        self.require(Selector::Stage(AWSCURRENT), "AWSCURRENT").await
    }

    /// The value being rotated in (the token's version, while it is AWSPENDING).
    pub async fn pending(&self) -> Result<SecretString, RotationError> {
        self.require(
            Selector::VersionAndStage(self.token, AWSPENDING),
            "the AWSPENDING version",
        )
        .await
    }

    /// The AWSPREVIOUS value, if there is one.
    pub async fn previous(&self) -> Result<Option<SecretString>, RotationError> {
        self.read(Selector::Stage(AWSPREVIOUS)).await
    }
}

/// What one kind of credential does at each step. The engine has done the token checks
/// before any of these runs, and stores what `create` returns.
pub trait RotationTarget: Send + Sync {
    /// The strategy's name, for logs ("single-user", "alternating-users", ...).
    fn strategy(&self) -> &'static str;

    /// createSecret: validates the current value and builds the pending one. Must not
    /// change anything outside the secret before the value is stored.
    fn create<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        current: SecretString,
    ) -> impl Future<Output = Result<SecretString, RotationError>> + Send;

    /// setSecret: makes the pending credentials valid where they are used.
    fn set<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
    ) -> impl Future<Output = Result<Outcome, RotationError>> + Send;

    /// testSecret: proves the pending credentials work.
    fn test<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> impl Future<Output = Result<(), RotationError>> + Send;
}

/// The rotation engine: one per container, shared by every invocation.
pub struct Rotator<S, T> {
    store: S,
    target: T,
}

impl<S: SecretStore, T: RotationTarget> Rotator<S, T> {
    pub fn new(store: S, target: T) -> Self {
        Self { store, target }
    }

    /// The store, for callers that need to read what rotation wrote.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Runs one step and writes its log line (secret, step, token, strategy, outcome,
    /// duration). Never logs a secret value.
    pub async fn handle(&self, event: &RotationEvent) -> Result<Outcome, RotationError> {
        let started = Instant::now();
        let mut arn = event.secret_id.clone();
        let result = self.run_step(event, &mut arn).await;
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (step, strategy) = (event.step.as_str(), self.target.strategy());
        match &result {
            Ok(outcome) => info!(
                secret_arn = %arn, step, token = %event.token, strategy,
                outcome = outcome.as_str(), duration_ms, "rotation step"
            ),
            Err(error) => warn!(
                secret_arn = %arn, step, token = %event.token, strategy,
                outcome = "error", error_kind = error.kind(), retryable = error.is_retryable(),
                error = %error, duration_ms, "rotation step"
            ),
        }
        result
    }

    async fn run_step(&self, event: &RotationEvent, arn: &mut String) -> Result<Outcome, RotationError> {
        let meta = self
            .store
            .describe(&event.secret_id)
            .await
            .map_err(|source| RotationError::Store {
                secret: event.secret_id.clone(),
                source,
            })?;
        arn.clone_from(&meta.arn);
        let ctx = StepContext {
            store: &self.store,
            meta: &meta,
            token: &event.token,
        };
        let gate = decide::gate(&meta, &event.token)?;
        if gate == Gate::AlreadyCurrent && event.step != Step::Finish {
            return Ok(Outcome::AlreadyCurrent);
        }
        match event.step {
            Step::Create => self.create(&ctx, event.rotation_token.as_deref()).await,
            Step::Set => self.target.set(&ctx).await,
            Step::Test => self.target.test(&ctx).await.map(|()| Outcome::Done),
            Step::Finish => self.finish(&ctx, gate).await,
        }
    }

    async fn create(&self, ctx: &StepContext<'_, S>, rotation_token: Option<&str>) -> Result<Outcome, RotationError> {
        // Validate AWSCURRENT first, even on a rerun: a broken secret must be reported.
        let current = ctx.current().await?;
        if ctx
            .read(Selector::VersionAndStage(ctx.token, AWSPENDING))
            .await?
            .is_some()
        {
            return Ok(Outcome::AlreadyDone);
        }
        let pending = self.target.create(ctx, current).await?;
        self.store
            .put_pending(ctx.arn(), ctx.token, &pending, rotation_token)
            .await
            .map_err(|e| ctx.store_error(e))?;
        Ok(Outcome::Done)
    }

    async fn finish(&self, ctx: &StepContext<'_, S>, gate: Gate) -> Result<Outcome, RotationError> {
        let plan = decide::finish_plan(ctx.meta, ctx.token);
        for change in &plan {
            self.store
                .move_stage(ctx.arn(), change)
                .await
                .map_err(|e| ctx.store_error(e))?;
        }
        Ok(match (gate, plan.is_empty()) {
            (Gate::AlreadyCurrent, true) => Outcome::AlreadyCurrent,
            (Gate::AlreadyCurrent, false) => Outcome::AlreadyDone,
            (Gate::Proceed, _) => Outcome::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_parses_with_and_without_rotation_token() {
        let e = RotationEvent::from_value(json!({
            "Step": "createSecret", "SecretId": "s", "ClientRequestToken": "t", "RotationToken": "r"
        }))
        .unwrap();
        assert_eq!(e.step, Step::Create);
        assert_eq!(e.rotation_token.as_deref(), Some("r"));
        let e = RotationEvent::from_value(json!({"Step": "finishSecret", "SecretId": "s", "ClientRequestToken": "t"}))
            .unwrap();
        assert_eq!((e.step, e.rotation_token), (Step::Finish, None));
    }

    #[test]
    fn bad_events_are_refused_with_the_reason() {
        let err = RotationEvent::from_value(json!({"Step": "rotate", "SecretId": "s", "ClientRequestToken": "t"}))
            .unwrap_err();
        assert!(err.to_string().contains("\"rotate\""), "{err}");
        let err = RotationEvent::from_value(json!({"Step": "setSecret", "SecretId": "s"})).unwrap_err();
        assert!(err.to_string().contains("ClientRequestToken"), "{err}");
        let err = RotationEvent::from_value(json!("nope")).unwrap_err();
        assert!(matches!(err, RotationError::InvalidEvent(_)));
    }
}
