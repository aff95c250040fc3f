//! AWS credentials as leases (STS sessions, IAM users, RDS IAM tokens) through the
//! issuer's API, against moto with IAM authentication on: the keys handed out really sign
//! requests, a revoked IAM user's key is really refused, a half-created user is cleaned up
//! by revocation and by the reaper, callers outside `allowed_principals` create nothing.
//! The last test runs the real issue-credentials and reap-leases binaries under
//! cargo-lambda's runtime emulator.

use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::SdkError;
use keyturn::app::lease::Issuer;
use keyturn::lease::store::LeaseStore;
use keyturn::lease::LeaseState;
use keyturn_tests::iam::{identity, signing_as};
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::lease::{assumable_role, call, reap_limits, CI, OPS, STRANGER};
use keyturn_tests::{allow_policy, apigw, harness, random_token, TestEnv};
use serde_json::{json, Value};

/// One deployment: the roles `deploy` (aws-sts; `deploy-once` the same with one lease at a
/// time), `legacy` (aws-iam-user under a path of
/// its own), `broken` (an IAM user whose policy does not exist: its creation stops
/// halfway), `iam-admin` (an IAM user whose own policy allows every IAM action) and
/// `pg-iam` (rds-iam-token), all for the `ci-runner` role's sessions.
struct Setup {
    env: TestEnv,
    vars: Vec<(String, String)>,
    service: Issuer,
    path: String,
    prefix: String,
    target_role: String,
    /// The managed policy every `aws-iam-user` role here gives its users as their boundary.
    boundary: String,
}

async fn setup(test: &str) -> Setup {
    let env = TestEnv::authenticated(test).await;
    let boundary = env.create_policy("boundary", &allow_policy(&["iam:*", "sts:*"])).await;
    let target_role = assumable_role(&env, "deploy").await;
    let path = format!("/{}/", env.unique("kt"));
    let prefix = format!("a{}_", &random_token()[..6]);
    let roles = format!(
        r#"admin_principals = ["arn:aws:iam::123456789012:role/keyturn-admin"]
username_prefix = "{prefix}"

[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/{target_role}"
external_id = "ext-42"
session_policy = '{session_policy}'
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "deploy-once"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/{target_role}"
external_id = "ext-42"
default_ttl = "15m"
max_ttl = "1h"
max_leases = 1
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "legacy"
kind = "aws-iam-user"
path = "{path}"
permissions_boundary = "{boundary}"
inline_policy = '{inline}'
default_ttl = "1h"
max_ttl = "2h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "broken"
kind = "aws-iam-user"
path = "{path}"
permissions_boundary = "{boundary}"
policy_arns = ["arn:aws:iam::123456789012:policy/{missing}"]
default_ttl = "1h"
max_ttl = "2h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "iam-admin"
kind = "aws-iam-user"
path = "{path}"
permissions_boundary = "{boundary}"
inline_policy = '{iam_admin}'
default_ttl = "1h"
max_ttl = "2h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "pg-iam"
kind = "rds-iam-token"
engine = "postgres"
host = "orders.cluster-abc.us-east-1.rds.amazonaws.com"
port = 5432
region = "eu-west-1"
db_user = "orders_app"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#,
        session_policy = allow_policy(&["iam:ListUsers"]),
        inline = allow_policy(&["iam:ListUsers", "iam:GetUser"]),
        iam_admin = allow_policy(&["iam:*"]),
        missing = env.unique("no-such-policy"),
    );
    // The functions sign as the administrator moto authenticates, as this environment does.
    let vars = env.lease_env(&roles).await;
    let service = env.lease_service(&vars, 0);
    Setup { env, vars, service, path, prefix, target_role, boundary }
}

/// The harness's configuration signing with the issued keys of a 201's body.
fn signing_with(env: &TestEnv, body: &Value) -> aws_config::SdkConfig {
    let text = |key: &str| body[key].as_str().unwrap_or_else(|| panic!("{key} in {body}"));
    signing_as(env, text("access_key_id"), text("secret_access_key"), body["session_token"].as_str())
}

async fn iam_users_under(s: &Setup) -> Vec<String> {
    let out = aws_sdk_iam::Client::new(&s.env.sdk).list_users().path_prefix(&s.path).send().await.expect("ListUsers");
    out.users().iter().map(|u| u.user_name().to_owned()).collect()
}

async fn issue(s: &Setup, role: &str, body: Option<&str>) -> (u16, Value) {
    call(&s.service, "POST", &format!("/v1/credentials/{role}"), body, CI).await
}

#[tokio::test]
async fn an_sts_session_signs_as_the_role_for_15_minutes_and_says_it_cannot_be_revoked() {
    let s = setup("lease_sts").await;
    let (status, body) = issue(&s, "deploy", Some(r#"{"ttl_seconds": 60}"#)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "aws-sts");
    assert_eq!(body["ttl_seconds"], 900, "raised to STS's shortest session, and said so");
    assert_eq!((body["revocable"].as_bool(), body["renewable"].as_bool()), (Some(false), Some(false)));
    let lease_id = body["lease_id"].as_str().unwrap();
    let session = body["session_name"].as_str().unwrap();
    assert_eq!(session, format!("ci-runner.job-1.{lease_id}"), "CloudTrail shows who and which lease");
    let arn = identity(&signing_with(&s.env, &body), 8).await.expect("the session's keys authenticate");
    assert_eq!(arn, format!("arn:aws:sts::123456789012:assumed-role/{}/{session}", s.target_role));

    let (status, refused) = call(&s.service, "DELETE", &format!("/v1/leases/{lease_id}"), None, CI).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("conflict")), "{refused}");
    let (status, _) = call(&s.service, "POST", &format!("/v1/leases/{lease_id}/renew"), None, CI).await;
    assert_eq!(status, 409);
    let lease = s.service.store().get(lease_id).await.unwrap().expect("the audit record");
    assert_eq!((lease.holder.as_str(), lease.state), (CI, LeaseState::Active));

    let (status, body) = issue(&s, "deploy", Some(r#"{"ttl_seconds": 3601}"#)).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn an_iam_users_key_works_until_revoked_then_is_refused_and_the_user_is_gone() {
    let s = setup("lease_iam_user").await;
    let (status, body) = issue(&s, "legacy", Some(r#"{"ttl_seconds": 600}"#)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["kind"].as_str(), body["revocable"].as_bool()), (Some("aws-iam-user"), Some(true)));
    assert!(body["propagation_delay_seconds"].as_u64().is_some(), "{body}");
    let user = body["username"].as_str().unwrap().to_owned();
    let lease_id = body["lease_id"].as_str().unwrap();
    assert_eq!(user, format!("{}legacy_{lease_id}", s.prefix));
    let keys = signing_with(&s.env, &body);
    assert_eq!(
        identity(&keys, 20).await.as_deref(),
        Some(format!("arn:aws:iam::123456789012:user{}{user}", s.path).as_str())
    );
    aws_sdk_iam::Client::new(&keys).list_users().send().await.expect("the role's inline policy allows it");
    let got = aws_sdk_iam::Client::new(&s.env.sdk).get_user().user_name(&user).send().await.expect("GetUser");
    let tags: Vec<(String, String)> =
        got.user().unwrap().tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    assert!(tags.contains(&("keyturn:lease-id".into(), lease_id.into())), "{tags:?}");
    assert!(tags.contains(&("keyturn:caller".into(), CI.into())), "{tags:?}");

    let (status, renewed) =
        call(&s.service, "POST", &format!("/v1/leases/{lease_id}/renew"), Some(r#"{"ttl_seconds": 3600}"#), CI).await;
    assert_eq!(status, 200, "{renewed}");
    let (status, _) = call(&s.service, "DELETE", &format!("/v1/leases/{lease_id}"), None, CI).await;
    assert_eq!(status, 204);
    assert_eq!(identity(&keys, 4).await, None, "the revoked user's key is refused");
    assert!(!iam_users_under(&s).await.contains(&user), "the user is gone");
    let (status, _) = call(&s.service, "DELETE", &format!("/v1/leases/{lease_id}"), None, CI).await;
    assert_eq!(status, 204, "revoking again succeeds");

    let (status, _) = issue(&s, "legacy", Some(r#"{"ttl_seconds": 7201}"#)).await;
    assert_eq!(status, 400, "over max_ttl");
    assert!(iam_users_under(&s).await.is_empty(), "a refused request creates nothing");
}

#[tokio::test]
async fn a_half_created_iam_user_is_deleted_by_the_failed_issue_and_an_orphan_by_the_reaper() {
    let s = setup("lease_iam_half").await;
    let (status, body) = issue(&s, "broken", None).await;
    assert_eq!(status, 500, "AttachUserPolicy failed: the deployment's to fix: {body}");
    assert!(body["message"].as_str().unwrap().contains("AttachUserPolicy"), "{body}");
    assert!(iam_users_under(&s).await.is_empty(), "the half-created user was deleted");

    // A user a crash left between CreateUser and its lease: the reaper's sweep finds it.
    let iam = aws_sdk_iam::Client::new(&s.env.sdk);
    let orphan = format!("{}legacy_{}", s.prefix, &random_token().replace('-', "")[..20]);
    iam.create_user().user_name(&orphan).path(&s.path).send().await.expect("CreateUser");
    iam.put_user_policy()
        .user_name(&orphan)
        .policy_name("keyturn-expiry")
        .policy_document(allow_policy(&["iam:ListUsers"]))
        .send()
        .await
        .expect("PutUserPolicy");
    iam.create_access_key().user_name(&orphan).send().await.expect("CreateAccessKey");
    let (status, live) = issue(&s, "legacy", None).await;
    assert_eq!(status, 201, "{live}");
    let report = s.env.lease_service(&s.vars, 0).reap(reap_limits()).await.unwrap();
    assert_eq!(report.orphans_dropped, [orphan], "{report:?}");
    assert_eq!(iam_users_under(&s).await, [live["username"].as_str().unwrap().to_owned()]);

    // Expired, the live one goes too.
    let report = s.env.lease_service(&s.vars, 7200).reap(reap_limits()).await.unwrap();
    assert_eq!((report.revoked, report.failed), (1, 0), "{report:?}");
    assert!(iam_users_under(&s).await.is_empty());
}

/// `result` is IAM's refusal (not another error, not a success). moto's AccessDenied body
/// is not in IAM's error format, so the SDK reads no code from it: the raw answer is read.
fn denied<T: std::fmt::Debug, E: std::fmt::Debug>(what: &str, result: Result<T, SdkError<E, HttpResponse>>) {
    match result {
        Err(e) => {
            let raw = e.raw_response().unwrap_or_else(|| panic!("{what}: no answer: {e:?}"));
            let body = String::from_utf8_lossy(raw.body().bytes().unwrap_or_default());
            assert!(raw.status().as_u16() == 403 && body.contains("AccessDenied"), "{what}: {e:?}");
        }
        Ok(out) => panic!("the lease user may {what}: {out:?}"),
    }
}

/// A user whose own policy allows IAM (a role for IAM administration) still cannot undo
/// what holds it to its lease: remove or replace its expiry policy or its boundary, move
/// or rename itself out of what revocation and the sweep look for, change the
/// `keyturn:caller` tag policies key on, or give itself a credential revocation would
/// not know of.
#[tokio::test]
async fn an_iam_user_allowed_iam_cannot_undo_its_lease() {
    let s = setup("lease_iam_self").await;
    let (status, body) = issue(&s, "iam-admin", None).await;
    assert_eq!(status, 201, "{body}");
    let user = body["username"].as_str().unwrap().to_owned();
    let keys = signing_with(&s.env, &body);
    identity(&keys, 20).await.expect("the key authenticates");
    let own = aws_sdk_iam::Client::new(&keys);
    own.list_users().send().await.expect("its policy lets it use IAM");
    own.get_user().user_name(&user).send().await.expect("it may still read itself");

    let expiry = "keyturn-expiry";
    denied("delete the expiry policy of", own.delete_user_policy().user_name(&user).policy_name(expiry).send().await);
    let lax = allow_policy(&["iam:ListUsers"]);
    denied(
        "replace the expiry policy of",
        own.put_user_policy().user_name(&user).policy_name(expiry).policy_document(&lax).send().await,
    );
    denied("drop the boundary of", own.delete_user_permissions_boundary().user_name(&user).send().await);
    denied("move", own.update_user().user_name(&user).new_path("/elsewhere/").send().await);
    denied("rename", own.update_user().user_name(&user).new_user_name("someone-else").send().await);
    let tag = aws_sdk_iam::types::Tag::builder().key("keyturn:caller").value(STRANGER).build().unwrap();
    denied("retag", own.tag_user().user_name(&user).tags(tag).send().await);
    denied("untag", own.untag_user().user_name(&user).tag_keys("keyturn:caller").send().await);
    denied("add a key to", own.create_access_key().user_name(&user).send().await);
    let login = own.create_login_profile().user_name(&user).password("Self-made-pw-1").send().await;
    denied("add a console password to", login);
    let admin = "arn:aws:iam::aws:policy/AdministratorAccess";
    denied("attach a policy to", own.attach_user_policy().user_name(&user).policy_arn(admin).send().await);

    let lease_id = body["lease_id"].as_str().unwrap();
    let (status, _) = call(&s.service, "DELETE", &format!("/v1/leases/{lease_id}"), None, CI).await;
    assert_eq!(status, 204);
    assert!(iam_users_under(&s).await.is_empty(), "the user is gone");
}

/// The attacker of the IAM tests: an `iam-admin` lease user (its role's policy allows
/// `iam:*`), its key working, as an IAM client; and the answer of another caller's `legacy`
/// lease, its neighbour.
async fn attacker_and_neighbour(s: &Setup) -> (aws_sdk_iam::Client, Value) {
    let (status, body) = issue(s, "iam-admin", None).await;
    assert_eq!(status, 201, "{body}");
    let keys = signing_with(&s.env, &body);
    identity(&keys, 20).await.expect("the key authenticates");
    let (status, other) = issue(s, "legacy", None).await;
    assert_eq!(status, 201, "{other}");
    (aws_sdk_iam::Client::new(&keys), other)
}

/// A user whose own policy allows IAM cannot act on the users keyturn answers for: another
/// lease user under the same path, a lease user under another path (tagged
/// `keyturn:lease-id`), a user rotate-iam-key rotates (tagged `keyturn-rotated`, under any
/// path). No key for them, no deleting their expiry policy, no deleting them. It still may
/// on a user that is none of these: its policy allows it there, and keyturn's denies only
/// what it must.
#[tokio::test]
async fn an_iam_user_allowed_iam_cannot_touch_other_lease_users_or_rotated_users() {
    let s = setup("lease_iam_others").await;
    let (attacker, other) = attacker_and_neighbour(&s).await;
    let neighbour = other["username"].as_str().unwrap().to_owned();

    // Made as keyturn makes them, by the harness's administrator.
    let iam = aws_sdk_iam::Client::new(&s.env.sdk);
    let made = |name: &str, path: &str, tag: Option<(&str, &str)>| {
        let iam = iam.clone();
        let (name, path) = (s.env.unique(name), path.to_owned());
        let tag = tag.map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().unwrap());
        async move {
            iam.create_user().user_name(&name).path(&path).set_tags(tag.map(|t| vec![t])).send().await.unwrap();
            let policy = allow_policy(&["iam:ListUsers"]);
            let put = iam.put_user_policy().user_name(&name).policy_name("keyturn-expiry").policy_document(policy);
            put.send().await.unwrap();
            iam.create_access_key().user_name(&name).send().await.unwrap();
            name
        }
    };
    let elsewhere =
        made("elsewhere", &format!("/{}/", s.env.unique("other-leases")), Some(("keyturn:lease-id", "x"))).await;
    let rotated_tag = ("keyturn-rotated", "keyturn-rotation-0123456789abcdef");
    let rotated = made("rotated", "/keyturn/", Some(rotated_tag)).await;
    let rotated_at_root = made("rotated-root", "/", Some(rotated_tag)).await;
    let plain = made("plain", "/", None).await;

    for victim in [&neighbour, &elsewhere, &rotated, &rotated_at_root] {
        denied(&format!("create a key for {victim}"), attacker.create_access_key().user_name(victim).send().await);
        let delete = attacker.delete_user_policy().user_name(victim).policy_name("keyturn-expiry").send().await;
        denied(&format!("delete the expiry policy of {victim}"), delete);
        denied(&format!("delete {victim}"), attacker.delete_user().user_name(victim).send().await);
        let untag = attacker.untag_user().user_name(victim).tag_keys("keyturn:lease-id").tag_keys("keyturn-rotated");
        denied(&format!("untag {victim}"), untag.send().await);
        // Reading stays allowed, as on itself.
        attacker.get_user().user_name(victim).send().await.expect("GetUser");
        let left = iam.list_access_keys().user_name(victim).send().await.expect("ListAccessKeys");
        assert_eq!(left.access_key_metadata().len(), 1, "{victim}: a key was added");
        iam.get_user_policy().user_name(victim).policy_name("keyturn-expiry").send().await.expect("policy kept");
    }
    // A user keyturn does not answer for: the attacker's own policy rules there.
    let key = attacker.create_access_key().user_name(&plain).send().await.expect("CreateAccessKey on a plain user");
    let key = key.access_key().expect("a key").access_key_id().to_owned();
    attacker.delete_access_key().user_name(&plain).access_key_id(key).send().await.expect("DeleteAccessKey");
    attacker
        .delete_user_policy()
        .user_name(&plain)
        .policy_name("keyturn-expiry")
        .send()
        .await
        .expect("DeleteUserPolicy");
}

/// Attacker: the holder of an IAM lease user whose role's policy allows IAM (`iam:*`).
/// keyturn's expiry policy denies it every IAM write on the users keyturn answers for
/// (other lease users, rotated users), but only where the action's resource is the user.
/// Group membership is written on the group: `iam:AddUserToGroup` names a group as its
/// resource, so the holder creates a group of its own, gives it a policy, and puts
/// another caller's lease user (or a user rotate-iam-key rotates, which production
/// software signs as) into it. A group policy of `Deny *` shuts the neighbour's credential
/// out of everything its role allows; one of `Allow iam:*` would lift it to whatever its
/// boundary permits. Either way one lease holder changes what another's credential can
/// do, which the expiry policy is there to prevent.
#[tokio::test]
async fn an_iam_user_allowed_iam_reaches_no_other_lease_user_through_a_group() {
    let s = setup("rev_iam_group").await;
    let (attacker, other) = attacker_and_neighbour(&s).await;
    let neighbour = other["username"].as_str().unwrap().to_owned();
    let neighbour_keys = signing_with(&s.env, &other);
    identity(&neighbour_keys, 20).await.expect("the neighbour's key authenticates");
    let victim = aws_sdk_iam::Client::new(&neighbour_keys);
    victim.list_users().send().await.expect("the neighbour's role lets it list users");

    // The rotated user, made as rotate-iam-key tags it, by the harness's administrator.
    let iam = aws_sdk_iam::Client::new(&s.env.sdk);
    let rotated = s.env.unique("rotated");
    let tag = aws_sdk_iam::types::Tag::builder()
        .key("keyturn-rotated")
        .value("keyturn-rotation-0123456789abcdef")
        .build()
        .unwrap();
    iam.create_user().user_name(&rotated).path("/").tags(tag).send().await.unwrap();

    let group = s.env.unique("trap");
    attacker.create_group().group_name(&group).send().await.expect("its policy allows CreateGroup");
    let deny_all = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]});
    // Its policy allows these; the expiry policy denies every one.
    let shut = attacker
        .put_group_policy()
        .group_name(&group)
        .policy_name("shut")
        .policy_document(deny_all.to_string())
        .send()
        .await;
    let to_neighbour = attacker.add_user_to_group().group_name(&group).user_name(&neighbour).send().await;
    let to_rotated = attacker.add_user_to_group().group_name(&group).user_name(&rotated).send().await;

    let still = victim.list_users().send().await;
    assert!(still.is_ok(), "another caller's lease user lost its role's permissions to the holder's group: {still:?}");
    denied("put a policy on a group", shut);
    denied(&format!("add {neighbour} to its group"), to_neighbour);
    denied(&format!("add {rotated} to its group"), to_rotated);
}

/// Attacker: the holder of an IAM lease user whose role's policy allows IAM (`iam:*`).
/// The users keyturn answers for are protected by statements on user resources, but what
/// binds them also lives in managed policies: every lease user's permissions boundary
/// (and a role's `policy_arns`) is a policy whose resource is the policy, not a user. The
/// holder writes a new default version of the boundary its role shares with the others:
/// `Deny *` shuts every other lease user of every role with that boundary out of what its
/// role allows; `Allow *` would lift every lease user, itself included, out of its
/// boundary, which docs/security.md says no lease user can leave. moto evaluates no permissions
/// boundary, so the test shows the write itself: on AWS the boundary's default version is
/// what every request of those users is checked against.
#[tokio::test]
async fn an_iam_user_allowed_iam_cannot_rewrite_the_boundary_other_lease_users_share() {
    let s = setup("rev_iam_boundary").await;
    let (attacker, other) = attacker_and_neighbour(&s).await;
    let victim = aws_sdk_iam::Client::new(&signing_with(&s.env, &other));
    identity(&signing_with(&s.env, &other), 20).await.expect("the neighbour's key authenticates");
    victim.list_users().send().await.expect("the neighbour's role lets it list users");

    let deny_all = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]});
    let rewrite = attacker
        .create_policy_version()
        .policy_arn(&s.boundary)
        .policy_document(deny_all.to_string())
        .set_as_default(true)
        .send()
        .await;
    let iam = aws_sdk_iam::Client::new(&s.env.sdk);
    let versions = iam.list_policy_versions().policy_arn(&s.boundary).send().await.expect("ListPolicyVersions");
    assert_eq!(versions.versions().len(), 1, "the lease user wrote a version of the boundary other lease users share");
    denied("write a new default version of the shared boundary", rewrite);
}

/// An STS session cannot be ended early, so its lease keeps its `max_leases` slot until it
/// expires: neither its holder nor an admin can revoke it to free the slot while the
/// session still works. And a stranger can neither revoke nor renew someone's IAM user.
#[tokio::test]
async fn an_unrevocable_lease_holds_its_slot_until_it_expires_and_strangers_act_on_no_lease() {
    let s = setup("lease_aws_slots").await;
    let (status, body) = issue(&s, "deploy-once", None).await;
    assert_eq!(status, 201, "{body}");
    let lease = format!("/v1/leases/{}", body["lease_id"].as_str().unwrap());
    assert_eq!(issue(&s, "deploy-once", None).await.0, 429, "the role's one slot is taken");
    for who in [CI, OPS] {
        let (status, refused) = call(&s.service, "DELETE", &lease, None, who).await;
        assert_eq!(status, 409, "{who}: {refused}");
    }
    assert_eq!(call(&s.service, "DELETE", &lease, None, STRANGER).await.0, 403);
    let report = s.env.lease_service(&s.vars, 0).reap(reap_limits()).await.unwrap();
    assert_eq!(report.revoked, 0, "not expired yet: {report:?}");
    assert_eq!(issue(&s, "deploy-once", None).await.0, 429, "still taken");
    let report = s.env.lease_service(&s.vars, 901).reap(reap_limits()).await.unwrap();
    assert_eq!((report.revoked, report.failed), (1, 0), "expired: {report:?}");
    assert_eq!(issue(&s, "deploy-once", None).await.0, 201, "freed once the session expired");

    let (status, body) = issue(&s, "legacy", None).await;
    assert_eq!(status, 201, "{body}");
    let lease = format!("/v1/leases/{}", body["lease_id"].as_str().unwrap());
    assert_eq!(call(&s.service, "DELETE", &lease, None, STRANGER).await.0, 403);
    let renew = format!("{lease}/renew");
    assert_eq!(call(&s.service, "POST", &renew, Some(r#"{"ttl_seconds": 7200}"#), STRANGER).await.0, 403);
    assert!(identity(&signing_with(&s.env, &body), 20).await.is_some(), "the holder's key still works");
    assert_eq!(iam_users_under(&s).await, [body["username"].as_str().unwrap().to_owned()]);
}

#[tokio::test]
async fn an_rds_token_is_signed_for_the_roles_host_user_and_region_and_lives_15_minutes() {
    let s = setup("lease_rds").await;
    let (status, body) = issue(&s, "pg-iam", None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!((body["ttl_seconds"].as_u64(), body["username"].as_str()), (Some(900), Some("orders_app")));
    assert_eq!(body["engine"], "postgres", "clients learn from it how to connect");
    let token = body["password"].as_str().unwrap();
    assert!(token.starts_with("orders.cluster-abc.us-east-1.rds.amazonaws.com:5432/?Action=connect&DBUser=orders_app&"));
    let (key_id, _) = harness().moto_auth();
    assert!(token.contains("X-Amz-Expires=900"), "{token}");
    assert!(token.contains(&format!("X-Amz-Credential={key_id}%2F")), "signed with the issuer's own key: {token}");
    assert!(token.contains("%2Feu-west-1%2Frds-db%2Faws4_request"), "for the role's region: {token}");
    let (status, refused) = issue(&s, "pg-iam", Some(r#"{"ttl_seconds": 901}"#)).await;
    assert_eq!(status, 400);
    assert!(refused["message"].as_str().unwrap().contains("valid for 15 minutes"), "{refused}");
}

#[tokio::test]
async fn callers_outside_allowed_principals_get_403_and_nothing_is_created() {
    let s = setup("lease_aws_403").await;
    for role in ["deploy", "legacy", "pg-iam"] {
        let (status, body) = call(&s.service, "POST", &format!("/v1/credentials/{role}"), None, STRANGER).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{role}: {body}");
    }
    assert!(iam_users_under(&s).await.is_empty());
    let report = s.env.lease_service(&s.vars, 100_000).reap(reap_limits()).await.unwrap();
    assert_eq!(report.due, 0, "no lease was written");
}

const ISSUER: &str = "issue-credentials";
const REAPER: &str = "reap-leases";

#[tokio::test]
async fn the_real_binaries_issue_each_aws_kind_and_reap_the_iam_user() {
    let s = setup("lease_aws_e2e").await;
    let mut vars = s.vars.clone();
    vars.push(("AWS_LAMBDA_LOG_LEVEL".into(), "TRACE".into()));
    let mut emulator = Emulator::start(&s.env.h.work.join("emulator-lease-aws.log"));
    let issuer_log = s.env.h.work.join("function-issue-credentials-aws.log");
    let reaper_log = s.env.h.work.join("function-reap-leases-aws.log");
    emulator.run_function(&function_binary(ISSUER), ISSUER, &vars, &issuer_log);
    let mut reaper_vars = vars.clone();
    reaper_vars.push(("KEYTURN_TEST_CLOCK_OFFSET_SECS".into(), "7200".into()));
    emulator.run_function(&function_binary(REAPER), REAPER, &reaper_vars, &reaper_log);

    let mut secrets = Vec::new();
    let mut issued = Vec::new();
    for role in ["deploy", "legacy", "pg-iam"] {
        let event = apigw::request("POST", &format!("/v1/credentials/{role}"), None, CI);
        let (status, body) = apigw::response(&emulator.invoke_json(ISSUER, &event));
        assert_eq!(status, 201, "{role}: {body}");
        for key in ["secret_access_key", "session_token", "password"] {
            if let Some(secret) = body[key].as_str() {
                secrets.push(secret.to_owned());
            }
        }
        issued.push(body);
    }
    assert!(identity(&signing_with(&s.env, &issued[0]), 8).await.is_some(), "the STS session works");
    let user_keys = signing_with(&s.env, &issued[1]);
    assert!(identity(&user_keys, 20).await.is_some(), "the IAM user's key works");

    let report = emulator.invoke_json(REAPER, &json!({"source": "aws.events", "detail-type": "Scheduled Event"}));
    assert_eq!((report["revoked"].as_u64(), report["failed"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_eq!(identity(&user_keys, 4).await, None, "expired and reaped: the key is refused");
    assert!(iam_users_under(&s).await.is_empty());

    for log in [&issuer_log, &reaper_log] {
        let output = std::fs::read_to_string(log).unwrap();
        for secret in &secrets {
            assert!(!output.contains(secret.as_str()), "{} shows an issued secret", log.display());
        }
    }
}
