//! A bad roles file stops the real issue-credentials binary at start, with a message that
//! names the role and the field, and `issue-credentials check` and `keyturn roles-check`
//! (the same parser, for CI) say the same; a good one passes.

use std::process::Command;

use keyturn_tests::lambda::function_binary;
use keyturn_tests::{harness, random_token};

/// Writes `roles` to a file of its own and returns its path.
fn roles_file(roles: &str) -> String {
    let path = harness().work.join(format!("roles-{}.toml", random_token()));
    std::fs::write(&path, roles).expect("write the roles file");
    path.to_str().expect("utf-8 path").to_owned()
}

const GOOD: &str = r#"
[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/deploy"
default_ttl = "15m"
max_ttl = "1h"
"#;

/// One bad role per kind: the file, then what the error must say.
const BAD: &[(&str, &str)] = &[
    (
        r#"[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/deploy"
default_ttl = "15m"
max_ttl = "2h"
"#,
        r#"role "deploy": max_ttl "2h" is over 1h"#,
    ),
    (
        r#"[[role]]
name = "legacy"
kind = "aws-iam-user"
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
default_ttl = "1h"
max_ttl = "1h"
"#,
        r#"role "legacy": permissions_boundary is required"#,
    ),
    (
        r#"[[role]]
name = "pg-iam"
kind = "rds-iam-token"
engine = "postgres"
host = "db.example.com"
port = 5432
region = "us-east-1"
db_user = "app&DBUser=admin"
"#,
        r#"role "pg-iam": db_user "app&DBUser=admin" is not a database user name"#,
    ),
    (
        r#"[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::123456789012:role/deploy"
session_policy = "{}"
admin_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:a"
default_ttl = "15m"
max_ttl = "1h"
"#,
        r#"role "deploy": admin_secret is not a key of kind "aws-sts""#,
    ),
];

#[test]
fn check_accepts_a_good_file_and_names_the_role_and_field_of_a_bad_one() {
    let binary = function_binary("issue-credentials");
    let out = Command::new(&binary).args(["check", &roles_file(GOOD)]).output().expect("run check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (roles, says) in BAD {
        let out = Command::new(&binary).args(["check", &roles_file(roles)]).output().expect("run check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{says}: accepted");
        assert!(stderr.contains(says), "{says:?} not in {stderr:?}");
    }
}

#[test]
fn keyturn_roles_check_judges_every_file_as_the_issuer_does() {
    let cli = function_binary("keyturn");
    let good = roles_file(GOOD);
    let out = Command::new(&cli).args(["roles-check", &good]).output().expect("run keyturn");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{good}: 1 roles, valid\n"));
    for (roles, says) in BAD {
        let bad = roles_file(roles);
        let out = Command::new(&cli).args(["roles-check", &good, &bad]).output().expect("run keyturn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{says}: {stderr}");
        assert!(stderr.contains(&format!("{bad}: {says}")), "{says:?} not in {stderr:?}");
    }
    let out = Command::new(&cli).arg("roles-check").output().expect("run keyturn");
    assert_eq!(out.status.code(), Some(2), "no file is a usage error");
}

#[test]
fn the_function_refuses_to_start_on_a_bad_roles_file() {
    let binary = function_binary("issue-credentials");
    for (roles, says) in BAD {
        // No Runtime API is given: a good file would make the function wait for one; a bad
        // one must stop it before.
        let out = Command::new(&binary)
            .env_clear()
            .env("KEYTURN_ROLES_FILE", roles_file(roles))
            .env("KEYTURN_LEASE_TABLE", "leases")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
            .output()
            .expect("run the function");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{says}: started");
        assert!(stderr.starts_with(&format!("Error: roles file: {says}")), "{says:?} not in {stderr:?}");
        // And once in the function's log, as an error line.
        let logged: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        assert!(
            logged.iter().any(|l| l["level"] == "ERROR" && l["error"].as_str().is_some_and(|e| e.contains(says))),
            "{logged:?}"
        );
    }
}
