//! The real rotate-database binary under cargo-lambda's Lambda Runtime API emulator,
//! invoked as Secrets Manager invokes it, one deployment (emulator and process) per
//! strategy, the strategy set by the environment as in a real deployment.

use keyturn::rotation::database::Strategy;
use keyturn::rotation::store::{AWSCURRENT, AWSPREVIOUS};
use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::{random_token, TestEnv};
use serde_json::json;

const FUNCTION: &str = "rotate-database";

fn invoke(env: &TestEnv, emulator: &Emulator, event: serde_json::Value) -> Result<String, String> {
    let file = env.h.work.join(format!("{}.json", random_token()));
    std::fs::write(&file, event.to_string()).unwrap();
    emulator.invoke(FUNCTION, &file)
}

#[tokio::test]
async fn rotate_database_binary_rotates_through_the_runtime_api() {
    let env = TestEnv::new("e2e").await;
    let binary = function_binary(FUNCTION);
    let mut logs = Vec::new();
    let mut emulators = Vec::new();
    for (name, strategy) in [("single", Strategy::SingleUser), ("alternating", Strategy::AlternatingUsers)] {
        let mut emulator = Emulator::start(&env.h.work.join(format!("emulator-{name}.log")));
        let log = env.h.work.join(format!("function-{name}.log"));
        emulator.run_function(&binary, FUNCTION, &env.function_env(strategy), &log);
        logs.push(log);
        emulators.push(emulator);
    }

    // Each deployment rotates a PostgreSQL and a MariaDB secret: the engine is the
    // secret's, the strategy the deployment's.
    let mut secrets = Vec::new();
    for (deployment, name) in [(0, "single"), (1, "alt")] {
        for mariadb in [false, true] {
            let name = format!("{name}{}", if mariadb { "_m" } else { "_p" });
            let user = env.unique(&name);
            let password = random_token();
            let mut secret = if mariadb {
                env.create_mariadb_account(&user, &password, "").await;
                env.mariadb_secret(&user, &password)
            } else {
                env.create_role(&user, &password).await;
                env.user_secret(&user, &password)
            };
            if deployment == 1 {
                let admin = if mariadb { env.mariadb_admin_secret() } else { env.admin_secret() };
                secret["masterarn"] = json!(env.create_secret(&format!("{name}-admin"), &admin).await);
            }
            let arn = env.create_secret(&name, &secret).await;
            secrets.push((deployment, arn, user, password, mariadb));
        }
    }

    for (deployment, arn, user, first_password, mariadb) in &secrets {
        let (emulator, function) = (&emulators[*deployment], ["single-user", "alternating-users"][*deployment]);
        let login = |u: String, p: String| {
            let env = &env;
            async move {
                match mariadb {
                    true => env.can_login_mariadb(&u, &p).await,
                    false => env.can_login(&u, &p).await,
                }
            }
        };
        let mut previous_password = first_password.clone();
        for _ in 0..3 {
            let token = env.start_rotation(arn).await;
            emulator.rotate(FUNCTION, arn, &token).unwrap_or_else(|e| panic!("{function} {e}"));
            let (u, p) = env.login_of(arn, AWSCURRENT).await;
            assert!(login(u.clone(), p.clone()).await, "{function} {arn}: AWSCURRENT does not log in");
            if *deployment == 0 {
                assert_eq!(&u, user);
                assert!(!login(user.clone(), previous_password).await, "{function} {arn}: old password still works");
            } else {
                let (pu, pp) = env.login_of(arn, AWSPREVIOUS).await;
                assert!(login(pu, pp).await, "{function} {arn}: AWSPREVIOUS must stay valid");
            }
            previous_password = p;
        }
    }

    // Bad input comes back as a Lambda error naming the problem.
    let (arn, emulator) = (&secrets[0].1, &emulators[0]);
    let err =
        invoke(&env, emulator, json!({"Step": "rotateSecret", "SecretId": arn, "ClientRequestToken": random_token()}))
            .unwrap_err();
    // cargo lambda wraps long messages, so check the error type and a short phrase.
    assert!(err.contains("UnknownStep") && err.contains("\"rotateSecret\""), "{err}");
    let err =
        invoke(&env, emulator, json!({"Step": "setSecret", "SecretId": arn, "ClientRequestToken": random_token()}))
            .unwrap_err();
    assert!(err.contains("UnknownToken") && err.contains("is not a version"), "{err}");

    // One JSON line per step, and no password anywhere in the function's output.
    let mut passwords = Vec::new();
    for (_, arn, ..) in &secrets {
        passwords.extend(env.all_passwords(arn).await);
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        let steps: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "rotation step")
            .collect();
        assert!(steps.len() >= 24, "{}: expected a log line per step, got {}", log.display(), steps.len());
        for line in &steps {
            for key in ["secret_arn", "step", "token", "strategy", "outcome", "duration_ms"] {
                assert!(!line[key].is_null(), "log line without {key}: {line}");
            }
        }
        for p in &passwords {
            assert!(!text.contains(p.as_str()), "{} shows a password", log.display());
        }
    }
}
