//! The real function binaries at `AWS_LAMBDA_LOG_LEVEL=TRACE`, the most an operator can ask
//! for: whole rotations through the Lambda Runtime API emulator, then everything the
//! function process printed (stdout and stderr) is searched for every secret value of
//! every version. The output must still hold keyturn's own DEBUG lines, so a function that
//! logged nothing could not pass.
//!
//! The tests use the moto server that checks signatures (the IAM rotation needs it), so
//! every client here signs with its administrator's key.

use std::path::Path;

use keyturn::rotation::database::Strategy;
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::{random_token, TestEnv};
use serde_json::{json, Value};

/// Runs the four steps of `rounds` rotations of `arn` through `function`.
async fn rotate(env: &TestEnv, emulator: &Emulator, function: &str, arn: &str, rounds: usize) {
    for _ in 0..rounds {
        let token = env.start_rotation(arn).await;
        emulator.rotate(function, arn, &token).unwrap_or_else(|e| panic!("{function} {e}"));
    }
}

/// The function's environment with the harness administrator's key (moto checks
/// signatures) and logging turned all the way up: TRACE, plus the switches the AWS SDK's
/// own TRACE lines advertise for printing the bodies they redact.
fn at_trace(env: &TestEnv, vars: Vec<(String, String)>) -> Vec<(String, String)> {
    let (key_id, secret) = env.h.moto_auth();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY"))
        .collect();
    vars.extend([
        ("AWS_ACCESS_KEY_ID".to_owned(), key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), secret.clone()),
        ("AWS_LAMBDA_LOG_LEVEL".to_owned(), "TRACE".to_owned()),
        ("LOG_SENSITIVE_BODIES".to_owned(), "true".to_owned()),
        ("LOG_SIGNABLE_BODY".to_owned(), "true".to_owned()),
    ]);
    vars
}

/// Asserts the function's output holds none of `secrets` and does hold keyturn's own
/// DEBUG lines `expected` (and the line per step, at INFO).
fn assert_output(log: &Path, secrets: &[String], expected: &[&str]) {
    let output = std::fs::read_to_string(log).unwrap();
    for secret in secrets {
        assert!(!secret.is_empty());
        if let Some(at) = output.find(secret.as_str()) {
            // Name the line by its level and message, without printing the secret again.
            let line = output[..at].rsplit('\n').next().unwrap_or_default();
            let level = line.split("\"level\":").nth(1).map(|l| l.chars().take(8).collect::<String>());
            let message = line.split("\"message\":").nth(1).map(|m| m.chars().take(60).collect::<String>());
            panic!("{} shows a secret value, in a line with level {level:?}, message {message:?}", log.display());
        }
    }
    let lines: Vec<Value> = output.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(lines.iter().any(|l| l["message"] == "rotation step"), "{}: no line per step", log.display());
    for message in expected {
        assert!(
            lines.iter().any(|l| l["message"] == *message && l["level"] == "DEBUG"),
            "{}: keyturn's DEBUG line {message:?} is missing",
            log.display()
        );
    }
}

#[tokio::test]
async fn a_database_rotation_at_trace_prints_no_password() {
    let env = TestEnv::authenticated("trace_db").await;
    let (user, password) = (env.unique("app"), random_token());
    env.create_role(&user, &password).await;
    let admin_arn = env.create_secret("admin", &env.admin_secret()).await;
    let mut secret = env.user_secret(&user, &password);
    secret["masterarn"] = json!(admin_arn);
    let arn = env.create_secret("app", &secret).await;

    let function = "rotate-database";
    let mut emulator = Emulator::start(&env.h.work.join("emulator-trace-db.log"));
    let log = env.h.work.join("function-trace-db.log");
    let vars = at_trace(&env, env.function_env(Strategy::AlternatingUsers));
    emulator.run_function(&function_binary(function), function, &vars, &log);
    // Two rounds: the first creates the clone, the second rotates the original.
    rotate(&env, &emulator, function, &arn, 2).await;

    let mut secrets = env.all_passwords(&arn).await;
    secrets.extend(env.all_passwords(&admin_arn).await);
    secrets.push(env.h.moto_auth().1.clone());
    assert!(secrets.len() >= 4, "{secrets:?}");
    assert_output(&log, &secrets, &["rotation event received", "role upserted"]);
}

#[tokio::test]
async fn an_iam_key_rotation_at_trace_prints_no_secret_access_key() {
    let env = TestEnv::authenticated("trace_iam").await;
    let iam = aws_sdk_iam::Client::new(&env.sdk);
    let user = env.unique("ci");
    iam.create_user().user_name(&user).path("/keyturn/").send().await.expect("CreateUser");
    let key = iam.create_access_key().user_name(&user).send().await.expect("CreateAccessKey").access_key.unwrap();
    let secret = json!({"username": user, "accessKeyId": key.access_key_id, "secretAccessKey": key.secret_access_key});
    let arn = env.create_secret("ci", &secret).await;

    let function = "rotate-iam-key";
    let mut emulator = Emulator::start(&env.h.work.join("emulator-trace-iam.log"));
    let log = env.h.work.join("function-trace-iam.log");
    let vars: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", env.moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("KEYTURN_IAM_PATH_PREFIX", "/keyturn/"),
        ("KEYTURN_IAM_TEST_TIMEOUT_SECS", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    emulator.run_function(&function_binary(function), function, &at_trace(&env, vars), &log);
    // Three rounds: the third deletes the key of two rotations ago.
    rotate(&env, &emulator, function, &arn, 3).await;

    let mut secrets = env.all_values_of(&arn, "secretAccessKey").await;
    secrets.push(env.h.moto_auth().1.clone());
    assert!(secrets.len() >= 4, "{secrets:?}");
    assert_output(&log, &secrets, &["rotation event received"]);
}
