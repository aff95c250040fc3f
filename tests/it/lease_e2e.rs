//! The real issue-credentials and reap-leases binaries under cargo-lambda's Lambda Runtime
//! API emulator, deployed as SAM deploys them (one roles file, one lease table, the
//! environment the template sets) with logging at TRACE: API Gateway 2.0 events in, HTTP
//! responses out, for a PostgreSQL role and a MariaDB role. Then every password issued is
//! searched for in both functions' output and in PostgreSQL's statement log.

use keyturn_tests::lambda::{function_binary, Emulator};
use keyturn_tests::lease::CI;
use keyturn_tests::{apigw, random_token, TestEnv};
use serde_json::{json, Value};

const ISSUER: &str = "issue-credentials";
const REAPER: &str = "reap-leases";

fn request(emulator: &Emulator, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    apigw::response(&emulator.invoke_json(ISSUER, &apigw::request(method, path, body, CI)))
}

#[tokio::test]
async fn the_issuer_and_reaper_binaries_serve_leases_and_print_no_password() {
    // On the MariaDB whose event scheduler is ON, so the server enforces the expiry too.
    let env = TestEnv::new("lease_e2e").await.with_event_scheduler();
    let pg_admin = env.create_secret("pg-admin", &env.admin_secret()).await;
    let maria_admin = env.create_secret("maria-admin", &env.mariadb_admin_secret()).await;
    let (pg_group, pg_table) = env.pg_group_with_table("grp").await;
    let (maria_group, _) = env.mariadb_group_with_table("mgrp").await;
    let prefix = format!("e{}_", &random_token()[..6]);
    let roles = format!(
        r#"username_prefix = "{prefix}"
[[role]]
name = "pg"
kind = "database"
admin_secret = "{pg_admin}"
groups = ["{pg_group}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]

[[role]]
name = "maria"
kind = "database"
admin_secret = "{maria_admin}"
groups = ["{maria_group}"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::123456789012:role/ci-runner"]
"#
    );
    let mut vars = env.lease_env(&roles).await;
    vars.push(("AWS_LAMBDA_LOG_LEVEL".into(), "TRACE".into()));
    let mut emulator = Emulator::start(&env.h.work.join("emulator-lease.log"));
    let issuer_log = env.h.work.join("function-issue-credentials.log");
    let reaper_log = env.h.work.join("function-reap-leases.log");
    emulator.run_function(&function_binary(ISSUER), ISSUER, &vars, &issuer_log);
    // The reaper runs two minutes ahead: the 60-second leases below are expired for it.
    let mut reaper_vars = vars.clone();
    reaper_vars.push(("KEYTURN_TEST_CLOCK_OFFSET_SECS".into(), "120".into()));
    emulator.run_function(&function_binary(REAPER), REAPER, &reaper_vars, &reaper_log);

    let mut passwords = Vec::new();
    // PostgreSQL: issue, use, renew, revoke.
    let (status, pg) = request(&emulator, "POST", "/v1/credentials/pg", Some(r#"{"ttl_seconds": 600}"#));
    assert_eq!(status, 201, "{pg}");
    let (user, password) = (pg["username"].as_str().unwrap(), pg["password"].as_str().unwrap());
    passwords.push(password.to_owned());
    let session = env.pg_login(user, password).await.expect("the issued user logs in");
    session.query_one(&format!("SELECT id FROM {pg_table}"), &[]).await.expect("through the group's grant");
    let lease = pg["lease_id"].as_str().unwrap();
    let (status, renewed) =
        request(&emulator, "POST", &format!("/v1/leases/{lease}/renew"), Some(r#"{"ttl_seconds": 1200}"#));
    assert_eq!((status, renewed["capped"].as_bool()), (200, Some(false)), "{renewed}");
    let (status, _) = request(&emulator, "DELETE", &format!("/v1/leases/{lease}"), None);
    assert_eq!(status, 204);
    assert!(session.simple_query("SELECT 1").await.is_err(), "revocation ends the session");
    assert!(!env.can_login(user, password).await);

    // MariaDB: issued with the server's own expiry (an event, the scheduler being ON).
    let (status, maria) = request(&emulator, "POST", "/v1/credentials/maria", Some(r#"{"ttl_seconds": 60}"#));
    assert_eq!((status, maria["server_expiry"].as_bool()), (201, Some(true)), "{maria}");
    let (muser, mpassword) = (maria["username"].as_str().unwrap(), maria["password"].as_str().unwrap());
    passwords.push(mpassword.to_owned());
    assert!(env.can_login_mariadb(muser, mpassword).await, "the issued MariaDB user logs in");

    // A PostgreSQL lease of a minute; the reaper, two minutes on, revokes both.
    let (status, short) = request(&emulator, "POST", "/v1/credentials/pg", Some(r#"{"ttl_seconds": 60}"#));
    assert_eq!(status, 201, "{short}");
    passwords.push(short["password"].as_str().unwrap().to_owned());
    // The caller's live leases: those two, not the one revoked; none once reaped.
    let listed_ids = || {
        let (status, listed) = request(&emulator, "GET", "/v1/leases", None);
        assert_eq!(status, 200, "{listed}");
        let mut ids: Vec<String> =
            listed["leases"].as_array().unwrap().iter().map(|l| l["lease_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let mut live = [maria["lease_id"].as_str().unwrap().to_owned(), short["lease_id"].as_str().unwrap().to_owned()];
    live.sort();
    assert_eq!(listed_ids(), live);
    let report = emulator.invoke_json(REAPER, &json!({"source": "aws.events", "detail-type": "Scheduled Event"}));
    assert_eq!((report["revoked"].as_u64(), report["failed"].as_u64()), (Some(2), Some(0)), "{report}");
    assert_eq!(listed_ids(), Vec::<String>::new());
    assert!(!env.can_login(short["username"].as_str().unwrap(), short["password"].as_str().unwrap()).await);
    assert!(!env.can_login_mariadb(muser, mpassword).await);

    let (status, roles) = request(&emulator, "GET", "/v1/roles", None);
    assert_eq!((status, roles["roles"].as_array().map(Vec::len)), (200, Some(2)));
    let mut outside = apigw::request("POST", "/v1/credentials/pg", None, CI);
    outside["requestContext"]["authorizer"] = Value::Null;
    let (status, refused) = apigw::response(&emulator.invoke_json(ISSUER, &outside));
    assert_eq!((status, refused["code"].as_str()), (403, Some("forbidden")), "an event without IAM context");

    let server_log = std::fs::read_to_string(&env.h.pg.log_file).expect("read postgres.log");
    for (name, log) in [(ISSUER, &issuer_log), (REAPER, &reaper_log)] {
        let output = std::fs::read_to_string(log).unwrap();
        for password in &passwords {
            assert!(!output.contains(password.as_str()), "{name}'s output shows an issued password");
            assert!(!server_log.contains(password.as_str()), "PostgreSQL's log shows an issued password");
        }
        let lines: Vec<Value> = output.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let expected = if name == ISSUER { "credentials issued" } else { "reaper run" };
        assert!(lines.iter().any(|l| l["message"] == expected), "{name} logged no {expected:?} line");
    }
}
