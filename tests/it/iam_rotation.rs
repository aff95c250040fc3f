//! IAM access key rotation against moto with IAM authentication on: a key that keyturn
//! created really signs requests, and a key it revoked really is refused.

use aws_sdk_sts::config::Credentials;
use keyturn::app::rotate_iam_key::IamRotator;
use keyturn::config::RotateIamKeyConfig;
use keyturn::rotation::iam_key::{Marks, CREATING_TAG, ROTATED_TAG};
use keyturn::rotation::store::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use keyturn::rotation::Step;
use keyturn_tests::iam::{access_keys, identity, signing_as, user_with_key_secret as user_with_secret};
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::TestEnv;
use serde_json::json;

const STEPS: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];
const PATH: &str = "/keyturn/";

/// The rotator as the function builds it, from the settings a deployment would give it.
fn built(sdk: &aws_config::SdkConfig, settings: &[(&str, &str)]) -> IamRotator {
    let mut vars = vec![("KEYTURN_IAM_PATH_PREFIX", PATH), ("KEYTURN_IAM_TEST_TIMEOUT_SECS", "5")];
    vars.extend_from_slice(settings);
    let config = RotateIamKeyConfig::from_vars(vars.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())))
        .expect("rotate-iam-key settings");
    keyturn::app::rotate_iam_key::build(&config, sdk)
}

fn rotator(env: &TestEnv) -> IamRotator {
    built(&env.sdk, &[("KEYTURN_IAM_TAG", "keyturn-rotate=yes")])
}

/// Whether moto accepts requests signed with this key (`sts:GetCallerIdentity`).
async fn authenticates(env: &TestEnv, key: &(String, String)) -> bool {
    identity(&signing_as(env, &key.0, &key.1, None), 1).await.is_some()
}

async fn key_of(env: &TestEnv, arn: &str, stage: &str) -> (String, String) {
    let v = env.value(arn, stage).await;
    (v["accessKeyId"].as_str().unwrap().to_owned(), v["secretAccessKey"].as_str().unwrap().to_owned())
}

async fn key_ids(env: &TestEnv, user: &str) -> Vec<String> {
    access_keys(env, user).await.into_iter().map(|(id, _)| id).collect()
}

#[tokio::test]
async fn five_rotations_keep_an_active_and_a_previous_key() {
    let env = TestEnv::authenticated("iam5").await;
    let rotator = rotator(&env);
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let mut history = vec![key_of(&env, &arn, AWSCURRENT).await];
    for round in 0..5 {
        env.rotate(&rotator, &arn).await;
        let current = key_of(&env, &arn, AWSCURRENT).await;
        let previous = key_of(&env, &arn, AWSPREVIOUS).await;
        assert_eq!(&previous, history.last().unwrap(), "round {round}");
        let keys = key_ids(&env, &user).await;
        assert!(keys.len() <= 2, "round {round}: {} keys", keys.len());
        assert!(authenticates(&env, &current).await, "round {round}: AWSCURRENT is refused");
        assert!(authenticates(&env, &previous).await, "round {round}: AWSPREVIOUS must stay valid");
        if history.len() >= 2 {
            let revoked = &history[history.len() - 2];
            assert!(!keys.contains(&revoked.0), "round {round}: the key of two rotations ago still exists");
            assert!(!authenticates(&env, revoked).await, "round {round}: the key of two rotations ago is accepted");
        }
        history.push(current);
    }
    // Each key keyturn created (or adopted: the one stored by hand) is named in a user tag,
    // removed with the key; and the user is marked as rotated by keyturn, for good (lease
    // users' expiry policies deny IAM writes on users so marked).
    let tags = user_tags(&env, &user).await;
    let rotated = (ROTATED_TAG.to_owned(), Marks::new(&arn, "any token").rotated_tag());
    assert!(tags.contains(&rotated), "{tags:?}");
    let mut tagged: Vec<String> = tags.into_iter().map(|(k, _)| k).filter(|k| k != ROTATED_TAG).collect();
    let mut keys = key_ids(&env, &user).await;
    tagged.sort();
    keys.sort();
    assert_eq!(tagged, keys, "one tag per live key, none left for deleted keys");
    env.assert_no_password_logged_for(&arn, "secretAccessKey").await;
}

#[tokio::test]
async fn a_rotation_stopped_after_any_step_converges_within_two_keys() {
    for stop_after in 1..=4 {
        let env = TestEnv::authenticated("iamcrash").await;
        let rotator = rotator(&env);
        let (arn, user) = user_with_secret(&env, "ci", PATH).await;
        env.rotate(&rotator, &arn).await; // two keys from here on
        let token = env.start_rotation(&arn).await;
        for step in &STEPS[..stop_after] {
            env.step(&rotator, &arn, &token, *step).await.unwrap();
        }
        for step in STEPS {
            env.step(&rotator, &arn, &token, step).await.unwrap_or_else(|e| panic!("stop after {stop_after}: {e}"));
            assert!(key_ids(&env, &user).await.len() <= 2);
        }
        assert!(authenticates(&env, &key_of(&env, &arn, AWSCURRENT).await).await);
        assert!(authenticates(&env, &key_of(&env, &arn, AWSPREVIOUS).await).await);
    }
}

#[tokio::test]
async fn a_key_created_but_never_stored_is_removed_not_counted() {
    let env = TestEnv::authenticated("iamorphan").await;
    let rotator = rotator(&env);
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    // What a createSecret that died after CreateAccessKey and its tag leaves behind.
    let orphan = iam.create_access_key().user_name(&user).send().await.unwrap().access_key.unwrap();
    let lost = Marks::new(&arn, &keyturn_tests::random_token()).key_tag();
    let tag = aws_sdk_iam::types::Tag::builder().key(&orphan.access_key_id).value(lost).build().unwrap();
    iam.tag_user().user_name(&user).tags(tag).send().await.unwrap();
    assert_eq!(key_ids(&env, &user).await.len(), 2);

    env.rotate(&rotator, &arn).await;
    let keys = key_ids(&env, &user).await;
    assert_eq!(keys.len(), 2);
    assert!(!keys.contains(&orphan.access_key_id), "the orphan must be gone");
    assert!(authenticates(&env, &key_of(&env, &arn, AWSCURRENT).await).await);
}

#[tokio::test]
async fn bad_inputs_are_refused_and_delete_nothing() {
    let env = TestEnv::authenticated("iambad").await;
    let rotator = rotator(&env);
    let iam = aws_sdk_iam::Client::new(&env.sdk);

    let (outside, outside_user) = user_with_secret(&env, "outside", "/").await;
    let (foreign, foreign_user) = user_with_secret(&env, "foreign", PATH).await;
    iam.create_access_key().user_name(&foreign_user).send().await.unwrap(); // made by hand, untagged
    let (unknown, unknown_user) = user_with_secret(&env, "unknown", PATH).await;
    let mut stale = env.value(&unknown, AWSCURRENT).await;
    stale["accessKeyId"] = json!("AKIAIOSFODNN7EXAMPLE");
    env.sm.put_secret_value().secret_id(&unknown).secret_string(stale.to_string()).send().await.unwrap();
    let ghost = env
        .create_secret(
            "ghost",
            &json!({"username": env.unique("nobody"), "accessKeyId": "AKIA0", "secretAccessKey": "x"}),
        )
        .await;
    let malformed = env.create_secret("malformed", &json!({"user": "x"})).await;

    let cases = [
        (&outside, Some(&outside_user), "outside this function's scope"),
        (&foreign, Some(&foreign_user), "is neither in the secret nor created by keyturn"),
        (&unknown, Some(&unknown_user), "is not one of the user's keys in IAM"),
        (&ghost, None, "does not exist"),
        (&malformed, None, "missing key \"username\""),
    ];
    for (arn, user, expected) in cases {
        let before = match user {
            Some(u) => key_ids(&env, u).await,
            None => Vec::new(),
        };
        let current = env.value(arn, AWSCURRENT).await;
        let err = env.rotation_error(&rotator, arn).await;
        assert!(err.to_string().contains(expected), "{arn}: {err}");
        assert!(err.to_string().contains(arn.as_str()), "the error names the secret: {err}");
        assert_eq!(env.value(arn, AWSCURRENT).await, current, "{arn}: AWSCURRENT changed");
        if let Some(u) = user {
            assert_eq!(key_ids(&env, u).await, before, "{arn}: keys changed");
        }
        let stages = env.stages(arn).await;
        let pending = stages.iter().find(|(_, s)| s.contains(AWSPENDING)).map(|(id, _)| id.clone()).unwrap();
        let stored = env.sm.get_secret_value().secret_id(arn.as_str()).version_id(pending).send().await;
        assert!(stored.map(|o| o.secret_string().is_none()).unwrap_or(true), "{arn}: a pending value was stored");
    }
}

#[tokio::test]
async fn rotate_iam_key_binary_rotates_through_the_runtime_api() {
    let env = TestEnv::authenticated("iame2e").await;
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let mut emulator = Emulator::start(&env.h.work.join("emulator-iam.log"));
    let log = env.h.work.join("function-iam.log");
    emulator.run_function(&function_binary("rotate-iam-key"), "rotate-iam-key", &env.iam_rotation_env(PATH), &log);
    let mut history = vec![key_of(&env, &arn, AWSCURRENT).await];
    for _ in 0..3 {
        let token = env.start_rotation(&arn).await;
        emulator.rotate("rotate-iam-key", &arn, &token).unwrap_or_else(|e| panic!("{e}"));
        history.push(key_of(&env, &arn, AWSCURRENT).await);
    }
    let n = history.len();
    assert!(authenticates(&env, &history[n - 1]).await && authenticates(&env, &history[n - 2]).await);
    assert!(!authenticates(&env, &history[n - 3]).await, "the key of two rotations ago is accepted");
    assert!(key_ids(&env, &user).await.len() <= 2);
    let output = std::fs::read_to_string(&log).unwrap();
    assert!(!output.contains("could not tag"), "every new key must be tagged: {output}");
    for (_, secret) in &history {
        assert!(!output.contains(secret.as_str()), "the function's log shows a secret access key");
    }
}

#[tokio::test]
async fn the_previous_key_can_be_deactivated_at_finish() {
    let env = TestEnv::authenticated("iamdeact").await;
    let rotator = built(&env.sdk, &[("KEYTURN_IAM_DEACTIVATE_PREVIOUS", "true")]);
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let token = env.rotate(&rotator, &arn).await;
    env.step(&rotator, &arn, &token, Step::Finish).await.unwrap(); // a rerun is harmless
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let keys = iam.list_access_keys().user_name(&user).send().await.unwrap();
    let status = |id: &str| {
        keys.access_key_metadata().iter().find(|k| k.access_key_id() == Some(id)).and_then(|k| k.status().cloned())
    };
    let (current, previous) = (key_of(&env, &arn, AWSCURRENT).await, key_of(&env, &arn, AWSPREVIOUS).await);
    assert_eq!(status(&current.0), Some(aws_sdk_iam::types::StatusType::Active));
    assert_eq!(status(&previous.0), Some(aws_sdk_iam::types::StatusType::Inactive));
    // moto still accepts inactive keys (AWS does not), so the status is what is checked.
    env.rotate(&rotator, &arn).await;
    assert!(!key_ids(&env, &user).await.contains(&previous.0), "the next rotation deletes it");
}

#[tokio::test]
async fn a_key_created_before_its_tag_is_recovered_through_the_creation_marker() {
    let env = TestEnv::authenticated("iammarker").await;
    let rotator = rotator(&env);
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    // A createSecret that died right after CreateAccessKey: the marker set, the key untagged.
    // Secrets Manager runs that rotation again, with the same token.
    let token = env.start_rotation(&arn).await;
    set_marker(&env, &user, &arn, &token, 5).await;
    let orphan = iam.create_access_key().user_name(&user).send().await.unwrap().access_key.unwrap();

    for step in STEPS {
        env.step(&rotator, &arn, &token, step).await.unwrap_or_else(|e| panic!("{}: {e}", step.as_str()));
    }
    let keys = key_ids(&env, &user).await;
    assert_eq!(keys.len(), 2);
    assert!(!keys.contains(&orphan.access_key_id), "the interrupted step's key must be gone");
    let tags = iam.list_user_tags().user_name(&user).send().await.unwrap();
    assert!(!tags.tags().iter().any(|t| t.key() == CREATING_TAG), "marker left behind");
}

/// Every key id of `user` in IAM, sorted.
async fn sorted_key_ids(env: &TestEnv, user: &str) -> Vec<String> {
    let mut keys = key_ids(env, user).await;
    keys.sort();
    keys
}

/// Whether the token's version of the secret holds a value (createSecret stored one).
async fn pending_value_stored(env: &TestEnv, arn: &str, token: &str) -> bool {
    let stored = env.sm.get_secret_value().secret_id(arn).version_id(token).send().await;
    stored.map(|o| o.secret_string().is_some()).unwrap_or(false)
}

/// Key ids are not secret: a secret that names another user's key id, with a secret
/// access key that is not that key's, must not make keyturn act for that user (delete the
/// key its AWSPREVIOUS names, create a key and store it in the writer's secret).
#[tokio::test]
async fn a_secret_naming_a_victims_key_without_its_secret_changes_nothing() {
    let env = TestEnv::authenticated("iamvictim").await;
    let rotator = rotator(&env);
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    // The victim, in scope, with its own secret and a second key made by hand.
    let (_, victim) = user_with_secret(&env, "victim", PATH).await;
    let other = iam.create_access_key().user_name(&victim).send().await.unwrap().access_key.unwrap();
    let keys = sorted_key_ids(&env, &victim).await;
    let current_id = keys.iter().find(|k| **k != other.access_key_id).unwrap().clone();
    // The writer's secret: AWSPREVIOUS names the victim's second key, AWSCURRENT the
    // victim's first key with a made-up secret access key.
    let wrong = format!("wrong-{}", keyturn_tests::random_token());
    let attack = env
        .create_secret(
            "attack",
            &json!({"username": victim, "accessKeyId": other.access_key_id, "secretAccessKey": "x"}),
        )
        .await;
    let forged = json!({"username": victim, "accessKeyId": current_id, "secretAccessKey": wrong});
    env.sm.put_secret_value().secret_id(&attack).secret_string(forged.to_string()).send().await.unwrap();

    let token = env.start_rotation(&attack).await;
    let err = env.step(&rotator, &attack, &token, Step::Create).await.expect_err("createSecret must fail");
    let message = err.to_string();
    assert!(message.contains(attack.as_str()), "the error names the secret: {message}");
    assert!(message.contains(&format!("does not sign for key {current_id}")), "the error names the problem: {message}");
    assert!(!message.contains(&wrong), "the error shows the secret access key: {message}");
    assert!(!err.is_retryable(), "a refused key is not worth retrying: {message}");
    assert_eq!(sorted_key_ids(&env, &victim).await, keys, "the victim's keys changed");
    assert!(user_tags(&env, &victim).await.is_empty(), "the victim's keys were tagged");
    assert!(!pending_value_stored(&env, &attack, &token).await, "a pending value was stored");
    assert_eq!(env.value(&attack, AWSCURRENT).await, forged);
}

/// Makes room on `user` for a key made by hand (IAM allows two): deletes the key the
/// secret's AWSPREVIOUS names.
async fn delete_previous_by_hand(env: &TestEnv, arn: &str, user: &str) -> String {
    let (id, _) = key_of(env, arn, AWSPREVIOUS).await;
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    iam.delete_access_key().user_name(user).access_key_id(&id).send().await.expect("DeleteAccessKey");
    id
}

/// The user's tags, sorted.
async fn user_tags(env: &TestEnv, user: &str) -> Vec<(String, String)> {
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let out = iam.list_user_tags().user_name(user).send().await.expect("ListUserTags");
    let mut tags: Vec<(String, String)> =
        out.tags().iter().map(|t| (t.key().to_owned(), t.value().to_owned())).collect();
    tags.sort();
    tags
}

/// Runs createSecret for a new rotation, which must fail with `expected` in its message,
/// change none of the user's keys or tags (nothing adopted) and store no pending value.
/// Returns the token.
async fn create_is_refused(env: &TestEnv, rotator: &IamRotator, arn: &str, user: &str, expected: &str) -> String {
    let (keys, tags) = (sorted_key_ids(env, user).await, user_tags(env, user).await);
    let token = env.start_rotation(arn).await;
    let err = env.step(rotator, arn, &token, Step::Create).await.expect_err("createSecret must be refused");
    let message = err.to_string();
    assert!(message.contains(expected), "{arn}: expected {expected:?} in: {message}");
    assert!(message.contains(arn), "the error names the secret: {message}");
    assert!(!err.is_retryable(), "{message}");
    assert_eq!(sorted_key_ids(env, user).await, keys, "{arn}: the user's keys changed");
    assert_eq!(user_tags(env, user).await, tags, "{arn}: the user's tags changed");
    assert!(!pending_value_stored(env, arn, &token).await, "{arn}: a pending value was stored");
    token
}

/// Sets the creation marker on `user` as keyturn writes it for `secret` and `token`, dated
/// `secs_ago` seconds back.
async fn set_marker(env: &TestEnv, user: &str, secret: &str, token: &str, secs_ago: u64) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let value = Marks::new(secret, token).creating_tag(now - secs_ago);
    let marker = aws_sdk_iam::types::Tag::builder().key(CREATING_TAG).value(value).build().unwrap();
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    iam.tag_user().user_name(user).tags(marker).send().await.expect("TagUser");
}

/// The key stored by hand before the first rotation is proven there (AWSCURRENT signs), so
/// keyturn adopts it, tagged for the secret, and revokes it at the second rotation like
/// its own: no manual step. A key made by hand that the secret never held is never
/// deleted, and while one is there nothing is adopted either.
#[tokio::test]
async fn the_key_stored_by_hand_is_adopted_and_revoked_but_other_hand_made_keys_are_never_deleted() {
    let env = TestEnv::authenticated("iamhand").await;
    let rotator = rotator(&env);
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let by_hand = key_of(&env, &arn, AWSCURRENT).await;
    // Another key made by hand, in no version of the secret: refused, nothing adopted.
    let extra = iam.create_access_key().user_name(&user).send().await.unwrap().access_key.unwrap();
    let token = create_is_refused(&env, &rotator, &arn, &user, "is neither in the secret nor created by keyturn").await;
    assert!(user_tags(&env, &user).await.is_empty(), "nothing is adopted while the step is refused");
    assert!(authenticates(&env, &(extra.access_key_id.clone(), extra.secret_access_key.clone())).await);
    // Once it is gone, the same rotation goes through and adopts the stored key.
    iam.delete_access_key().user_name(&user).access_key_id(&extra.access_key_id).send().await.unwrap();
    for step in STEPS {
        env.step(&rotator, &arn, &token, step).await.unwrap_or_else(|e| panic!("{}: {e}", step.as_str()));
    }
    assert_eq!(key_of(&env, &arn, AWSPREVIOUS).await, by_hand);
    let tags = user_tags(&env, &user).await;
    let adopted = Marks::new(&arn, &token).adoption_tag();
    assert!(tags.contains(&(by_hand.0.clone(), adopted)), "the stored key is adopted for this secret: {tags:?}");
    assert!(authenticates(&env, &by_hand).await, "AWSPREVIOUS must stay valid");
    // The second rotation revokes it, its tag with it.
    env.rotate(&rotator, &arn).await;
    assert!(!key_ids(&env, &user).await.contains(&by_hand.0), "the adopted key must be revoked");
    assert!(!authenticates(&env, &by_hand).await);
    assert!(!user_tags(&env, &user).await.iter().any(|(k, _)| *k == by_hand.0), "its tag left behind");
    assert!(authenticates(&env, &key_of(&env, &arn, AWSCURRENT).await).await);
    assert!(authenticates(&env, &key_of(&env, &arn, AWSPREVIOUS).await).await);
}

/// Adoption follows the proof: a secret naming another user's stored key (key ids are not
/// secret) with a made-up secret access key gets it neither adopted nor, later, deleted.
#[tokio::test]
async fn a_key_named_without_its_secret_is_not_adopted() {
    let env = TestEnv::authenticated("iamadopt").await;
    let rotator = rotator(&env);
    let (victims, victim) = user_with_secret(&env, "victim", PATH).await;
    let stored = key_of(&env, &victims, AWSCURRENT).await;
    let forged = json!({"username": victim, "accessKeyId": stored.0, "secretAccessKey": "wrong"});
    let attack = env.create_secret("attack", &forged).await;
    create_is_refused(&env, &rotator, &attack, &victim, &format!("does not sign for key {}", stored.0)).await;
    assert!(user_tags(&env, &victim).await.is_empty(), "the victim's key was tagged");
    // The victim's own rotation adopts it, for the victim's secret.
    let token = env.rotate(&rotator, &victims).await;
    let tags = user_tags(&env, &victim).await;
    assert!(tags.contains(&(stored.0.clone(), Marks::new(&victims, &token).adoption_tag())), "{tags:?}");
}

/// A secret holding another secret's current key (its secret included, so it passes the
/// proof) does not adopt it: re-tagging it would stop the other secret from revoking it.
/// Its own rotations never delete it either.
#[tokio::test]
async fn another_secrets_key_is_never_adopted() {
    let env = TestEnv::authenticated("iamcopy").await;
    let rotator = rotator(&env);
    let (legit, user) = user_with_secret(&env, "legit", PATH).await;
    let first = env.rotate(&rotator, &legit).await;
    let legit_key = key_of(&env, &legit, AWSCURRENT).await; // created and tagged by keyturn
    delete_previous_by_hand(&env, &legit, &user).await; // room for the copy's key
    let copy = env.create_secret("copy", &env.value(&legit, AWSCURRENT).await).await;
    let legit_tag = (legit_key.0.clone(), Marks::new(&legit, &first).key_tag());
    env.rotate(&rotator, &copy).await;
    assert!(user_tags(&env, &user).await.contains(&legit_tag), "the legit secret's tag was replaced");
    assert_eq!(key_of(&env, &copy, AWSPREVIOUS).await, legit_key);
    create_is_refused(
        &env,
        &rotator,
        &copy,
        &user,
        &format!("the AWSPREVIOUS key {} was not created by keyturn for this secret", legit_key.0),
    )
    .await;
    assert!(user_tags(&env, &user).await.contains(&legit_tag));
    assert!(authenticates(&env, &legit_key).await, "the legit secret's key must survive");
}

/// A writer who may create keys by hand (but not delete them) holds a key that passes the
/// AWSCURRENT proof. Its secret must still not get another secret's keys deleted, neither
/// by naming one in AWSPREVIOUS nor by leaving it unnamed (an "orphan").
#[tokio::test]
async fn a_writer_who_makes_keys_cannot_get_another_secrets_keys_deleted() {
    let env = TestEnv::authenticated("iamwriter").await;
    let rotator = rotator(&env);
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let (legit, user) = user_with_secret(&env, "legit", PATH).await;
    env.rotate(&rotator, &legit).await;
    delete_previous_by_hand(&env, &legit, &user).await;
    let legit_key = key_of(&env, &legit, AWSCURRENT).await; // created and tagged by keyturn
    let own = iam.create_access_key().user_name(&user).send().await.unwrap().access_key.unwrap();
    let own_value =
        json!({"username": user, "accessKeyId": own.access_key_id, "secretAccessKey": own.secret_access_key});
    // AWSPREVIOUS names the legit secret's key, AWSCURRENT the writer's own.
    let previous = env
        .create_secret("previous", &json!({"username": user, "accessKeyId": legit_key.0, "secretAccessKey": "x"}))
        .await;
    env.sm.put_secret_value().secret_id(&previous).secret_string(own_value.to_string()).send().await.unwrap();
    // Only the writer's own key: the legit secret's key is in neither version.
    let orphan = env.create_secret("orphan", &own_value).await;
    let expected = format!("the AWSPREVIOUS key {} was not created by keyturn for this secret", legit_key.0);
    create_is_refused(&env, &rotator, &previous, &user, &expected).await;
    create_is_refused(&env, &rotator, &orphan, &user, "is neither in the secret nor created by keyturn").await;
    assert!(authenticates(&env, &legit_key).await, "the legit secret's key must survive");
}

#[tokio::test]
async fn the_secrets_own_stale_marker_does_not_make_hand_made_keys_orphans() {
    let env = TestEnv::authenticated("iamstale").await;
    let rotator = rotator(&env);
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    // The secret's own marker, left by an earlier rotation whose UntagUser failed, then a
    // key made by hand: the next rotation must not take it for its own.
    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let first = env.rotate(&rotator, &arn).await;
    delete_previous_by_hand(&env, &arn, &user).await;
    set_marker(&env, &user, &arn, &first, 5).await;
    let hand = iam.create_access_key().user_name(&user).send().await.unwrap().access_key.unwrap();
    create_is_refused(&env, &rotator, &arn, &user, "is neither in the secret nor created by keyturn").await;
    assert!(key_ids(&env, &user).await.contains(&hand.access_key_id), "the hand-made key must survive");
}

/// Another secret's stale marker on a user a writer points its secret at, rotated with the
/// marker's own token (the writer chooses the token): the key someone else made by hand
/// survives too.
#[tokio::test]
async fn another_secrets_stale_marker_does_not_make_hand_made_keys_orphans() {
    let env = TestEnv::authenticated("iamstale2").await;
    let rotator = rotator(&env);
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let (gone, victim) = user_with_secret(&env, "gone", PATH).await;
    let stale = keyturn_tests::random_token();
    set_marker(&env, &victim, &gone, &stale, 5).await;
    iam.delete_access_key()
        .user_name(&victim)
        .access_key_id(key_of(&env, &gone, AWSCURRENT).await.0)
        .send()
        .await
        .unwrap();
    let admins = iam.create_access_key().user_name(&victim).send().await.unwrap().access_key.unwrap();
    let own = iam.create_access_key().user_name(&victim).send().await.unwrap().access_key.unwrap();
    let writer = env
        .create_secret(
            "writer",
            &json!({"username": victim, "accessKeyId": own.access_key_id, "secretAccessKey": own.secret_access_key}),
        )
        .await;
    let keys = sorted_key_ids(&env, &victim).await;
    env.sm
        .rotate_secret()
        .secret_id(&writer)
        .client_request_token(&stale)
        .rotation_lambda_arn(&env.moto.rotation_lambda_arn)
        .rotation_rules(
            aws_sdk_secretsmanager::types::RotationRulesType::builder().automatically_after_days(30).build(),
        )
        .send()
        .await
        .expect("RotateSecret");
    let err = env.step(&rotator, &writer, &stale, Step::Create).await.expect_err("createSecret must be refused");
    assert!(err.to_string().contains("is neither in the secret nor created by keyturn"), "{err}");
    assert_eq!(sorted_key_ids(&env, &victim).await, keys, "the victim's keys changed");
    assert!(key_ids(&env, &victim).await.contains(&admins.access_key_id));
}

/// If the creation marker cannot be removed, a later rotation could take a key made by hand
/// for its own: the step fails (retryable) instead, and the retry converges.
#[tokio::test]
async fn a_marker_that_cannot_be_removed_fails_the_step_and_a_retry_converges() {
    let env = TestEnv::authenticated("iamuntag").await;
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    // The function's identity, denied UntagUser.
    let function = env.unique("function");
    iam.create_user().user_name(&function).send().await.unwrap();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "iam:UntagUser", "Resource": "*"}
    ]});
    iam.put_user_policy()
        .user_name(&function)
        .policy_name("no-untag")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
    let key = iam.create_access_key().user_name(&function).send().await.unwrap().access_key.unwrap();
    let credentials = Credentials::new(&key.access_key_id, &key.secret_access_key, None, None, "function");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&env.moto.endpoint)
        .credentials_provider(credentials)
        .load()
        .await;
    let denied = built(&sdk, &[]);

    let (arn, user) = user_with_secret(&env, "ci", PATH).await;
    let token = env.start_rotation(&arn).await;
    let err = env.step(&denied, &arn, &token, Step::Create).await.expect_err("createSecret must fail");
    assert!(err.to_string().contains("removing the creation marker"), "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(!pending_value_stored(&env, &arn, &token).await);
    assert_eq!(key_ids(&env, &user).await.len(), 2, "the new key exists, tagged, but is not stored");

    // Retried (the marker can be removed now), the step deletes that key and makes another.
    let rotator = rotator(&env);
    for step in STEPS {
        env.step(&rotator, &arn, &token, step).await.unwrap_or_else(|e| panic!("{}: {e}", step.as_str()));
    }
    let keys = key_ids(&env, &user).await;
    assert_eq!(keys.len(), 2);
    assert!(
        keys.contains(&key_of(&env, &arn, AWSCURRENT).await.0)
            && keys.contains(&key_of(&env, &arn, AWSPREVIOUS).await.0)
    );
    let tags = iam.list_user_tags().user_name(&user).send().await.unwrap();
    assert!(!tags.tags().iter().any(|t| t.key() == CREATING_TAG), "marker left behind");
}
