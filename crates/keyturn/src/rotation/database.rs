//! Database rotation on top of [`DatabaseBackend`]: the single-user and alternating-users
//! strategies of AWS's templates, with no engine-specific code.
//!
//! Single user: the user changes its own password, logging in with current (done already
//! if pending works instead), previous and then, if none works (a rotation abandoned after
//! setSecret), every other version the secret still has. Alternating users: the admin secret `masterarn` names
//! sets the password of `<user>` or `<user>_clone`, whichever is not current, creating the
//! clone like the original; the previous user stays valid until the next rotation.

use std::future::Future;

use secrecy::SecretString;
use tracing::{info, warn};

use super::store::{SecretStore, Selector, AWSCURRENT};
use super::{decide, Outcome, Reads, RotationError, RotationTarget, Step, StepContext};
use crate::backend::{
    BackendError, Credentials, DatabaseBackend, DatabaseSecret, Endpoint, Engine, SetOwnPassword, UpsertUser, Username,
};
use crate::password::PasswordPolicy;

/// Suffix of the second user in the alternating-users strategy (as in AWS's templates).
pub const CLONE_SUFFIX: &str = "_clone";

/// How a deployment rotates: chosen per function, never by the secret's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    SingleUser,
    AlternatingUsers,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::SingleUser => "single-user",
            Strategy::AlternatingUsers => "alternating-users",
        }
    }
}

/// The other user of the alternating pair: `app` ↔ `app_clone`.
pub fn alternate(username: &Username) -> Username {
    let name = username.as_str();
    let next = match name.strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => base.to_owned(),
        _ => format!("{name}{CLONE_SUFFIX}"),
    };
    Username::parse(&next).expect("a non-empty name stays non-empty")
}

/// The original user of the pair (the clone's template).
pub fn original(username: &Username) -> Username {
    match username.as_str().strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => Username::parse(base).expect("non-empty"),
        _ => username.clone(),
    }
}

/// Where an RDS-managed master secret's database is: what `DescribeDBInstances` or
/// `DescribeDBClusters` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsEndpoint {
    pub host: String,
    pub port: u16,
    pub engine: String,
}

/// Looks up RDS instances and clusters (production: [`crate::aws::rds::RdsClient`]).
pub trait RdsLookup: Send + Sync {
    fn instance(&self, arn: &str) -> impl Future<Output = Result<RdsEndpoint, String>> + Send;
    fn cluster(&self, arn: &str) -> impl Future<Output = Result<RdsEndpoint, String>> + Send;
}

/// Tag RDS puts on the master-user secrets it manages for an instance.
pub const RDS_INSTANCE_TAG: &str = "aws:rds:primaryDBInstanceArn";
/// Tag RDS puts on the master-user secrets it manages for a cluster.
pub const RDS_CLUSTER_TAG: &str = "aws:rds:primaryDBClusterArn";

/// Database rotation: a backend, RDS lookups for managed master secrets, the strategy and
/// the password policy. Built once per container.
pub struct DatabaseRotation<B, R> {
    backend: B,
    rds: R,
    strategy: Strategy,
    passwords: PasswordPolicy,
}

impl<B: DatabaseBackend, R: RdsLookup> DatabaseRotation<B, R> {
    pub fn new(backend: B, rds: R, strategy: Strategy, passwords: PasswordPolicy) -> Self {
        Self { backend, rds, strategy, passwords }
    }

    fn parse<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        value: &SecretString,
        what: &str,
    ) -> Result<DatabaseSecret, RotationError> {
        let secret = DatabaseSecret::parse(value).map_err(|problem| RotationError::InvalidSecret {
            secret: ctx.arn().to_owned(),
            what: what.to_owned(),
            problem,
        })?;
        if !self.backend.serves(secret.endpoint.engine) {
            return Err(RotationError::InvalidSecret {
                secret: ctx.arn().to_owned(),
                what: what.to_owned(),
                problem: format!("engine {:?} is not rotated by this function", secret.endpoint.engine.as_str()),
            });
        }
        Ok(secret)
    }

    fn backend_error<S: SecretStore>(
        ctx: &StepContext<'_, S>,
        action: &'static str,
    ) -> impl Fn(BackendError) -> RotationError + use<B, R, S> {
        let secret = ctx.arn().to_owned();
        move |source| RotationError::Backend { secret: secret.clone(), action, source }
    }

    /// Reads the admin secret and where its database is, from the secret or from RDS.
    /// `what` names the user secret's version in errors.
    async fn master<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        user: &DatabaseSecret,
        what: &str,
    ) -> Result<(Endpoint, Credentials), RotationError> {
        let master_arn = user.masterarn.as_deref().ok_or_else(|| RotationError::InvalidSecret {
            secret: ctx.arn().to_owned(),
            what: what.into(),
            problem: "missing key \"masterarn\" (required by the alternating-users strategy)".into(),
        })?;
        let fail = |problem: String| RotationError::MasterSecret {
            secret: ctx.arn().to_owned(),
            master: master_arn.to_owned(),
            problem,
        };
        let value = ctx.store.get(master_arn, Selector::Stage(AWSCURRENT)).await.map_err(|e| fail(e.to_string()))?;
        let master = DatabaseSecret::parse_master(&value.ok_or_else(|| fail("it has no AWSCURRENT value".into()))?)
            .map_err(fail)?;

        // A master secret that names its host is used as it is (one call saved); one that
        // does not must be RDS-managed, and its tags say which instance or cluster to ask.
        let (host, port, engine) = match master.host.clone() {
            Some(host) => {
                let engine = master.engine.unwrap_or(user.endpoint.engine);
                (host, master.port.unwrap_or(engine.default_port()), engine)
            }
            None => {
                let meta = ctx.store.describe(master_arn).await.map_err(|e| fail(e.to_string()))?;
                let found = if let Some(arn) = meta.tags.get(RDS_INSTANCE_TAG) {
                    self.rds.instance(arn).await.map_err(|e| fail(format!("DescribeDBInstances {arn}: {e}")))?
                } else if let Some(arn) = meta.tags.get(RDS_CLUSTER_TAG) {
                    self.rds.cluster(arn).await.map_err(|e| fail(format!("DescribeDBClusters {arn}: {e}")))?
                } else {
                    return Err(fail("missing key \"host\" (and no aws:rds:primaryDB*Arn tag to look it up)".into()));
                };
                let engine = Engine::parse(&found.engine).ok_or_else(|| {
                    fail(format!("RDS reports engine {:?}, which keyturn does not rotate", found.engine))
                })?;
                (found.host, found.port, engine)
            }
        };
        if engine.family() != user.endpoint.engine.family() {
            return Err(fail(format!(
                "engine {} does not match the user's {}",
                engine.as_str(),
                user.endpoint.engine.as_str()
            )));
        }
        if !host.eq_ignore_ascii_case(&user.endpoint.host) {
            return Err(fail(format!("it is for host {host:?}, the user secret for {:?}", user.endpoint.host)));
        }
        let endpoint = Endpoint { engine, host, port, dbname: user.endpoint.dbname.clone(), tls: master.tls };
        Ok((endpoint, master.credentials))
    }

    /// Single user: logs in with each candidate in turn and changes the user's own
    /// password; a refused login moves on, any other failure stops.
    ///
    /// Current is tried before pending: in a normal rotation the database has the current
    /// password, so this order costs one login instead of two and leaves no failed login
    /// in the database's logs (where failed logins raise alerts). A rerun after the
    /// password changed finds current refused and pending working: the same result.
    async fn set_single<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        pending: &DatabaseSecret,
        current: SecretString,
    ) -> Result<Outcome, RotationError> {
        if let Some(outcome) = self.try_candidates(ctx, pending, &[("AWSCURRENT".into(), current)]).await? {
            return Ok(outcome);
        }
        match self.backend.verify(&pending.endpoint, &pending.credentials).await {
            Ok(()) => return Ok(Outcome::AlreadyDone),
            Err(BackendError::LoginRefused { .. }) => {}
            Err(e) => return Err(Self::backend_error(ctx, "logging in with the pending password")(e)),
        }
        let previous: Vec<(String, SecretString)> =
            ctx.previous().await?.map(|p| ("AWSPREVIOUS".into(), p)).into_iter().collect();
        if let Some(outcome) = self.try_candidates(ctx, pending, &previous).await? {
            return Ok(outcome);
        }

        // Self-healing: an abandoned rotation may have left the database on a version that
        // no longer carries a label.
        let versions = ctx.store.list_versions(ctx.arn()).await.map_err(|e| ctx.store_error(e))?;
        let mut older = Vec::new();
        for id in decide::self_heal_candidates(ctx.meta, &versions) {
            if let Some(value) = ctx.read(Selector::Version(&id)).await? {
                older.push((format!("version {id}"), value));
            }
        }
        if let Some(outcome) = self.try_candidates(ctx, pending, &older).await? {
            return Ok(outcome);
        }
        Err(RotationError::NoWorkingCredentials {
            secret: ctx.arn().to_owned(),
            username: pending.credentials.username.to_string(),
            tried: format!("AWSCURRENT, AWSPENDING, AWSPREVIOUS and {} older versions", older.len()),
        })
    }

    async fn try_candidates<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        pending: &DatabaseSecret,
        candidates: &[(String, SecretString)],
    ) -> Result<Option<Outcome>, RotationError> {
        for (label, value) in candidates {
            let Ok(candidate) = DatabaseSecret::parse(value) else {
                warn!(secret_arn = %ctx.arn(), version = %label, "skipping a version that does not parse");
                continue;
            };
            if candidate.credentials.username != pending.credentials.username {
                continue;
            }
            let req = SetOwnPassword { login: &candidate.credentials, new_password: &pending.credentials.password };
            match self.backend.set_own_password(&pending.endpoint, req).await {
                Ok(()) => {
                    info!(secret_arn = %ctx.arn(), matched = %label, "password changed, logged in with this version");
                    return Ok(Some(Outcome::Done));
                }
                Err(BackendError::LoginRefused { .. }) => continue,
                Err(e) => return Err(Self::backend_error(ctx, "changing the password")(e)),
            }
        }
        Ok(None)
    }
}

impl<B: DatabaseBackend, R: RdsLookup> RotationTarget for DatabaseRotation<B, R> {
    fn strategy(&self) -> &'static str {
        self.strategy.as_str()
    }

    fn reads(&self, step: Step) -> Reads {
        let single = self.strategy == Strategy::SingleUser;
        match step {
            // A single user logs in with current, else pending; previous is rarely needed,
            // so it is read only then.
            Step::Set => Reads { current: single, pending: true, previous: false },
            Step::Test => Reads { pending: true, ..Reads::default() },
            Step::Create | Step::Finish => Reads::default(),
        }
    }

    async fn create<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        current: SecretString,
    ) -> Result<SecretString, RotationError> {
        let current = self.parse(ctx, &current, "AWSCURRENT")?;
        let username = match self.strategy {
            Strategy::SingleUser => current.credentials.username.clone(),
            Strategy::AlternatingUsers => alternate(&current.credentials.username),
        };
        let engine = current.endpoint.engine;
        self.backend.check_username(engine, &username).map_err(|problem| RotationError::InvalidUsername {
            secret: ctx.arn().to_owned(),
            username: username.to_string(),
            problem,
        })?;
        if self.strategy == Strategy::AlternatingUsers {
            // Fail on an unusable admin secret now, before a pending version exists.
            self.master(ctx, &current, "AWSCURRENT").await?;
        }
        Ok(current.with_credentials(&username, self.passwords.generate()).to_secret_string())
    }

    async fn set<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<Outcome, RotationError> {
        match self.strategy {
            Strategy::SingleUser => {
                let (pending, current) = tokio::try_join!(ctx.pending(), ctx.current())?;
                let pending = self.parse(ctx, &pending, "AWSPENDING")?;
                self.set_single(ctx, &pending, current).await
            }
            Strategy::AlternatingUsers => {
                let pending = self.parse(ctx, &ctx.pending().await?, "AWSPENDING")?;
                let (endpoint, admin) = self.master(ctx, &pending, "AWSPENDING").await?;
                let username = &pending.credentials.username;
                let req =
                    UpsertUser { username, template: &original(username), password: &pending.credentials.password };
                let outcome = self
                    .backend
                    .upsert_user(&endpoint, &admin, req)
                    .await
                    .map_err(Self::backend_error(ctx, "setting the pending user's password as admin"))?;
                info!(secret_arn = %ctx.arn(), user = %username, created = outcome.created, "pending user ready");
                Ok(Outcome::Done)
            }
        }
    }

    async fn test<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<(), RotationError> {
        let pending = self.parse(ctx, &ctx.pending().await?, "AWSPENDING")?;
        self.backend
            .verify(&pending.endpoint, &pending.credentials)
            .await
            .map_err(Self::backend_error(ctx, "logging in with the pending credentials"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn users_alternate_between_original_and_clone() {
        assert_eq!(alternate(&user("app")), user("app_clone"));
        assert_eq!(alternate(&user("app_clone")), user("app"));
        assert_eq!(alternate(&user("_clone")), user("_clone_clone"));
        assert_eq!(original(&user("app_clone")), user("app"));
        assert_eq!(original(&user("app")), user("app"));
        assert_eq!(alternate(&user("o'brien \"x\"")), user("o'brien \"x\"_clone"));
    }
}
