//! Fakes of everything the lease service does I/O with, for the unit tests of the service
//! and of the API: the table (the in-memory store), the database, IAM/STS/RDS and Secrets
//! Manager, each recording what it was asked and failing on demand, and a clock the test
//! moves. The real ones are exercised in tests/.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use secrecy::{ExposeSecret, SecretString};

use super::ports::{Clock, Ports};
use super::role::Roles;
use super::service::LeaseService;
use super::store::memory::MemoryStore;
use crate::backend::aws::{
    self as aws, AssumeRole, AwsCredentials, AwsError, AwsKeys, DeleteIamUser, ListIamUsers, NewIamUser, RdsToken,
    UpdateIamUser,
};
use crate::backend::{
    BackendError, Credentials, DeleteOutcome, DeleteUser, DynamicUsers, Endpoint, ListUsers, NewUser, NewUserOutcome,
    UpdateUser, Username,
};
use crate::password::PasswordPolicy;
use crate::rotation::store::{
    SecretMetadata, SecretStore, Selector, StageMove, StoreError as SecretsError, VersionInfo,
};

pub(crate) const ADMIN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin";
pub(crate) const CI: &str = "arn:aws:sts::123456789012:assumed-role/ci-runner/job-1";
pub(crate) const OTHER_CI: &str = "arn:aws:sts::123456789012:assumed-role/ci-runner/job-2";
pub(crate) const STRANGER: &str = "arn:aws:sts::123456789012:assumed-role/web/x";
pub(crate) const OPS: &str = "arn:aws:sts::123456789012:assumed-role/keyturn-admin/alice";

pub(crate) struct Clock0(pub(crate) AtomicU64);
impl Clock for Clock0 {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The database: users by name, the admin password it accepts, and failures to inject.
#[derive(Default)]
pub(crate) struct Db {
    pub(crate) users: Mutex<BTreeMap<String, u64>>,
    pub(crate) admin_password: Mutex<String>,
    pub(crate) fail_deletes: Mutex<bool>,
    pub(crate) fail_creates: Mutex<bool>,
}

impl Db {
    fn check(&self, admin: &Credentials) -> Result<(), BackendError> {
        if admin.password.expose_secret() == self.admin_password.lock().unwrap().as_str() {
            Ok(())
        } else {
            Err(BackendError::LoginRefused { username: admin.username.to_string() })
        }
    }
    fn unreachable() -> BackendError {
        BackendError::Unreachable { host: "db".into(), port: 5432, message: "down".into() }
    }
    pub(crate) fn has(&self, user: &str) -> bool {
        self.users.lock().unwrap().contains_key(user)
    }
}

impl DynamicUsers for Db {
    async fn new_user(&self, _: &Endpoint, admin: &Credentials, req: NewUser) -> Result<NewUserOutcome, BackendError> {
        self.check(admin)?;
        if *self.fail_creates.lock().unwrap() {
            return Err(Self::unreachable());
        }
        let at = req.expires_at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        self.users.lock().unwrap().insert(req.username.to_string(), at);
        Ok(NewUserOutcome { server_expiry: true })
    }
    async fn update_user(&self, _: &Endpoint, admin: &Credentials, req: UpdateUser) -> Result<(), BackendError> {
        self.check(admin)?;
        match self.users.lock().unwrap().get_mut(req.username.as_str()) {
            Some(at) => {
                *at = req.expires_at.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
                Ok(())
            }
            None => Err(BackendError::NoSuchUser { username: req.username.to_string() }),
        }
    }
    async fn delete_user(
        &self,
        _: &Endpoint,
        admin: &Credentials,
        req: DeleteUser,
    ) -> Result<DeleteOutcome, BackendError> {
        self.check(admin)?;
        if *self.fail_deletes.lock().unwrap() {
            return Err(Self::unreachable());
        }
        let existed = self.users.lock().unwrap().remove(req.username.as_str()).is_some();
        Ok(DeleteOutcome { existed, sessions_ended: 0 })
    }
    async fn list_users(
        &self,
        _: &Endpoint,
        admin: &Credentials,
        req: ListUsers,
    ) -> Result<Vec<Username>, BackendError> {
        self.check(admin)?;
        let users = self.users.lock().unwrap();
        Ok(users.keys().filter(|u| u.starts_with(&req.prefix)).map(|u| Username::parse(u).unwrap()).collect())
    }
}

/// Secrets Manager holding the admin secret; counts reads.
#[derive(Default)]
pub(crate) struct Secrets {
    pub(crate) values: Mutex<HashMap<String, String>>,
    pub(crate) reads: AtomicUsize,
}

impl SecretStore for Secrets {
    async fn describe(&self, _: &str) -> Result<SecretMetadata, SecretsError> {
        unreachable!("the lease service never describes secrets")
    }
    async fn get(&self, id: &str, _: Selector<'_>) -> Result<Option<SecretString>, SecretsError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.values.lock().unwrap().get(id).map(|v| SecretString::from(v.clone())))
    }
    async fn put_pending(&self, _: &str, _: &str, _: &SecretString, _: Option<&str>) -> Result<(), SecretsError> {
        unreachable!()
    }
    async fn move_stage(&self, _: &str, _: &StageMove) -> Result<(), SecretsError> {
        unreachable!()
    }
    async fn list_versions(&self, _: &str) -> Result<Vec<VersionInfo>, SecretsError> {
        unreachable!()
    }
}

/// IAM, STS and the RDS signer: users by name with their expiry, what was asked, and
/// failures to inject.
#[derive(Default)]
pub(crate) struct Aws {
    pub(crate) users: Mutex<BTreeMap<String, u64>>,
    pub(crate) assumed: Mutex<Vec<AssumeRole>>,
    /// new_iam_user creates the user, then fails (as a policy attachment could).
    pub(crate) fail_after_create: Mutex<bool>,
    pub(crate) fail_assume: Mutex<bool>,
    pub(crate) calls: AtomicUsize,
}

impl Aws {
    fn refused(operation: &'static str) -> AwsError {
        AwsError { operation, message: "AccessDenied".into(), not_found: false, retryable: false }
    }
    pub(crate) fn has(&self, user: &str) -> bool {
        self.users.lock().unwrap().contains_key(user)
    }
}

impl AwsCredentials for Aws {
    async fn assume_role(&self, req: AssumeRole) -> Result<AwsKeys, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if *self.fail_assume.lock().unwrap() {
            return Err(Self::refused("AssumeRole"));
        }
        self.assumed.lock().unwrap().push(req);
        Ok(AwsKeys {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: "s".to_owned().into(),
            session_token: Some("t".to_owned().into()),
            expiration: Some(1),
        })
    }
    async fn new_iam_user(&self, req: NewIamUser) -> Result<AwsKeys, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let at = req.expires_at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        self.users.lock().unwrap().insert(req.user_name, at);
        if *self.fail_after_create.lock().unwrap() {
            return Err(Self::refused("AttachUserPolicy"));
        }
        Ok(AwsKeys {
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "s".to_owned().into(),
            session_token: None,
            expiration: None,
        })
    }
    async fn update_iam_user(&self, req: UpdateIamUser) -> Result<(), AwsError> {
        match self.users.lock().unwrap().get_mut(&req.user_name) {
            Some(at) => {
                *at = req.expires_at.duration_since(UNIX_EPOCH).unwrap().as_secs();
                Ok(())
            }
            None => Err(AwsError { not_found: true, ..Self::refused("PutUserPolicy") }),
        }
    }
    async fn delete_iam_user(&self, req: DeleteIamUser) -> Result<aws::IamUserDeleted, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(aws::IamUserDeleted { existed: self.users.lock().unwrap().remove(&req.user_name).is_some() })
    }
    async fn list_iam_users(&self, req: ListIamUsers) -> Result<Vec<String>, AwsError> {
        assert_eq!(req.path, "/keyturn-leases/");
        Ok(self.users.lock().unwrap().keys().filter(|u| u.starts_with(&req.prefix)).cloned().collect())
    }
    async fn rds_token(&self, req: RdsToken) -> Result<SecretString, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{}:{}/?Action=connect&DBUser={}", req.host, req.port, req.db_user).into())
    }
}

/// RDS for the unit tests, which have no RDS-managed admin secret: every lookup fails
/// (the integration tests look them up in moto's RDS).
pub(crate) struct NoRds;

impl crate::rotation::database::RdsLookup for NoRds {
    async fn instance(&self, arn: &str) -> Result<crate::rotation::database::RdsEndpoint, String> {
        Err(format!("no DB instance {arn} in the fakes"))
    }
    async fn cluster(&self, arn: &str) -> Result<crate::rotation::database::RdsEndpoint, String> {
        Err(format!("no DB cluster {arn} in the fakes"))
    }
}

/// The fakes, as the service's ports.
pub(crate) struct Fakes;

impl Ports for Fakes {
    type Store = MemoryStore;
    type Users = Db;
    type Aws = Aws;
    type Secrets = Secrets;
    type Rds = NoRds;
    type Clock = Clock0;
}

pub(crate) type Service = LeaseService<Fakes>;

/// The AWS roles of [`service`]: one of each kind, for the same callers.
pub(crate) const AWS_ROLES: &str = r#"
[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/deploy"
external_id = "ext-1"
session_policy = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}'
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
max_leases = 1

[[role]]
name = "legacy"
kind = "aws-iam-user"
permissions_boundary = "arn:aws:iam::123456789012:policy/keyturn-boundary"
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
default_ttl = "1h"
max_ttl = "4h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "pg-iam"
kind = "rds-iam-token"
engine = "postgres"
host = "db.cluster-x.us-east-1.rds.amazonaws.com"
port = 5432
region = "us-east-1"
db_user = "app_iam"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#;

pub(crate) fn admin_secret(password: &str) -> String {
    serde_json::json!({"engine": "postgres", "host": "db", "username": "admin", "password": password}).to_string()
}

pub(crate) fn service(max_leases: Option<u32>) -> Service {
    let cap = max_leases.map(|n| format!("max_leases = {n}")).unwrap_or_default();
    let roles = Roles::from_toml(&format!(
        r#"admin_principals = ["arn:aws:iam::123456789012:role/keyturn-admin"]
[[role]]
name = "ci"
kind = "database"
admin_secret = "{ADMIN}"
groups = ["app_read"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
{cap}
{AWS_ROLES}"#
    ))
    .unwrap();
    let db = Db::default();
    *db.admin_password.lock().unwrap() = "p1".into();
    let secrets = Secrets::default();
    secrets.values.lock().unwrap().insert(ADMIN.into(), admin_secret("p1"));
    LeaseService::new(
        roles,
        MemoryStore::default(),
        db,
        Aws::default(),
        crate::lease::admin::Admins::new(secrets, NoRds),
        Clock0(AtomicU64::new(1_000_000)),
        PasswordPolicy::default(),
    )
}

pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}
