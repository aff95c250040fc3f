//! One lease deployment per test: an admin secret, a group with a table, a roles file with
//! role `ci` (default 15m, max 1h) for sessions of the `ci-runner` role, a username prefix
//! and a lease table of its own, and the service the functions build from it. Requests go
//! through the handler as API Gateway 2.0 events.

use keyturn::app::lease::Issuer;
use keyturn::lease::api::{self, ApiRequest};
use serde_json::Value;

use crate::{apigw, random_token, TestEnv};

/// A session of the role that role `ci` allows.
pub const CI: &str = "arn:aws:sts::123456789012:assumed-role/ci-runner/job-1";
/// A caller no role allows.
pub const STRANGER: &str = "arn:aws:sts::123456789012:assumed-role/web-frontend/i-0abc";
/// An admin principal (may renew and revoke any lease, request none).
pub const OPS: &str = "arn:aws:sts::123456789012:assumed-role/keyturn-admin/alice";

/// The harness administrator moto authenticates the issuer as (tests/moto_auth.py), on
/// [`TestEnv::authenticated`].
pub const ISSUER_ARN: &str = "arn:aws:iam::123456789012:user/keyturn-test-admin";

/// A role (named `name`, made unique) that the issuer may assume with external id
/// `ext-42`, allowed `iam:ListUsers`: what an `aws-sts` role of the roles file names in
/// `role_arn`. Its name.
pub async fn assumable_role(env: &TestEnv, name: &str) -> String {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let role = env.unique(name);
    // moto compares Principal.AWS as a plain string (shared/notes/moto.md).
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": ISSUER_ARN}, "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"sts:ExternalId": "ext-42"}}
    }]});
    iam.create_role().role_name(&role).assume_role_policy_document(trust.to_string()).send().await.expect("CreateRole");
    iam.put_role_policy()
        .role_name(&role)
        .policy_name("work")
        .policy_document(crate::allow_policy(&["iam:ListUsers"]))
        .send()
        .await
        .expect("PutRolePolicy");
    role
}

/// One test's deployment.
pub struct Deployment {
    pub env: TestEnv,
    /// The functions' environment.
    pub vars: Vec<(String, String)>,
    pub service: Issuer,
    pub group: String,
    pub table: String,
    pub prefix: String,
}

/// Which database the deployment's role creates users in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mariadb,
}

/// A deployment on the harness PostgreSQL or MariaDB; `extra` is added to role `ci`
/// (e.g. `max_leases = 1`).
pub async fn deploy(test: &str, engine: Engine, extra: &str) -> Deployment {
    deploy_in(TestEnv::new(test).await, engine, extra).await
}

/// [`deploy`] in `env` (e.g. one on the MariaDB whose event scheduler is ON).
pub async fn deploy_in(env: TestEnv, engine: Engine, extra: &str) -> Deployment {
    let (admin, (group, table)) = match engine {
        Engine::Postgres => {
            (env.create_secret("admin", &env.admin_secret()).await, env.pg_group_with_table("grp").await)
        }
        Engine::Mariadb => {
            (env.create_secret("admin", &env.mariadb_admin_secret()).await, env.mariadb_group_with_table("grp").await)
        }
    };
    deploy_with_admin(env, &admin, group, table, extra).await
}

/// A deployment whose role `ci` acts as the admin of the secret `admin` (its ARN) and gives
/// its users `group`, which may read `table`.
pub async fn deploy_with_admin(env: TestEnv, admin: &str, group: String, table: String, extra: &str) -> Deployment {
    let prefix = format!("t{}_", &random_token()[..6]);
    let roles = format!(
        r#"admin_principals = ["arn:aws:iam::123456789012:role/keyturn-admin"]
username_prefix = "{prefix}"

[[role]]
name = "ci"
kind = "database"
admin_secret = "{admin}"
groups = ["{group}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
{extra}
"#
    );
    let vars = env.lease_env(&roles).await;
    let service = env.lease_service(&vars, 0);
    Deployment { env, vars, service, group, table, prefix }
}

/// One request through the handler: its status and JSON body (Null for none).
pub async fn call(service: &Issuer, method: &str, path: &str, body: Option<&str>, caller: &str) -> (u16, Value) {
    let request = ApiRequest::from_event(apigw::request(method, path, body, caller)).expect("a valid event");
    apigw::response(&api::handle(service, &request).await.into_event())
}

/// Issues credentials of role `ci` to [`CI`] for `ttl` seconds: (username, password, lease id).
pub async fn issue_ci(service: &Issuer, ttl: u64) -> (String, String, String) {
    let body = format!(r#"{{"ttl_seconds": {ttl}}}"#);
    let (status, answer) = call(service, "POST", "/v1/credentials/ci", Some(&body), CI).await;
    assert_eq!(status, 201, "{answer}");
    let text = |k: &str| answer[k].as_str().unwrap_or_else(|| panic!("{k} in {answer}")).to_owned();
    (text("username"), text("password"), text("lease_id"))
}

/// A reaper run's limits as the tests use them: 100 leases, 4 at once, a minute.
pub fn reap_limits() -> keyturn::lease::service::ReapLimits {
    keyturn::lease::service::ReapLimits {
        batch: 100,
        concurrency: 4,
        deadline: std::time::Instant::now() + std::time::Duration::from_secs(60),
    }
}
