//! A caller of a database role that holds many leases at once, each with its own
//! connection limit, against a PostgreSQL of its own (this file's process has its own
//! server, `max_connections = 200`, so the other tests' connections are not taken).

use keyturn_tests::lease::{call, deploy, Engine, CI};

/// A caller allowed role `ci` (no `max_leases`: the default is none) issues lease after
/// lease and opens every session each may (here 40 per lease) until the server has no
/// connection left for anyone but its superusers. The per-user `connection_limit` holds
/// for each lease, but nothing bounds their sum: keyturn's admin (RDS-like, no reserved
/// slot) can no longer log in, so a container without a kept admin session (a cold
/// issuer or reaper) cannot revoke any of those leases, and PostgreSQL's `VALID UNTIL`
/// does not end sessions already open: they outlive their expiry for as long as the
/// holder keeps them and every new issue on that server fails.
#[tokio::test]
async fn review_a_caller_with_many_leases_takes_every_connection_and_blocks_revocation() {
    let d = deploy("revmanyconns", Engine::Postgres, "connection_limit = 40").await;
    let mut sessions = Vec::new();
    let mut leases = Vec::new();
    'issue: for _ in 0..10 {
        let (status, answer) =
            call(&d.service, "POST", "/v1/credentials/ci", Some(r#"{"ttl_seconds": 600}"#), CI).await;
        if status != 201 {
            break;
        }
        let text = |k: &str| answer[k].as_str().unwrap().to_owned();
        let (user, password) = (text("username"), text("password"));
        leases.push(text("lease_id"));
        for _ in 0..40 {
            match d.env.pg_login(&user, &password).await {
                Ok(session) => sessions.push(session),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS) => {
                    if e.to_string().contains("too many connections for role") {
                        continue 'issue;
                    }
                    break 'issue;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(!leases.is_empty());
    let cold = d.env.lease_service(&d.vars, 0);
    let (status, body) = call(&cold, "DELETE", &format!("/v1/leases/{}", leases[0]), None, CI).await;
    let held = sessions.len();
    drop(sessions);
    assert_eq!(
        status,
        204,
        "a caller holding {} leases and {held} sessions locked keyturn's admin out of the server: {body}",
        leases.len()
    );
}
