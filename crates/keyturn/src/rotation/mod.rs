//! Secrets Manager's four-step rotation protocol (createSecret, setSecret, testSecret,
//! finishSecret), exactly as the service drives it.
//!
//! [`Rotator`] checks the token at every step ([`decide::gate`]), stores the pending value
//! and moves the stages; what a credential kind does at each step lives behind
//! [`RotationTarget`] (databases: [`database::DatabaseRotation`]). Every step is idempotent:
//! rerun after a crash at any point, it converges.

#[cfg(feature = "database")]
pub mod database;
pub mod decide;
#[cfg(feature = "iam")]
pub mod iam_key;
pub mod store;

use std::future::Future;
use std::sync::Mutex;
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
            other => return Err(RotationError::UnknownStep { secret: raw.secret_id, step: other.to_owned() }),
        };
        if raw.secret_id.is_empty() {
            return Err(RotationError::InvalidEvent("SecretId is empty".into()));
        }
        if raw.client_request_token.is_empty() {
            return Err(RotationError::InvalidEvent("ClientRequestToken is empty".into()));
        }
        Ok(Self { step, secret_id: raw.secret_id, token: raw.client_request_token, rotation_token: raw.rotation_token })
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
    InvalidSecret { secret: String, what: String, problem: String },
    /// The admin secret the user secret names (`masterarn`) cannot be used.
    #[error("secret {secret}: admin secret {admin}: {problem}")]
    AdminSecret { secret: String, admin: String, problem: String },
    #[error("secret {secret}: username {username:?} {problem}")]
    InvalidUsername { secret: String, username: String, problem: String },
    #[error("secret {secret}: {problem}")]
    OutOfScope { secret: String, problem: String },
    /// The secret asks for something keyturn will not do on its behalf (see
    /// docs/security.md): acting as admin for an unproven login, say.
    #[error("secret {secret}: refused: {problem}")]
    Refused { secret: String, problem: String },
    #[error("secret {secret}: {action}: {message}")]
    Iam { secret: String, action: &'static str, retryable: bool, message: String },
    #[error("secret {secret}: none of the secret's versions logs in as {username:?} (tried {tried})")]
    NoWorkingCredentials { secret: String, username: String, tried: String },
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
            RotationError::Iam { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The database's kind of failure behind a `Backend` error (see [`BackendError::kind`]),
    /// for logs: a server that requires TLS reads apart from a refused password.
    pub fn backend_kind(&self) -> Option<&'static str> {
        match self {
            RotationError::Backend { source, .. } => Some(source.kind()),
            _ => None,
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
            RotationError::AdminSecret { .. } => "AdminSecret",
            RotationError::InvalidUsername { .. } => "InvalidUsername",
            RotationError::NoWorkingCredentials { .. } => "NoWorkingCredentials",
            RotationError::Backend { .. } => "Backend",
            RotationError::Store { .. } => "Store",
            RotationError::OutOfScope { .. } => "OutOfScope",
            RotationError::Refused { .. } => "Refused",
            RotationError::Iam { .. } => "Iam",
        }
    }
}

/// The values a step reads from the secret being rotated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reads {
    pub current: bool,
    pub pending: bool,
    pub previous: bool,
}

type Read = Result<Option<SecretString>, StoreError>;

/// A value read ahead, taken once; a second request reads again.
#[derive(Default)]
struct Slot(Mutex<Option<Read>>);

impl Slot {
    fn put(&self, read: Read) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(read);
        }
    }

    fn take(&self) -> Option<Read> {
        self.0.lock().ok()?.take()
    }
}

/// Reads started together with DescribeSecret so they cost no round trip of their own.
/// Reads change nothing, and their results are only used once the token passed the gate.
#[derive(Default)]
struct Prefetch {
    current: Slot,
    pending: Slot,
    previous: Slot,
}

impl Prefetch {
    async fn fetch<S: SecretStore>(&self, store: &S, secret_id: &str, token: &str, reads: Reads) {
        async fn read_if<S: SecretStore>(wanted: bool, store: &S, id: &str, selector: Selector<'_>) -> Option<Read> {
            match wanted {
                true => Some(store.get(id, selector).await),
                false => None,
            }
        }
        let (current, pending, previous) = tokio::join!(
            read_if(reads.current, store, secret_id, Selector::Stage(AWSCURRENT)),
            read_if(reads.pending, store, secret_id, Selector::VersionAndStage(token, AWSPENDING)),
            read_if(reads.previous, store, secret_id, Selector::Stage(AWSPREVIOUS)),
        );
        for (slot, read) in [(&self.current, current), (&self.pending, pending), (&self.previous, previous)] {
            if let Some(read) = read {
                slot.put(read);
            }
        }
    }
}

/// Read access to the secret being rotated, lent to a [`RotationTarget`] for one step.
pub struct StepContext<'a, S> {
    pub store: &'a S,
    pub meta: &'a SecretMetadata,
    pub token: &'a str,
    prefetch: &'a Prefetch,
}

impl<S: SecretStore> StepContext<'_, S> {
    /// The secret's ARN, for error messages and logs.
    pub fn arn(&self) -> &str {
        &self.meta.arn
    }

    /// Wraps a store failure with this secret's ARN.
    pub fn store_error(&self, source: StoreError) -> RotationError {
        RotationError::Store { secret: self.meta.arn.clone(), source }
    }

    /// Reads one version; `Ok(None)` if it has no value.
    pub async fn read(&self, selector: Selector<'_>) -> Result<Option<SecretString>, RotationError> {
        self.store.get(&self.meta.arn, selector).await.map_err(|e| self.store_error(e))
    }

    /// The value read ahead into `slot`, or a fresh read.
    async fn read_ahead(&self, slot: &Slot, selector: Selector<'_>) -> Result<Option<SecretString>, RotationError> {
        match slot.take() {
            Some(read) => read.map_err(|e| self.store_error(e)),
            None => self.read(selector).await,
        }
    }

    /// The AWSCURRENT value.
    pub async fn current(&self) -> Result<SecretString, RotationError> {
        let value = self.read_ahead(&self.prefetch.current, Selector::Stage(AWSCURRENT)).await?;
        value.ok_or_else(|| self.missing("AWSCURRENT"))
    }

    /// The value being rotated in (the token's version, while it is AWSPENDING).
    pub async fn pending(&self) -> Result<SecretString, RotationError> {
        let value = self.pending_if_stored().await?;
        value.ok_or_else(|| self.missing("the AWSPENDING version"))
    }

    /// The token's AWSPENDING value, if one has been stored.
    pub async fn pending_if_stored(&self) -> Result<Option<SecretString>, RotationError> {
        let selector = Selector::VersionAndStage(self.token, AWSPENDING);
        self.read_ahead(&self.prefetch.pending, selector).await
    }

    /// The AWSPREVIOUS value, if there is one.
    pub async fn previous(&self) -> Result<Option<SecretString>, RotationError> {
        self.read_ahead(&self.prefetch.previous, Selector::Stage(AWSPREVIOUS)).await
    }

    fn missing(&self, what: &str) -> RotationError {
        RotationError::MissingValue { secret: self.meta.arn.clone(), what: what.to_owned() }
    }
}

/// What one kind of credential does at each step. The engine has done the token checks
/// before any of these runs, and stores what `create` returns.
pub trait RotationTarget: Send + Sync {
    /// The strategy's name, for logs ("single-user", "alternating-users", ...).
    fn strategy(&self) -> &'static str;

    /// What `set` and `test` will read, so the engine can fetch it together with
    /// DescribeSecret. Only a hint: anything not read ahead is read on demand.
    fn reads(&self, step: Step) -> Reads {
        match step {
            Step::Set | Step::Test => Reads { pending: true, ..Reads::default() },
            Step::Create | Step::Finish => Reads::default(),
        }
    }

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

    /// finishSecret, once the stages have moved: anything the credentials now AWSPREVIOUS
    /// call for (nothing by default). Runs on every finishSecret, reruns included, so it
    /// must be idempotent.
    fn after_finish<S: SecretStore>(
        &self,
        _ctx: &StepContext<'_, S>,
    ) -> impl Future<Output = Result<(), RotationError>> + Send {
        async { Ok(()) }
    }
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
                outcome = "error", error_kind = error.kind(), backend_error_kind = error.backend_kind(),
                retryable = error.is_retryable(),
                error = %error, duration_ms, "rotation step"
            ),
        }
        result
    }

    async fn run_step(&self, event: &RotationEvent, arn: &mut String) -> Result<Outcome, RotationError> {
        let reads = match event.step {
            // The engine's own reads: AWSCURRENT, and whether the token already has a value.
            Step::Create => Reads { current: true, pending: true, previous: false },
            step => self.target.reads(step),
        };
        let prefetch = Prefetch::default();
        let (meta, ()) = tokio::join!(
            self.store.describe(&event.secret_id),
            prefetch.fetch(&self.store, &event.secret_id, &event.token, reads)
        );
        let meta = meta.map_err(|source| RotationError::Store { secret: event.secret_id.clone(), source })?;
        arn.clone_from(&meta.arn);
        let gate = decide::gate(&meta, &event.token)?;
        if gate == Gate::AlreadyCurrent && event.step != Step::Finish {
            return Ok(Outcome::AlreadyCurrent);
        }
        let ctx = StepContext { store: &self.store, meta: &meta, token: &event.token, prefetch: &prefetch };
        match event.step {
            Step::Create => self.create(&ctx, event.rotation_token.as_deref()).await,
            Step::Set => self.target.set(&ctx).await,
            Step::Test => self.target.test(&ctx).await.map(|()| Outcome::Done),
            Step::Finish => self.finish(&ctx, gate).await,
        }
    }

    async fn create(&self, ctx: &StepContext<'_, S>, rotation_token: Option<&str>) -> Result<Outcome, RotationError> {
        // AWSCURRENT must exist even on a rerun: a broken secret is reported.
        let current = ctx.current().await?;
        if ctx.pending_if_stored().await?.is_some() {
            return Ok(Outcome::AlreadyDone);
        }
        let pending = self.target.create(ctx, current).await?;
        self.store.put_pending(ctx.arn(), ctx.token, &pending, rotation_token).await.map_err(|e| ctx.store_error(e))?;
        Ok(Outcome::Done)
    }

    async fn finish(&self, ctx: &StepContext<'_, S>, gate: Gate) -> Result<Outcome, RotationError> {
        let plan = decide::finish_plan(ctx.meta, ctx.token);
        for change in &plan {
            self.store.move_stage(ctx.arn(), change).await.map_err(|e| ctx.store_error(e))?;
        }
        self.target.after_finish(ctx).await?;
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

    /// An in-memory Secrets Manager with the service's label semantics, for the engine's
    /// pure orchestration. Real Secrets Manager (moto) is exercised by tests/.
    #[derive(Default)]
    struct FakeStore {
        state: std::sync::Mutex<FakeState>,
    }

    #[derive(Default)]
    struct FakeState {
        enabled: bool,
        fail_reads: bool,
        versions: std::collections::BTreeMap<String, (std::collections::BTreeSet<String>, Option<String>)>,
        puts: usize,
    }

    impl FakeStore {
        fn new(enabled: bool) -> Self {
            let store = FakeStore::default();
            {
                let mut s = store.state.lock().unwrap();
                s.enabled = enabled;
                s.versions.insert("v0".into(), ([AWSCURRENT.to_string()].into(), Some("current".into())));
                s.versions.insert("tok".into(), ([AWSPENDING.to_string()].into(), None));
            }
            store
        }

        fn stages(&self, id: &str) -> Vec<String> {
            self.state.lock().unwrap().versions[id].0.iter().cloned().collect()
        }
    }

    fn fail(operation: &'static str) -> StoreError {
        StoreError { operation, message: "injected".into(), retryable: true }
    }

    impl SecretStore for FakeStore {
        async fn describe(&self, _: &str) -> Result<SecretMetadata, StoreError> {
            let s = self.state.lock().unwrap();
            Ok(SecretMetadata {
                arn: "arn:fake".into(),
                name: "fake".into(),
                rotation_enabled: s.enabled,
                versions: s.versions.iter().map(|(id, (stages, _))| (id.clone(), stages.clone())).collect(),
                tags: Default::default(),
            })
        }

        async fn get(&self, _: &str, selector: Selector<'_>) -> Result<Option<SecretString>, StoreError> {
            let s = self.state.lock().unwrap();
            if s.fail_reads {
                return Err(fail("GetSecretValue"));
            }
            let found = s.versions.iter().find(|(id, (stages, _))| match selector {
                Selector::Stage(stage) => stages.contains(stage),
                Selector::Version(v) => id.as_str() == v,
                Selector::VersionAndStage(v, stage) => id.as_str() == v && stages.contains(stage),
            });
            Ok(found.and_then(|(_, (_, value))| value.clone()).map(SecretString::from))
        }

        async fn put_pending(
            &self,
            _: &str,
            token: &str,
            value: &SecretString,
            _: Option<&str>,
        ) -> Result<(), StoreError> {
            use secrecy::ExposeSecret;
            let mut s = self.state.lock().unwrap();
            s.puts += 1;
            let entry = s.versions.entry(token.into()).or_default();
            entry.0.insert(AWSPENDING.into());
            entry.1 = Some(value.expose_secret().to_owned());
            Ok(())
        }

        async fn move_stage(&self, _: &str, change: &store::StageMove) -> Result<(), StoreError> {
            let mut s = self.state.lock().unwrap();
            if let Some(from) = &change.remove_from {
                s.versions.get_mut(from).unwrap().0.remove(change.stage);
                if change.stage == AWSCURRENT {
                    for (stages, _) in s.versions.values_mut() {
                        stages.remove(AWSPREVIOUS);
                    }
                    s.versions.get_mut(from).unwrap().0.insert(AWSPREVIOUS.into());
                }
            }
            if let Some(to) = &change.move_to {
                s.versions.get_mut(to).unwrap().0.insert(change.stage.into());
            }
            Ok(())
        }

        async fn list_versions(&self, _: &str) -> Result<Vec<store::VersionInfo>, StoreError> {
            Ok(Vec::new())
        }
    }

    /// Counts the target's calls; its pending value is fixed.
    #[derive(Default)]
    struct FakeTarget {
        calls: std::sync::Mutex<Vec<&'static str>>,
    }

    impl RotationTarget for FakeTarget {
        fn strategy(&self) -> &'static str {
            "fake"
        }

        async fn create<S: SecretStore>(
            &self,
            _: &StepContext<'_, S>,
            _: SecretString,
        ) -> Result<SecretString, RotationError> {
            self.calls.lock().unwrap().push("create");
            Ok(SecretString::from("next"))
        }

        async fn set<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<Outcome, RotationError> {
            ctx.pending().await?;
            self.calls.lock().unwrap().push("set");
            Ok(Outcome::Done)
        }

        async fn test<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<(), RotationError> {
            ctx.pending().await?;
            self.calls.lock().unwrap().push("test");
            Ok(())
        }
    }

    fn event(step: Step, token: &str) -> RotationEvent {
        RotationEvent { step, secret_id: "fake".into(), token: token.into(), rotation_token: None }
    }

    #[tokio::test]
    async fn a_rotation_runs_once_and_reruns_change_nothing() {
        let rotator = Rotator::new(FakeStore::new(true), FakeTarget::default());
        for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
            rotator.handle(&event(step, "tok")).await.unwrap();
        }
        assert_eq!(rotator.store().stages("tok"), vec![AWSCURRENT.to_string()]);
        assert_eq!(rotator.store().stages("v0"), vec![AWSPREVIOUS.to_string()]);
        for step in [Step::Create, Step::Set, Step::Test, Step::Finish] {
            assert_eq!(rotator.handle(&event(step, "tok")).await.unwrap(), Outcome::AlreadyCurrent);
        }
        assert_eq!(*rotator.target.calls.lock().unwrap(), ["create", "set", "test"]);
        assert_eq!(rotator.store().state.lock().unwrap().puts, 1);
    }

    #[tokio::test]
    async fn create_rerun_keeps_the_stored_value() {
        let rotator = Rotator::new(FakeStore::new(true), FakeTarget::default());
        assert_eq!(rotator.handle(&event(Step::Create, "tok")).await.unwrap(), Outcome::Done);
        assert_eq!(rotator.handle(&event(Step::Create, "tok")).await.unwrap(), Outcome::AlreadyDone);
        assert_eq!(rotator.store().state.lock().unwrap().puts, 1);
    }

    #[tokio::test]
    async fn the_gate_is_reported_before_any_read_failure() {
        let store = FakeStore::new(false);
        store.state.lock().unwrap().fail_reads = true;
        let rotator = Rotator::new(store, FakeTarget::default());
        let err = rotator.handle(&event(Step::Create, "tok")).await.unwrap_err();
        assert!(matches!(err, RotationError::RotationDisabled { .. }), "{err}");
        rotator.store().state.lock().unwrap().enabled = true;
        let err = rotator.handle(&event(Step::Set, "nope")).await.unwrap_err();
        assert!(matches!(err, RotationError::UnknownToken { .. }), "{err}");
        // Past the gate, a failed read is a retryable store error and nothing was called.
        let err = rotator.handle(&event(Step::Set, "tok")).await.unwrap_err();
        assert!(matches!(err, RotationError::Store { .. }) && err.is_retryable(), "{err}");
        assert!(rotator.target.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn set_before_create_is_a_missing_value() {
        let rotator = Rotator::new(FakeStore::new(true), FakeTarget::default());
        let err = rotator.handle(&event(Step::Set, "tok")).await.unwrap_err();
        assert!(matches!(err, RotationError::MissingValue { .. }), "{err}");
    }
}
