//! Database rotation on top of [`DatabaseBackend`]: the single-user and alternating-users
//! strategies of AWS's templates, with no engine-specific code.
//!
//! Single user: the user changes its own password, logging in with current (done already
//! if pending works instead), previous and then, if none works (a rotation abandoned after
//! setSecret), every other version the secret still has. Alternating users: the database
//! admin, logging in with the admin secret the user secret names (`masterarn`), sets the
//! password of `<user>` or `<user>_clone`, whichever is not current, creating the clone
//! like the original; the previous user stays valid until the next rotation.
//!
//! The secret's content is untrusted: whoever may write its value may name any user, host
//! or admin secret. So a version's password is only ever sent to that version's own
//! endpoint, and the admin acts only for a secret whose own login is proven: AWSCURRENT
//! must log in, the pending user must be AWSCURRENT's alternate on the same endpoint, it
//! must not be the admin itself, and an existing pending user has its password reset only
//! when one of the secret's versions logs in as it (otherwise it may only be created).

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

/// Where an RDS-managed admin secret's database is: what `DescribeDBInstances` or
/// `DescribeDBClusters` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdsEndpoint {
    pub host: String,
    pub port: u16,
    pub engine: String,
    /// The ARN of the secret RDS manages for the master user (`MasterUserSecret`), if any.
    pub master_user_secret: Option<String>,
}

/// Looks up RDS instances and clusters (production: [`crate::aws::rds::RdsClient`]).
pub trait RdsLookup: Send + Sync {
    fn instance(&self, arn: &str) -> impl Future<Output = Result<RdsEndpoint, String>> + Send;
    fn cluster(&self, arn: &str) -> impl Future<Output = Result<RdsEndpoint, String>> + Send;
}

/// Tag RDS puts on the admin secrets (of RDS's master user) it manages for an instance.
pub const RDS_INSTANCE_TAG: &str = "aws:rds:primaryDBInstanceArn";
/// Tag RDS puts on the admin secrets it manages for a cluster.
pub const RDS_CLUSTER_TAG: &str = "aws:rds:primaryDBClusterArn";

/// Where the database of an admin secret that names no host is, asked of RDS: the one
/// lookup rotation (`masterarn`) and the lease functions (a role's `admin_secret`) share.
/// Such a secret must be one RDS manages for an instance's or a cluster's master user:
/// its `aws:rds:primaryDB*Arn` tag names the instance or cluster, and that instance or
/// cluster must name this very secret as its `MasterUserSecret`. A tag alone proves
/// nothing where tags can be written by hand (AWS reserves `aws:` keys, an emulator may
/// not), and the check costs no call: the answer that gives the endpoint gives the secret.
/// The host, port and engine are RDS's, never the secret's. The error says what failed,
/// for a message that names the secret.
pub async fn rds_managed_endpoint<S: SecretStore, R: RdsLookup>(
    store: &S,
    rds: &R,
    admin_arn: &str,
) -> Result<(String, u16, Engine), String> {
    let meta = store.describe(admin_arn).await.map_err(|e| e.to_string())?;
    let (found, what) = if let Some(arn) = meta.tags.get(RDS_INSTANCE_TAG) {
        (rds.instance(arn).await.map_err(|e| format!("DescribeDBInstances {arn}: {e}"))?, format!("DB instance {arn}"))
    } else if let Some(arn) = meta.tags.get(RDS_CLUSTER_TAG) {
        (rds.cluster(arn).await.map_err(|e| format!("DescribeDBClusters {arn}: {e}"))?, format!("DB cluster {arn}"))
    } else {
        return Err(format!(
            "missing key \"host\", and no {RDS_INSTANCE_TAG} or {RDS_CLUSTER_TAG} tag to look it up in RDS \
             (an admin secret without a host must be the one RDS manages for a master user)"
        ));
    };
    match found.master_user_secret.as_deref() {
        Some(managed) if managed == meta.arn => {}
        Some(other) => {
            return Err(format!("its tag names {what}, whose master user secret is another one ({other}): refused"));
        }
        None => {
            return Err(format!(
                "its tag names {what}, which has no RDS-managed master user secret (ManageMasterUserPassword): refused"
            ));
        }
    }
    let engine = Engine::parse(&found.engine)
        .ok_or_else(|| format!("RDS reports engine {:?} for {what}, which keyturn does not support", found.engine))?;
    Ok((found.host, found.port, engine))
}

/// Which admin secrets a user secret may name (`masterarn`): any (the default), or those
/// matching one of a list of ARNs, each exact or ending in `*` for a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSecrets(Option<Vec<String>>);

impl AdminSecrets {
    /// Any admin secret the function can read.
    pub fn any() -> Self {
        Self(None)
    }

    /// Only these ARNs (exact, or a prefix ending in `*`).
    pub fn only(patterns: Vec<String>) -> Self {
        Self(Some(patterns))
    }

    /// Whether the admin secret `admin_arn` may be used; the error says why not.
    pub fn check(&self, admin_arn: &str) -> Result<(), String> {
        let Some(patterns) = &self.0 else { return Ok(()) };
        let allowed = patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => admin_arn.starts_with(prefix),
            None => admin_arn == p,
        });
        match allowed {
            true => Ok(()),
            false => Err("it is not one of the admin secrets this function may use (KEYTURN_ADMIN_SECRET_ARNS)".into()),
        }
    }
}

/// The unlabelled versions [`DatabaseRotation::older_versions`] found.
#[derive(Default)]
struct Older {
    /// Label ("version <id>") and value, newest first.
    values: Vec<(String, SecretString)>,
    /// Listed versions that had no value when read (removed since the listing, or never given one).
    without_value: usize,
}

/// Database rotation: a backend, RDS lookups for managed admin secrets, the strategy,
/// the password policy and the admin secrets allowed. Built once per container.
pub struct DatabaseRotation<B, R> {
    backend: B,
    rds: R,
    strategy: Strategy,
    passwords: PasswordPolicy,
    admin_secrets: AdminSecrets,
}

/// Why the alternating-users strategy will not act as admin for a pending version. Pure:
/// the current and pending secrets and the admin's username.
pub fn check_alternating(
    current: &DatabaseSecret,
    pending: &DatabaseSecret,
    admin: Option<&Username>,
) -> Result<(), String> {
    let (user, expected) = (&pending.credentials.username, alternate(&current.credentials.username));
    if *user != expected {
        return Err(format!(
            "the pending user {user:?} is not the alternate of the current user {:?} (expected {expected:?})",
            current.credentials.username.as_str()
        ));
    }
    let (a, b) = (&current.endpoint, &pending.endpoint);
    for (what, same) in [
        ("engine", a.engine == b.engine),
        ("host", a.host.eq_ignore_ascii_case(&b.host)),
        ("port", a.port == b.port),
        ("dbname", a.dbname == b.dbname),
        ("ssl", a.tls == b.tls),
    ] {
        if !same {
            return Err(format!("AWSCURRENT and AWSPENDING differ in {what}"));
        }
    }
    // The clone's template must be one of the pair: `v_clone_clone` would otherwise make
    // `v_clone` a copy of `v`, whose login nobody proved.
    let template = original(user);
    if template != current.credentials.username && template != *user {
        return Err(format!(
            "the pending user {user:?} would be a copy of {:?}, which is neither of the pair",
            template.as_str()
        ));
    }
    if let Some(admin) = admin {
        for (role, name) in [("pending user", user), ("original user", &template)] {
            if name == admin {
                return Err(format!("the {role} {:?} is the admin secret's own user", name.as_str()));
            }
        }
    }
    Ok(())
}

impl<B: DatabaseBackend, R: RdsLookup> DatabaseRotation<B, R> {
    pub fn new(backend: B, rds: R, strategy: Strategy, passwords: PasswordPolicy) -> Self {
        Self { backend, rds, strategy, passwords, admin_secrets: AdminSecrets::any() }
    }

    /// Limits the admin secrets a user secret may name.
    pub fn with_admin_secrets(mut self, admin_secrets: AdminSecrets) -> Self {
        self.admin_secrets = admin_secrets;
        self
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
    async fn read_admin_secret<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        user: &DatabaseSecret,
        what: &str,
    ) -> Result<(Endpoint, Credentials), RotationError> {
        let admin_arn = user.admin_arn.as_deref().ok_or_else(|| RotationError::InvalidSecret {
            secret: ctx.arn().to_owned(),
            what: what.into(),
            problem: "missing key \"masterarn\" (required by the alternating-users strategy)".into(),
        })?;
        let fail = |problem: String| RotationError::AdminSecret {
            secret: ctx.arn().to_owned(),
            admin: admin_arn.to_owned(),
            problem,
        };
        self.admin_secrets.check(admin_arn).map_err(fail)?;
        let value = ctx.store.get(admin_arn, Selector::Stage(AWSCURRENT)).await.map_err(|e| fail(e.to_string()))?;
        let admin = DatabaseSecret::parse_admin(&value.ok_or_else(|| fail("it has no AWSCURRENT value".into()))?)
            .map_err(fail)?;

        // An admin secret that names its host is used as it is (one call saved); one that
        // does not must be RDS-managed, and its tags say which instance or cluster to ask.
        let (host, port, engine) = match admin.host.clone() {
            Some(host) => {
                let engine = admin.engine.unwrap_or(user.endpoint.engine);
                (host, admin.port.unwrap_or(engine.default_port()), engine)
            }
            None => rds_managed_endpoint(ctx.store, &self.rds, admin_arn).await.map_err(fail)?,
        };
        if engine.family() != user.endpoint.engine.family() {
            return Err(fail(format!(
                "engine {} does not match the user's {}",
                engine.as_str(),
                user.endpoint.engine.as_str()
            )));
        }
        // The admin acts on the server where the secret's own login is proven: same host and
        // port (another port of the host may be a server anyone there can run).
        if !host.eq_ignore_ascii_case(&user.endpoint.host) || port != user.endpoint.port {
            return Err(fail(format!(
                "it is for {host}:{port}, the user secret for {}:{}",
                user.endpoint.host, user.endpoint.port
            )));
        }
        // The admin's own database, never the user's: a database its writer owns may
        // carry settings (search_path) that change what the admin's queries read.
        let dbname = admin.dbname.or_else(|| engine.default_dbname().map(str::to_owned));
        let endpoint = Endpoint { engine, host, port, dbname, tls: admin.tls };
        Ok((endpoint, admin.credentials))
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
        if self.logs_in(ctx, pending, "logging in with the pending password").await? {
            return Ok(Outcome::AlreadyDone);
        }
        let previous: Vec<(String, SecretString)> =
            ctx.previous().await?.map(|p| ("AWSPREVIOUS".into(), p)).into_iter().collect();
        if let Some(outcome) = self.try_candidates(ctx, pending, &previous).await? {
            return Ok(outcome);
        }

        // Self-healing: an abandoned rotation may have left the database on a version that
        // no longer carries a label.
        let older = self.older_versions(ctx).await?;
        if let Some(outcome) = self.try_candidates(ctx, pending, &older.values).await? {
            return Ok(outcome);
        }
        let mut tried = format!("AWSCURRENT, AWSPENDING, AWSPREVIOUS and {} older versions", older.values.len());
        if older.without_value > 0 {
            tried.push_str(&format!("; {} more listed had no value or were removed meanwhile", older.without_value));
        }
        // Secrets Manager removes unlabelled versions once a secret has more than about 100:
        // the one an abandoned rotation left the database on may be gone.
        tried.push_str(
            "; the database may hold the password of a version Secrets Manager has removed: set the user's \
             password to AWSCURRENT's by hand",
        );
        Err(RotationError::NoWorkingCredentials {
            secret: ctx.arn().to_owned(),
            username: pending.credentials.username.to_string(),
            tried,
        })
    }

    fn refused<S: SecretStore>(&self, ctx: &StepContext<'_, S>, problem: String) -> RotationError {
        RotationError::Refused { secret: ctx.arn().to_owned(), problem }
    }

    /// Whether `secret`'s credentials log in on its endpoint; a failure other than a
    /// refused login is the error `action` names.
    async fn logs_in<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        secret: &DatabaseSecret,
        action: &'static str,
    ) -> Result<bool, RotationError> {
        match self.backend.verify(&secret.endpoint, &secret.credentials).await {
            Ok(()) => Ok(true),
            Err(BackendError::LoginRefused { .. }) => Ok(false),
            Err(e) => Err(Self::backend_error(ctx, action)(e)),
        }
    }

    /// Every version the secret still has besides its labelled ones, newest first: where
    /// an abandoned rotation may have left the database. Secrets Manager removes unlabelled
    /// versions of a secret with more than about 100, also between the listing and the
    /// read: such a version is skipped and counted, like one without a value.
    async fn older_versions<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<Older, RotationError> {
        let versions = ctx.store.list_versions(ctx.arn()).await.map_err(|e| ctx.store_error(e))?;
        let mut older = Older::default();
        for id in decide::self_heal_candidates(ctx.meta, &versions) {
            match ctx.read(Selector::Version(&id)).await? {
                Some(value) => older.values.push((format!("version {id}"), value)),
                None => {
                    warn!(secret_arn = %ctx.arn(), version = %id, "skipping a listed version without a value (removed?)");
                    older.without_value += 1;
                }
            }
        }
        Ok(older)
    }

    /// Alternating users, as admin, only for a secret whose own login is proven (see the
    /// module docs). Logins run concurrently with the admin secret's lookup.
    async fn set_alternating<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<Outcome, RotationError> {
        let (pending, current) = tokio::try_join!(ctx.pending(), ctx.current())?;
        let pending = self.parse(ctx, &pending, "AWSPENDING")?;
        let current = self.parse(ctx, &current, "AWSCURRENT")?;
        check_alternating(&current, &pending, None).map_err(|problem| self.refused(ctx, problem))?;
        // A pending version may have been written by hand: its names get createSecret's checks.
        for name in [&current.credentials.username, &pending.credentials.username] {
            self.backend.check_username(pending.endpoint.engine, name).map_err(|problem| {
                RotationError::InvalidUsername { secret: ctx.arn().to_owned(), username: name.to_string(), problem }
            })?;
        }

        let prove_current = async {
            match self.logs_in(ctx, &current, "logging in with AWSCURRENT").await? {
                true => Ok(()),
                false => Err(self.refused(
                    ctx,
                    format!(
                        "AWSCURRENT does not log in as {:?}; keyturn acts as admin only for a secret whose own login works",
                        current.credentials.username.as_str()
                    ),
                )),
            }
        };
        let prove_previous = async {
            let Some(previous) = ctx.previous().await? else { return Ok(false) };
            self.logs_in_as_pending(ctx, &pending, &previous, "logging in with AWSPREVIOUS").await
        };
        let ((endpoint, admin), (), previous_works) =
            tokio::try_join!(self.read_admin_secret(ctx, &pending, "AWSPENDING"), prove_current, prove_previous)?;
        check_alternating(&current, &pending, Some(&admin.username)).map_err(|problem| self.refused(ctx, problem))?;

        let username = &pending.credentials.username;
        let template = original(username);
        let upsert = |create_only: bool| UpsertUser {
            username,
            template: &template,
            password: &pending.credentials.password,
            create_only,
        };
        let set_error = Self::backend_error(ctx, "setting the pending user's password as admin");
        let outcome = match self.backend.upsert_user(&endpoint, &admin, upsert(!previous_works)).await {
            Err(BackendError::UserExists { .. }) => {
                // The user exists and AWSPREVIOUS did not log in as it: a rerun finds the
                // pending password already set; an abandoned rotation left it on an older version.
                if !self.proves_pending_user(ctx, &pending).await? {
                    return Err(self.refused(
                        ctx,
                        format!(
                            "user {:?} exists and none of the secret's versions logs in as it; keyturn does not take \
                             over an existing user this secret has not proven it owns",
                            username.as_str()
                        ),
                    ));
                }
                self.backend.upsert_user(&endpoint, &admin, upsert(false)).await.map_err(set_error)?
            }
            other => other.map_err(set_error)?,
        };
        info!(secret_arn = %ctx.arn(), user = %username, created = outcome.created, "pending user ready");
        Ok(Outcome::Done)
    }

    /// Whether `value` (a version of the secret) logs in as the pending user, on the
    /// pending endpoint. A version for another user or endpoint proves nothing and is not sent.
    async fn logs_in_as_pending<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        pending: &DatabaseSecret,
        value: &SecretString,
        action: &'static str,
    ) -> Result<bool, RotationError> {
        let Ok(candidate) = DatabaseSecret::parse(value) else { return Ok(false) };
        if candidate.credentials.username != pending.credentials.username || candidate.endpoint != pending.endpoint {
            return Ok(false);
        }
        self.logs_in(ctx, &candidate, action).await
    }

    /// Whether AWSPENDING, or any version older than AWSPREVIOUS, logs in as the pending user.
    async fn proves_pending_user<S: SecretStore>(
        &self,
        ctx: &StepContext<'_, S>,
        pending: &DatabaseSecret,
    ) -> Result<bool, RotationError> {
        if self.logs_in(ctx, pending, "logging in with AWSPENDING").await? {
            return Ok(true);
        }
        for (_, value) in self.older_versions(ctx).await?.values {
            if self.logs_in_as_pending(ctx, pending, &value, "logging in with an older version").await? {
                return Ok(true);
            }
        }
        Ok(false)
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
            // A version's password goes only to that version's own endpoint: a writer who
            // points AWSCURRENT at a server of theirs must not receive the older passwords.
            if candidate.endpoint != pending.endpoint {
                warn!(secret_arn = %ctx.arn(), version = %label, "skipping a version for another endpoint");
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
            // Both strategies log in with current first. A single user rarely needs previous,
            // so it is read only then; alternating users prove the pending user with it.
            Step::Set => Reads { current: true, pending: true, previous: !single },
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
        let next = current.with_credentials(&username, self.passwords.generate());
        if self.strategy == Strategy::AlternatingUsers {
            // Fail on an unusable admin secret now, before a pending version exists.
            let (_, admin) = self.read_admin_secret(ctx, &current, "AWSCURRENT").await?;
            check_alternating(&current, &next, Some(&admin.username)).map_err(|problem| self.refused(ctx, problem))?;
        }
        Ok(next.to_secret_string())
    }

    async fn set<S: SecretStore>(&self, ctx: &StepContext<'_, S>) -> Result<Outcome, RotationError> {
        match self.strategy {
            Strategy::SingleUser => {
                let (pending, current) = tokio::try_join!(ctx.pending(), ctx.current())?;
                let pending = self.parse(ctx, &pending, "AWSPENDING")?;
                self.set_single(ctx, &pending, current).await
            }
            Strategy::AlternatingUsers => self.set_alternating(ctx).await,
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

    fn secret(json: &str) -> DatabaseSecret {
        DatabaseSecret::parse(&SecretString::from(json.to_owned())).unwrap()
    }

    #[test]
    fn the_admin_acts_only_for_the_alternate_on_the_same_endpoint() {
        let current = secret(r#"{"engine":"postgres","host":"db","username":"app","password":"a"}"#);
        let ok = secret(r#"{"engine":"postgres","host":"DB","username":"app_clone","password":"b"}"#);
        assert_eq!(check_alternating(&current, &ok, Some(&user("admin"))), Ok(()));
        for (pending, expected) in [
            (r#"{"engine":"postgres","host":"db","username":"admin","password":"b"}"#, "not the alternate"),
            (r#"{"engine":"postgres","host":"evil","username":"app_clone","password":"b"}"#, "differ in host"),
            (
                r#"{"engine":"postgres","host":"db","port":5433,"username":"app_clone","password":"b"}"#,
                "differ in port",
            ),
            (
                r#"{"engine":"postgres","host":"db","dbname":"x","username":"app_clone","password":"b"}"#,
                "differ in dbname",
            ),
            (r#"{"engine":"postgres","host":"db","ssl":false,"username":"app_clone","password":"b"}"#, "differ in ssl"),
            (r#"{"engine":"aurora-postgresql","host":"db","username":"app_clone","password":"b"}"#, "differ in engine"),
        ] {
            let err = check_alternating(&current, &secret(pending), None).unwrap_err();
            assert!(err.contains(expected), "{pending}: {err}");
        }
        // The admin's own user, as the pending user or as the template of a clone.
        let admin_clone = secret(r#"{"engine":"postgres","host":"db","username":"admin_clone","password":"a"}"#);
        let admin = secret(r#"{"engine":"postgres","host":"db","username":"admin","password":"b"}"#);
        let err = check_alternating(&admin_clone, &admin, Some(&user("admin"))).unwrap_err();
        assert!(err.contains("pending user \"admin\" is the admin"), "{err}");
        let err = check_alternating(&admin, &admin_clone, Some(&user("admin"))).unwrap_err();
        assert!(err.contains("original user \"admin\" is the admin"), "{err}");
        // A chain of clones names a template outside the pair.
        let chain = secret(r#"{"engine":"postgres","host":"db","username":"ops_clone_clone","password":"a"}"#);
        let next = secret(r#"{"engine":"postgres","host":"db","username":"ops_clone","password":"b"}"#);
        let err = check_alternating(&chain, &next, None).unwrap_err();
        assert!(err.contains("copy of \"ops\", which is neither of the pair"), "{err}");
    }

    #[test]
    fn admin_secrets_can_be_pinned() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:prod/admin-AbC";
        assert!(AdminSecrets::any().check(arn).is_ok());
        let pinned = AdminSecrets::only(vec!["arn:aws:secretsmanager:us-east-1:1:secret:prod/admin-*".into()]);
        assert!(pinned.check(arn).is_ok());
        assert!(pinned.check("arn:aws:secretsmanager:us-east-1:1:secret:other").is_err());
        assert!(pinned.check("prod/admin").is_err(), "a bare name is not the ARN");
        assert!(AdminSecrets::only(vec![arn.into()]).check(arn).is_ok());
    }
}
