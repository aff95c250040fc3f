//! A caller of a database role that holds many leases at once, each with its own
//! connection limit, against a PostgreSQL of its own (this file's process has its own
//! server, `max_connections = 200`, so the other tests' connections are not taken).

use keyturn_tests::lease::{call, deploy, Engine, CI};

/// A caller allowed role `ci` issues lease after lease and opens every session each may
/// (10 per lease). Each lease's `connection_limit` holds, and the role's `max_leases` (4)
/// bounds their sum below the server's `max_connections` (200), as docs/dynamic-credentials.md says
/// to set them: however many sessions the caller holds, keyturn's admin (RDS-like, no reserved
/// slot) still logs in, so a cold container revokes a lease and ends its sessions. Without
/// `max_leases` nothing bounds the sum (the review's finding: 5 leases of 40 held 196
/// sessions and a cold revocation got 503), which docs/dynamic-credentials.md documents.
#[tokio::test]
async fn a_caller_holding_every_lease_and_session_it_may_cannot_lock_out_revocation() {
    let d = deploy("manyconns", Engine::Postgres, "connection_limit = 10\nmax_leases = 4").await;
    let mut sessions = Vec::new();
    let mut leases = Vec::new();
    'issue: for _ in 0..10 {
        let (status, answer) =
            call(&d.service, "POST", "/v1/credentials/ci", Some(r#"{"ttl_seconds": 600}"#), CI).await;
        if status != 201 {
            assert_eq!(status, 429, "{answer}");
            break;
        }
        let text = |k: &str| answer[k].as_str().unwrap().to_owned();
        let (user, password) = (text("username"), text("password"));
        leases.push((text("lease_id"), user.clone()));
        for _ in 0..20 {
            match d.env.pg_login(&user, &password).await {
                Ok(session) => sessions.push((user.clone(), session)),
                Err(e) if e.as_db_error().is_some_and(|d| d.message().starts_with("too many connections for role")) => {
                    continue 'issue
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!((leases.len(), sessions.len()), (4, 40), "max_leases and connection_limit bound the caller");
    let cold = d.env.lease_service(&d.vars, 0);
    let (lease, user) = &leases[0];
    let (status, body) = call(&cold, "DELETE", &format!("/v1/leases/{lease}"), None, CI).await;
    assert_eq!(status, 204, "{body}");
    for (owner, session) in &sessions {
        if owner == user {
            assert!(session.simple_query("SELECT 1").await.is_err(), "the revoked lease's sessions are ended");
        }
    }
}
