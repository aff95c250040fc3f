//! AWS credentials per lease ([`AwsIssuer`]) against moto with IAM authentication on: the
//! keys it hands out really sign requests, the expiry policy really refuses them after
//! the lease's end, and a deleted user's key really is refused. The RDS token is checked
//! by re-deriving its SigV4 signature independently.

use std::time::{Duration, SystemTime};

use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::SdkError;
use aws_sdk_iam::operation::list_users::ListUsersError;
use aws_sdk_sts::config::{Credentials, SharedCredentialsProvider};
use hmac::{Hmac, KeyInit, Mac};
use keyturn::aws::credentials::AwsIssuer;
use keyturn::backend::aws::{
    tag, AssumeRole, AwsCredentials, AwsKeys, DeleteIamUser, ListIamUsers, NewIamUser, RdsToken, UpdateIamUser,
    ROLE_POLICY,
};
use keyturn::lease::kind::aws_iam_user::EXPIRY_POLICY;
use keyturn::time::iso8601;
use keyturn_tests::{allow_policy, TestEnv};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A path of the test's own, so that listings see only its users.
fn path_of(env: &TestEnv) -> String {
    format!("/{}/", env.unique("leases"))
}

fn iam(env: &TestEnv) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::new(&env.sdk)
}

/// The harness's configuration, signing with `keys` instead of the administrator's.
fn signing_with(env: &TestEnv, keys: &AwsKeys) -> aws_config::SdkConfig {
    let token = keys.session_token.as_ref().map(|t| t.expose_secret().to_owned());
    let credentials =
        Credentials::new(&keys.access_key_id, keys.secret_access_key.expose_secret(), token, None, "lease");
    env.sdk.to_builder().credentials_provider(SharedCredentialsProvider::new(credentials)).build()
}

/// Refused by moto's authentication: HTTP 403 (moto's refusals carry no error code the
/// SDK can read, see shared/notes/moto.md).
fn refused<T, E>(result: &Result<T, SdkError<E, HttpResponse>>) -> bool {
    matches!(result, Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403))
}

async fn caller_arn(sdk: &aws_config::SdkConfig) -> Result<String, String> {
    let out = aws_sdk_sts::Client::new(sdk).get_caller_identity().send().await.map_err(|e| format!("{e:?}"))?;
    Ok(out.arn().unwrap_or_default().to_owned())
}

/// The key's identity once IAM lets it in (a new key may take a moment on AWS).
async fn caller_arn_soon(sdk: &aws_config::SdkConfig) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        match caller_arn(sdk).await {
            Ok(arn) => return arn,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the key never authenticated: {last}")
}

/// iam:ListUsers signed with the key: allowed by the role's inline policy, denied by the
/// expiry policy once it applies.
async fn list_users_with(sdk: &aws_config::SdkConfig) -> Result<(), SdkError<ListUsersError, HttpResponse>> {
    aws_sdk_iam::Client::new(sdk).list_users().send().await.map(drop)
}

/// A managed policy to attach, one to serve as the boundary, and a group.
struct Fixtures {
    policy_arn: String,
    boundary_arn: String,
    group: String,
}

async fn fixtures(env: &TestEnv) -> Fixtures {
    let iam = iam(env);
    let policy_arn = env.create_policy("get-user", &allow_policy(&["iam:GetUser"])).await;
    let boundary_arn = env.create_policy("boundary", &allow_policy(&["iam:*", "sts:*"])).await;
    let group = env.unique("group");
    iam.create_group().group_name(&group).send().await.expect("CreateGroup");
    Fixtures { policy_arn, boundary_arn, group }
}

fn new_user(env: &TestEnv, f: &Fixtures, name: &str, expires_at: SystemTime) -> NewIamUser {
    NewIamUser {
        user_name: env.unique(name),
        path: path_of(env),
        permissions_boundary: f.boundary_arn.clone(),
        policy_arns: vec![f.policy_arn.clone()],
        inline_policy: Some(allow_policy(&["iam:ListUsers"])),
        groups: vec![f.group.clone()],
        tags: vec![
            (tag::LEASE_ID.into(), format!("lease-{name}")),
            (tag::CALLER.into(), "arn:aws:iam::123456789012:user/ci".into()),
        ],
        expires_at,
    }
}

async fn user_exists(env: &TestEnv, user: &str) -> bool {
    match iam(env).get_user().user_name(user).send().await {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => false,
        Err(e) => panic!("GetUser: {e:?}"),
    }
}

async fn group_members(env: &TestEnv, group: &str) -> Vec<String> {
    let out = iam(env).get_group().group_name(group).send().await.expect("GetGroup");
    out.users().iter().map(|u| u.user_name().to_owned()).collect()
}

/// A policy document as IAM returns it: URL-encoded on AWS, as is in moto.
fn document(text: &str) -> Value {
    let decoded = if text.starts_with('%') { percent_decode(text) } else { text.to_owned() };
    serde_json::from_str(&decoded).expect("policy JSON")
}

fn in_secs(secs: u64) -> SystemTime {
    SystemTime::now() + Duration::from_secs(secs)
}

#[tokio::test]
async fn a_new_user_gets_everything_its_key_works_and_delete_takes_it_all_away() {
    let env = TestEnv::authenticated("awsuser").await;
    let issuer = AwsIssuer::new(&env.sdk);
    let f = fixtures(&env).await;
    let expires_at = in_secs(3600);
    let req = new_user(&env, &f, "full", expires_at);
    let user = req.user_name.clone();
    let keys = issuer.new_iam_user(req).await.expect("new_iam_user");
    assert!(keys.session_token.is_none() && keys.expiration.is_none());

    let got = iam(&env).get_user().user_name(&user).send().await.expect("GetUser");
    let got = got.user().expect("user");
    let key_sdk = signing_with(&env, &keys);
    assert_eq!(caller_arn_soon(&key_sdk).await, got.arn(), "the key signs as the user");
    assert_eq!(got.path(), path_of(&env));
    assert_eq!(got.permissions_boundary().and_then(|b| b.permissions_boundary_arn()), Some(f.boundary_arn.as_str()));
    let tags: Vec<(&str, &str)> = got.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert!(tags.contains(&(tag::LEASE_ID, "lease-full")), "{tags:?}");
    assert!(tags.contains(&(tag::CALLER, "arn:aws:iam::123456789012:user/ci")), "{tags:?}");
    assert!(tags.contains(&(tag::EXPIRES_AT, iso8601(expires_at).as_str())), "{tags:?}");

    let attached = iam(&env).list_attached_user_policies().user_name(&user).send().await.expect("attached");
    let attached: Vec<_> = attached.attached_policies().iter().filter_map(|p| p.policy_arn()).collect();
    assert_eq!(attached, [f.policy_arn.as_str()]);
    let mut inline = iam(&env).list_user_policies().user_name(&user).send().await.expect("inline").policy_names;
    inline.sort();
    assert_eq!(inline, [EXPIRY_POLICY, ROLE_POLICY]);
    let expiry = iam(&env).get_user_policy().user_name(&user).policy_name(EXPIRY_POLICY).send().await.expect("expiry");
    let expiry = document(expiry.policy_document());
    assert_eq!(expiry["Statement"][0]["Effect"], "Deny");
    assert_eq!(expiry["Statement"][0]["Condition"]["DateGreaterThan"]["aws:CurrentTime"], iso8601(expires_at));
    assert!(group_members(&env, &f.group).await.contains(&user));
    list_users_with(&key_sdk).await.expect("the role's inline policy allows ListUsers");

    let deleted = issuer.delete_iam_user(DeleteIamUser { user_name: user.clone() }).await.expect("delete");
    assert!(deleted.existed);
    assert!(!user_exists(&env, &user).await, "the user is gone");
    assert!(caller_arn(&key_sdk).await.is_err(), "the deleted user's key still authenticates");
    assert!(!group_members(&env, &f.group).await.contains(&user), "still in the group");

    let again = issuer.delete_iam_user(DeleteIamUser { user_name: user }).await.expect("delete again");
    assert!(!again.existed);
}

#[tokio::test]
async fn the_expiry_policy_refuses_the_key_after_its_time_and_an_update_moves_it() {
    let env = TestEnv::authenticated("awsexpiry").await;
    let issuer = AwsIssuer::new(&env.sdk);
    let f = fixtures(&env).await;
    let expires_at = in_secs(3);
    let req = new_user(&env, &f, "short", expires_at);
    let (user, path) = (req.user_name.clone(), req.path.clone());
    let key_sdk = signing_with(&env, &issuer.new_iam_user(req).await.expect("new_iam_user"));
    caller_arn_soon(&key_sdk).await;
    list_users_with(&key_sdk).await.expect("allowed before the expiry");

    // IAM's time is to the second, and its condition is "after", not "at".
    tokio::time::sleep(expires_at.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_millis(1500))
        .await;
    assert!(refused(&list_users_with(&key_sdk).await), "the key is still allowed after its expiry");

    let later = in_secs(3600);
    issuer
        .update_iam_user(UpdateIamUser { user_name: user.clone(), path: path.clone(), expires_at: later })
        .await
        .expect("update");
    list_users_with(&key_sdk).await.expect("allowed again once the expiry moved");
    let got = iam(&env).get_user().user_name(&user).send().await.expect("GetUser");
    let expires_tag =
        got.user().unwrap().tags().iter().find(|t| t.key() == tag::EXPIRES_AT).map(|t| t.value().to_owned());
    assert_eq!(expires_tag, Some(iso8601(later)));

    issuer.delete_iam_user(DeleteIamUser { user_name: user.clone() }).await.expect("delete");
    let err = issuer.update_iam_user(UpdateIamUser { user_name: user, path, expires_at: later }).await.unwrap_err();
    assert!(err.not_found, "updating a deleted user: {err}");
}

#[tokio::test]
async fn delete_cleans_up_a_user_built_by_hand_halfway() {
    let env = TestEnv::authenticated("awshalf").await;
    let issuer = AwsIssuer::new(&env.sdk);
    let f = fixtures(&env).await;
    let iam = iam(&env);
    let user = env.unique("half");
    iam.create_user().user_name(&user).path(path_of(&env)).send().await.expect("CreateUser");
    iam.attach_user_policy().user_name(&user).policy_arn(&f.policy_arn).send().await.expect("AttachUserPolicy");
    iam.put_user_policy()
        .user_name(&user)
        .policy_name("by-hand")
        .policy_document(allow_policy(&["iam:ListUsers"]))
        .send()
        .await
        .expect("PutUserPolicy");
    iam.add_user_to_group().user_name(&user).group_name(&f.group).send().await.expect("AddUserToGroup");
    iam.create_login_profile().user_name(&user).password("Hand-made-pw-1").send().await.expect("CreateLoginProfile");
    let key = iam.create_access_key().user_name(&user).send().await.expect("CreateAccessKey").access_key.unwrap();
    let keys = AwsKeys {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key.into(),
        session_token: None,
        expiration: None,
    };
    let key_sdk = signing_with(&env, &keys);
    caller_arn_soon(&key_sdk).await;

    let deleted = issuer.delete_iam_user(DeleteIamUser { user_name: user.clone() }).await.expect("delete");
    assert!(deleted.existed);
    assert!(!user_exists(&env, &user).await);
    assert!(caller_arn(&key_sdk).await.is_err(), "the key still authenticates");
    assert!(!group_members(&env, &f.group).await.contains(&user), "still in the group");
    let policy = iam.get_policy().policy_arn(&f.policy_arn).send().await.expect("GetPolicy");
    assert_eq!(policy.policy().and_then(|p| p.attachment_count()), Some(0), "the policy is still attached");
}

#[tokio::test]
async fn two_reapers_deleting_the_same_user_both_succeed() {
    let env = TestEnv::authenticated("awsrace").await;
    let issuer = AwsIssuer::new(&env.sdk);
    let f = fixtures(&env).await;
    let req = new_user(&env, &f, "raced", in_secs(3600));
    let user = req.user_name.clone();
    issuer.new_iam_user(req).await.expect("new_iam_user");
    let delete = || issuer.delete_iam_user(DeleteIamUser { user_name: user.clone() });
    let (a, b) = tokio::join!(delete(), delete());
    let (a, b) = (a.expect("first reaper"), b.expect("second reaper"));
    assert!(a.existed || b.existed);
    assert!(!user_exists(&env, &user).await);
}

#[tokio::test]
async fn listing_keeps_the_exact_path_and_the_prefix() {
    let env = TestEnv::authenticated("awslist").await;
    let issuer = AwsIssuer::new(&env.sdk);
    let iam = iam(&env);
    let path = path_of(&env);
    let deeper = format!("{path}deeper/");
    let elsewhere = format!("/{}/", env.unique("elsewhere"));
    let users = [
        ("kt-a-1", path.as_str()),
        ("kt-a-2", path.as_str()),
        ("other-1", path.as_str()),
        ("kt-a-deep", deeper.as_str()),
        ("kt-a-away", elsewhere.as_str()),
    ];
    for (name, at) in users {
        iam.create_user().user_name(env.unique(name)).path(at).send().await.expect("CreateUser");
    }
    let prefix = env.unique("kt-a-");
    let mut listed = issuer.list_iam_users(ListIamUsers { path: path.clone(), prefix }).await.expect("list");
    listed.sort();
    assert_eq!(listed, [env.unique("kt-a-1"), env.unique("kt-a-2")]);
    let all = issuer.list_iam_users(ListIamUsers { path, prefix: String::new() }).await.expect("list all");
    assert_eq!(all.len(), 3, "{all:?}");
}

#[tokio::test]
async fn an_assumed_role_session_signs_as_the_role_and_a_wrong_external_id_is_refused() {
    let env = TestEnv::authenticated("awsrole").await;
    let issuer = AwsIssuer::new(&env.sdk);
    let admin = caller_arn(&env.sdk).await.expect("the harness admin's ARN");
    let role = env.unique("role");
    // moto compares Principal.AWS as a plain string: name the admin user exactly.
    let trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": admin},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
        "Condition": {"StringEquals": {"sts:ExternalId": "ext-1234"}}
    }]});
    let created = iam(&env)
        .create_role()
        .role_name(&role)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
        .expect("CreateRole");
    let role_arn = created.role().unwrap().arn().to_owned();
    let request = |external_id: &str| AssumeRole {
        role_arn: role_arn.clone(),
        session_name: "lease-42@ci".into(),
        duration: Duration::from_secs(900),
        session_policy: Some(allow_policy(&["iam:ListUsers"])),
        policy_arns: vec![],
        external_id: Some(external_id.into()),
        tags: vec![(tag::LEASE_ID.into(), "lease-42".into())],
    };

    let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let keys = issuer.assume_role(request("ext-1234")).await.expect("assume_role");
    assert!(keys.session_token.is_some());
    let expiration = keys.expiration.expect("a session's expiration");
    assert!((before + 890..=before + 960).contains(&expiration), "expiration {expiration}, now {before}");
    let arn = caller_arn_soon(&signing_with(&env, &keys)).await;
    assert!(arn.ends_with(&format!(":assumed-role/{role}/lease-42@ci")), "{arn}");

    let err = issuer.assume_role(request("ext-wrong")).await.unwrap_err();
    assert_eq!(err.operation, "AssumeRole");
    assert!(!err.not_found && !err.retryable, "{err}");
}

// The RDS token, signed locally: checked against an independent SigV4 derivation.

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// SigV4's URI encoding: everything but the unreserved characters, upper-case hex.
fn uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

async fn static_issuer(region: &str) -> AwsIssuer {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(KEY_ID, SECRET, None, None, "static"))
        .load()
        .await;
    AwsIssuer::new(&sdk)
}

#[tokio::test]
async fn an_rds_token_is_a_sigv4_presigned_connect_for_the_user() {
    let (host, port, region, user) = ("db.cluster-x.eu-west-1.rds.amazonaws.com", 5432, "eu-west-1", "lease_u1");
    let issuer = static_issuer("us-east-1").await;
    let req = RdsToken { host: host.into(), port, region: region.into(), db_user: user.into() };
    let token = issuer.rds_token(req).await.expect("rds_token");
    let token = token.expose_secret();

    let start = format!("{host}:{port}/?Action=connect&DBUser={user}&");
    assert!(token.starts_with(&start), "{token}");
    let params: Vec<(String, String)> = token
        .split_once('?')
        .expect("a query")
        .1
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (percent_decode(name), percent_decode(value))
        })
        .collect();
    let param = |name: &str| -> &str {
        let found: Vec<_> = params.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(found.len(), 1, "{name} in {token}");
        &found[0].1
    };
    assert_eq!(param("Action"), "connect");
    assert_eq!(param("DBUser"), user);
    assert_eq!(param("X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
    assert_eq!(param("X-Amz-Expires"), "900");
    assert_eq!(param("X-Amz-SignedHeaders"), "host");
    let amz_date = param("X-Amz-Date");
    let date = &amz_date[..8];
    assert_eq!(param("X-Amz-Credential"), format!("{KEY_ID}/{date}/{region}/rds-db/aws4_request"));
    // Signed now: X-Amz-Date within a minute of the clock, compared as the same format.
    let compact = |at: SystemTime| iso8601(at).replace(['-', ':'], "");
    let now = SystemTime::now();
    assert!(compact(now - Duration::from_secs(60)).as_str() <= amz_date, "{amz_date}");
    assert!(amz_date <= compact(now + Duration::from_secs(60)).as_str(), "{amz_date}");

    let mut query: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| name != "X-Amz-Signature")
        .map(|(name, value)| (uri_encode(name), uri_encode(value)))
        .collect();
    query.sort();
    let query = query.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("&");
    let empty_payload = hex(&Sha256::digest(b""));
    let canonical = format!("GET\n/\n{query}\nhost:{host}:{port}\n\nhost\n{empty_payload}");
    let scope = format!("{date}/{region}/rds-db/aws4_request");
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let mut key = format!("AWS4{SECRET}").into_bytes();
    for part in [date, region, "rds-db", "aws4_request"] {
        key = hmac(&key, part);
    }
    assert_eq!(param("X-Amz-Signature"), hex(&hmac(&key, &to_sign)), "canonical request:\n{canonical}");
}

#[tokio::test]
async fn an_rds_token_is_refused_for_a_user_name_that_would_change_the_query() {
    let issuer = static_issuer("eu-west-1").await;
    let req = RdsToken { host: "db".into(), port: 3306, region: "eu-west-1".into(), db_user: "a&DBUser=admin".into() };
    let err = issuer.rds_token(req).await.unwrap_err();
    assert_eq!(err.operation, "GenerateDbAuthToken");
    assert!(!err.message.contains(SECRET));
}
