//! The service's decisions under faults, with the in-memory fakes of [`crate::lease::fakes`].
use std::sync::atomic::Ordering;

use secrecy::ExposeSecret;

use std::time::{Duration, Instant};

use super::*;
use crate::backend::aws;
use crate::lease::fakes::*;
use crate::lease::kind::{aws_iam_user, aws_sts, database, rds_iam_token};
use crate::lease::name::lease_id_of;
use crate::lease::service::revoke::{retry_delay, RETRY_MAX};
use crate::lease::store::LeaseStore as _;
use crate::lease::{Credential, LeaseState};

fn limits() -> ReapLimits {
    ReapLimits { batch: 100, concurrency: 4, deadline: Instant::now() + Duration::from_secs(60) }
}

fn leases(s: &Service) -> Vec<Lease> {
    s.io.store.leases.lock().unwrap().values().cloned().collect()
}

#[test]
fn a_caller_outside_allowed_principals_gets_403_and_nothing_is_created() {
    block_on(async {
        let s = service(None);
        for caller in [STRANGER, OPS, "arn:aws:iam::123456789012:root", ""] {
            assert_eq!(s.issue(caller, "ci", None).await.unwrap_err().status(), 403, "{caller}");
        }
        assert_eq!(s.issue(CI, "nope", None).await.unwrap_err().status(), 403, "as for a role it may not have");
        assert_eq!(s.issue(CI, "ci", Some(Duration::from_secs(7200))).await.unwrap_err().status(), 400);
        assert!(leases(&s).is_empty());
        assert!(s.io.users.users.lock().unwrap().is_empty());
        assert_eq!(s.io.admins.secrets().reads.load(Ordering::SeqCst), 0, "a refused request reads no admin secret");
    });
}

#[test]
fn issue_writes_the_lease_then_the_user_with_the_lease_expiry() {
    block_on(async {
        let s = service(None);
        let issued = s.issue(CI, "ci", Some(Duration::from_secs(600))).await.unwrap();
        let lease = &issued.lease;
        assert_eq!(lease.expires_at, 1_000_600);
        assert_eq!(lease_id_of("kt_", &lease.username), Some(lease.lease_id.as_str()));
        assert_eq!(s.io.users.users.lock().unwrap().get(&lease.username), Some(&1_000_600));
        assert_eq!(s.io.store.get(&lease.lease_id).await.unwrap().unwrap().caller_arn, CI);
        let Secret::Database(database::Secret { password, .. }) = &issued.secret else { panic!("{:?}", issued.secret) };
        assert_eq!(password.expose_secret().len(), 32);
    });
}

#[test]
fn max_leases_refuses_with_429_and_creates_nothing() {
    block_on(async {
        let s = service(Some(2));
        let a = s.issue(CI, "ci", None).await.unwrap();
        s.issue(CI, "ci", None).await.unwrap();
        let e = s.issue(CI, "ci", None).await.unwrap_err();
        assert_eq!((e.status(), e.to_string().contains("2 live leases")), (429, true), "{e}");
        assert_eq!(s.io.users.users.lock().unwrap().len(), 2);
        s.revoke(CI, &a.lease.lease_id).await.unwrap();
        s.issue(CI, "ci", None).await.unwrap();
    });
}

#[test]
fn only_the_holder_or_an_admin_may_renew_or_revoke() {
    block_on(async {
        let s = service(None);
        let id = s.issue(CI, "ci", None).await.unwrap().lease.lease_id;
        for caller in [OTHER_CI, STRANGER] {
            assert_eq!(s.renew(caller, &id, None).await.unwrap_err().status(), 403);
            assert_eq!(s.revoke(caller, &id).await.unwrap_err().status(), 403);
        }
        assert_eq!(s.revoke(CI, "notaleaseid").await.unwrap_err().status(), 404);
        assert_eq!(s.revoke(CI, "abcdefghij0123456789").await.unwrap_err().status(), 404);
        s.renew(OPS, &id, Some(Duration::from_secs(1800))).await.unwrap();
        s.revoke(OPS, &id).await.unwrap();
        let lease = s.io.store.get(&id).await.unwrap().unwrap();
        assert_eq!((lease.state, lease.revoked_by.as_deref()), (LeaseState::Revoked, Some(OPS)));
        assert!(s.io.users.users.lock().unwrap().is_empty());
        s.revoke(CI, &id).await.unwrap();
    });
}

#[test]
fn a_caller_lists_its_own_live_leases_only() {
    block_on(async {
        let s = service(None);
        let ttl = |secs| Some(Duration::from_secs(secs));
        let long = s.issue(CI, "ci", ttl(3600)).await.unwrap().lease;
        let short = s.issue(CI, "ci", ttl(600)).await.unwrap().lease;
        let token = s.issue(CI, "pg-iam", None).await.unwrap().lease;
        let other = s.issue(OTHER_CI, "ci", ttl(60)).await.unwrap().lease;
        let ids = |leases: Vec<Lease>| leases.into_iter().map(|l| l.lease_id).collect::<Vec<_>>();
        assert_eq!(ids(s.list(CI).await.unwrap()), ids(vec![short.clone(), token.clone(), long.clone()]));
        assert_eq!(ids(s.list(OTHER_CI).await.unwrap()), [other.lease_id], "another session of the role");
        for nobody in [OPS, STRANGER, "", "arn:aws:iam::123456789012:root"] {
            assert_eq!(s.list(nobody).await.unwrap(), [], "{nobody:?}: an admin acts on leases, holds none");
        }

        // Revoked leases disappear, by the holder or by the reaper; one failing to be
        // revoked is still there (its user may still exist).
        s.revoke(CI, &short.lease_id).await.unwrap();
        *s.io.users.fail_deletes.lock().unwrap() = true;
        assert_eq!(s.revoke(OPS, &long.lease_id).await.unwrap_err().status(), 503);
        let listed = s.list(CI).await.unwrap();
        assert_eq!(ids(listed.clone()), ids(vec![token.clone(), long.clone()]));
        assert_eq!(listed[1].state, LeaseState::Revoking);
        *s.io.users.fail_deletes.lock().unwrap() = false;
        s.io.clock.0.store(token.expires_at, Ordering::SeqCst);
        s.reap(limits()).await.unwrap();
        assert_eq!(s.list(CI).await.unwrap(), []);
    });
}

#[test]
fn renewal_moves_the_database_expiry_and_stops_at_max_ttl() {
    block_on(async {
        let s = service(None);
        let issued = s.issue(CI, "ci", Some(Duration::from_secs(600))).await.unwrap();
        let (id, user) = (issued.lease.lease_id, issued.lease.username);
        s.io.clock.0.store(1_000_300, Ordering::SeqCst);
        let r = s.renew(CI, &id, Some(Duration::from_secs(900))).await.unwrap();
        assert_eq!((r.lease.expires_at, r.capped), (1_001_200, false));
        assert_eq!(s.io.users.users.lock().unwrap()[&user], 1_001_200);
        s.io.clock.0.store(1_001_000, Ordering::SeqCst);
        let r = s.renew(CI, &id, Some(Duration::from_secs(3600))).await.unwrap();
        assert_eq!((r.lease.expires_at, r.capped), (1_003_600, true));
        assert_eq!(s.renew(CI, &id, None).await.unwrap_err().code(), "not_extended");
    });
}

#[test]
fn the_reaper_revokes_expired_leases_only() {
    block_on(async {
        let s = service(None);
        let short = s.issue(CI, "ci", Some(Duration::from_secs(60))).await.unwrap().lease;
        let long = s.issue(CI, "ci", Some(Duration::from_secs(3600))).await.unwrap().lease;
        s.io.clock.0.store(1_000_060, Ordering::SeqCst);
        let report = s.reap(limits()).await.unwrap();
        assert_eq!((report.due, report.revoked), (1, 1));
        assert!(!s.io.users.has(&short.username) && s.io.users.has(&long.username));
        let short = s.io.store.get(&short.lease_id).await.unwrap().unwrap();
        assert_eq!((short.state, short.revoked_by.as_deref()), (LeaseState::Revoked, Some(REAPER)));
    });
}

#[test]
fn a_stale_read_of_a_renewed_lease_does_not_revoke_it() {
    block_on(async {
        let s = service(None);
        let stale = s.issue(CI, "ci", Some(Duration::from_secs(60))).await.unwrap().lease;
        s.renew(CI, &stale.lease_id, Some(Duration::from_secs(600))).await.unwrap();
        s.io.clock.0.store(1_000_100, Ordering::SeqCst);
        // What an eventually consistent index could still show the reaper.
        let kept = s.revoke_lease(stale.clone(), REAPER, true).await.unwrap();
        assert_eq!(kept.state, LeaseState::Active);
        assert!(s.io.users.has(&stale.username));
    });
}

#[test]
fn a_failed_revocation_is_recorded_and_retried_with_backoff_until_it_succeeds() {
    block_on(async {
        let s = service(None);
        let lease = s.issue(CI, "ci", Some(Duration::from_secs(60))).await.unwrap().lease;
        *s.io.users.fail_deletes.lock().unwrap() = true;
        let e = s.revoke(CI, &lease.lease_id).await.unwrap_err();
        assert_eq!(e.status(), 503);
        let l = s.io.store.get(&lease.lease_id).await.unwrap().unwrap();
        assert_eq!((l.state, l.attempts, l.retry_at), (LeaseState::Revoking, 1, Some(1_000_060)));
        assert!(l.last_error.as_deref().unwrap().contains("cannot connect"), "{:?}", l.last_error);
        s.io.clock.0.store(1_000_060, Ordering::SeqCst);
        assert_eq!(s.reap(limits()).await.unwrap().failed, 1);
        let l = s.io.store.get(&lease.lease_id).await.unwrap().unwrap();
        assert_eq!((l.attempts, l.retry_at), (2, Some(1_000_180)), "the wait doubles");
        s.io.clock.0.store(1_000_179, Ordering::SeqCst);
        assert_eq!(s.reap(limits()).await.unwrap().due, 0, "not due before its retry time");
        *s.io.users.fail_deletes.lock().unwrap() = false;
        s.io.clock.0.store(1_000_180, Ordering::SeqCst);
        assert_eq!(s.reap(limits()).await.unwrap().revoked, 1);
        let l = s.io.store.get(&lease.lease_id).await.unwrap().unwrap();
        assert_eq!((l.state, l.attempts), (LeaseState::Revoked, 3));
        assert!(!s.io.users.has(&lease.username));
        assert_eq!(retry_delay(40), RETRY_MAX);
    });
}

#[test]
fn a_failed_creation_leaves_no_user_and_no_live_lease() {
    block_on(async {
        let s = service(Some(1));
        *s.io.users.fail_creates.lock().unwrap() = true;
        assert_eq!(s.issue(CI, "ci", None).await.unwrap_err().status(), 503);
        let all = leases(&s);
        assert_eq!((all.len(), all[0].state), (1, LeaseState::Revoked));
        assert!(all[0].last_error.as_deref().unwrap().starts_with("issuing failed"));
        *s.io.users.fail_creates.lock().unwrap() = false;
        s.issue(CI, "ci", None).await.expect("the failed issue holds no slot of max_leases");
    });
}

#[test]
fn a_rotated_admin_secret_is_read_again_when_the_database_refuses_it() {
    block_on(async {
        let s = service(None);
        s.issue(CI, "ci", None).await.unwrap();
        assert_eq!(s.io.admins.secrets().reads.load(Ordering::SeqCst), 1, "read once, then cached");
        s.issue(CI, "ci", None).await.unwrap();
        assert_eq!(s.io.admins.secrets().reads.load(Ordering::SeqCst), 1);
        *s.io.users.admin_password.lock().unwrap() = "p2".into();
        s.io.admins.secrets().values.lock().unwrap().insert(ADMIN.into(), admin_secret("p2"));
        s.issue(CI, "ci", None).await.unwrap();
        assert_eq!(s.io.admins.secrets().reads.load(Ordering::SeqCst), 2);
        *s.io.users.admin_password.lock().unwrap() = "p3".into();
        assert_eq!(s.issue(CI, "ci", None).await.unwrap_err().status(), 503);
    });
}

#[test]
fn the_sweep_drops_users_of_keyturn_form_without_a_live_lease_only() {
    block_on(async {
        let s = service(None);
        let live = s.issue(CI, "ci", None).await.unwrap().lease;
        let revoked = s.issue(CI, "ci", None).await.unwrap().lease;
        s.revoke(CI, &revoked.lease_id).await.unwrap();
        for name in [
            "kt_ci_0123456789abcdefghij".to_owned(), // no lease: a crash before the write
            revoked.username.clone(),                // its lease is revoked
            format!("kt_other_{}", live.lease_id),   // a live lease id under another name
            "kt_manual".to_owned(),                  // not keyturn's form: left alone
            "kt_ci_0123456789ABCDEFGHIJ".to_owned(), // not keyturn's form
        ] {
            s.io.users.users.lock().unwrap().insert(name, 0);
        }
        let report = s.reap(limits()).await.unwrap();
        let mut dropped = report.orphans_dropped.clone();
        dropped.sort();
        let mut expected = vec![
            "kt_ci_0123456789abcdefghij".to_owned(),
            revoked.username.clone(),
            format!("kt_other_{}", live.lease_id),
        ];
        expected.sort();
        assert_eq!(dropped, expected);
        assert!(
            s.io.users.has(&live.username)
                && s.io.users.has("kt_manual")
                && s.io.users.has("kt_ci_0123456789ABCDEFGHIJ")
        );
    });
}

#[test]
fn a_lease_of_a_removed_role_is_still_revocable() {
    block_on(async {
        let s = service(None);
        let lease = s.issue(CI, "ci", None).await.unwrap().lease;
        let s = LeaseService { roles: Roles::from_toml("").unwrap(), ..s };
        assert_eq!(s.renew(CI, &lease.lease_id, None).await.unwrap_err().status(), 409);
        s.revoke(CI, &lease.lease_id).await.unwrap();
        assert!(!s.io.users.has(&lease.username));
    });
}

#[test]
fn the_reaper_stops_starting_work_at_its_deadline() {
    block_on(async {
        let s = service(None);
        s.issue(CI, "ci", Some(Duration::from_secs(1))).await.unwrap();
        s.io.clock.0.store(1_000_001, Ordering::SeqCst);
        let report = s.reap(ReapLimits { deadline: Instant::now(), ..limits() }).await.unwrap();
        assert!(report.stopped_at_deadline && report.revoked == 0);
        assert_eq!(s.reap(limits()).await.unwrap().revoked, 1);
    });
}

#[test]
fn an_sts_session_is_tagged_with_its_lease_and_caller_and_cannot_be_ended_or_extended() {
    block_on(async {
        let s = service(None);
        let issued = s.issue(CI, "deploy", Some(Duration::from_secs(60))).await.unwrap();
        let lease = issued.lease.clone();
        assert_eq!(lease.expires_at - lease.issued_at, 900, "raised to STS's 15 minutes, and said so");
        assert_eq!(
            lease.credential,
            Credential::AwsSts(aws_sts::Credential { role_arn: "arn:aws:iam::123456789012:role/deploy".into() })
        );
        let asked = s.io.aws.assumed.lock().unwrap()[0].clone();
        assert_eq!(asked.session_name, format!("ci-runner.job-1.{}", lease.lease_id));
        assert_eq!(asked.duration, Duration::from_secs(900));
        assert_eq!(asked.external_id.as_deref(), Some("ext-1"));
        assert!(asked.session_policy.as_deref().unwrap().contains("s3:GetObject"));
        assert!(asked.tags.contains(&(aws::tag::LEASE_ID.into(), lease.lease_id.clone())));
        assert!(asked.tags.contains(&(aws::tag::CALLER.into(), CI.into())));
        assert_eq!(s.renew(CI, &lease.lease_id, None).await.unwrap_err().status(), 409);
        let e = s.revoke(CI, &lease.lease_id).await.unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("cannot end early"), "{e}");
        assert_eq!(s.issue(CI, "deploy", None).await.unwrap_err().status(), 429, "the session holds its slot");
        s.io.clock.0.store(lease.expires_at, Ordering::SeqCst);
        let report = s.reap(limits()).await.unwrap();
        assert_eq!(report.revoked, 1, "expired: recorded as over, which frees the slot");
        assert_eq!(s.io.store.get(&lease.lease_id).await.unwrap().unwrap().state, LeaseState::Revoked);
        s.issue(CI, "deploy", None).await.unwrap();
    });
}

#[test]
fn a_refused_assume_role_leaves_no_live_lease() {
    block_on(async {
        let s = service(None);
        *s.io.aws.fail_assume.lock().unwrap() = true;
        let e = s.issue(CI, "deploy", None).await.unwrap_err();
        assert_eq!(e.status(), 500, "a trust policy is the deployment's to fix: {e}");
        assert!(e.to_string().contains("AssumeRole"), "{e}");
        let all = leases(&s);
        assert_eq!((all.len(), all[0].state), (1, LeaseState::Revoked));
        *s.io.aws.fail_assume.lock().unwrap() = false;
        s.issue(CI, "deploy", None).await.expect("the failed issue holds no slot");
    });
}

#[test]
fn callers_outside_allowed_principals_reach_no_aws_api() {
    block_on(async {
        let s = service(None);
        for role in ["deploy", "legacy", "pg-iam"] {
            assert_eq!(s.issue(STRANGER, role, None).await.unwrap_err().status(), 403);
            assert_eq!(s.issue(OPS, role, None).await.unwrap_err().status(), 403, "admins renew and revoke only");
        }
        assert_eq!(s.io.aws.calls.load(Ordering::SeqCst), 0);
        assert!(leases(&s).is_empty());
    });
}

#[test]
fn an_iam_user_lives_until_revoked_or_expired_and_renewal_moves_its_expiry() {
    block_on(async {
        let s = service(None);
        let issued = s.issue(CI, "legacy", None).await.unwrap();
        let lease = issued.lease.clone();
        assert_eq!(lease_id_of("kt_", &lease.username), Some(lease.lease_id.as_str()));
        assert!(matches!(issued.secret, Secret::AwsIamUser(aws_iam_user::Secret { .. })));
        assert_eq!(s.io.aws.users.lock().unwrap()[&lease.username], lease.expires_at);
        s.io.clock.0.store(1_000_600, Ordering::SeqCst);
        let renewed = s.renew(CI, &lease.lease_id, Some(Duration::from_secs(7200))).await.unwrap();
        assert_eq!(s.io.aws.users.lock().unwrap()[&lease.username], renewed.lease.expires_at);
        s.revoke(CI, &lease.lease_id).await.unwrap();
        assert!(!s.io.aws.has(&lease.username));

        let short = s.issue(CI, "legacy", Some(Duration::from_secs(60))).await.unwrap().lease;
        s.io.clock.0.store(short.expires_at, Ordering::SeqCst);
        assert_eq!(s.reap(limits()).await.unwrap().revoked, 1);
        assert!(!s.io.aws.has(&short.username));
    });
}

#[test]
fn a_half_created_iam_user_is_deleted_at_once_and_an_orphan_by_the_reaper() {
    block_on(async {
        let s = service(None);
        *s.io.aws.fail_after_create.lock().unwrap() = true;
        assert_eq!(s.issue(CI, "legacy", None).await.unwrap_err().status(), 500);
        assert!(s.io.aws.users.lock().unwrap().is_empty(), "the half-made user was deleted");
        assert_eq!(leases(&s)[0].state, LeaseState::Revoked);
        *s.io.aws.fail_after_create.lock().unwrap() = false;
        // A user left by a crash between CreateUser and the lease's revocation.
        let live = s.issue(CI, "legacy", None).await.unwrap().lease;
        s.io.aws.users.lock().unwrap().insert("kt_legacy_0123456789abcdefghij".into(), 0);
        s.io.aws.users.lock().unwrap().insert("kt_someone_else".into(), 0);
        let report = s.reap(limits()).await.unwrap();
        assert_eq!(report.orphans_dropped, ["kt_legacy_0123456789abcdefghij"]);
        assert!(s.io.aws.has(&live.username) && s.io.aws.has("kt_someone_else"));
    });
}

#[test]
fn an_rds_token_lives_fifteen_minutes_and_longer_is_refused_by_name() {
    block_on(async {
        let s = service(None);
        let issued = s.issue(CI, "pg-iam", Some(Duration::from_secs(60))).await.unwrap();
        assert_eq!(issued.lease.expires_at - issued.lease.issued_at, 900);
        assert_eq!(issued.lease.username, "app_iam");
        let Secret::RdsIamToken(rds_iam_token::Secret { token, .. }) = &issued.secret else {
            panic!("{:?}", issued.secret)
        };
        assert!(token.expose_secret().contains("DBUser=app_iam"));
        let e = s.issue(CI, "pg-iam", Some(Duration::from_secs(3600))).await.unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("valid for 15 minutes"), "{e}");
        assert_eq!(s.renew(CI, &issued.lease.lease_id, None).await.unwrap_err().status(), 409);
        assert_eq!(s.revoke(CI, &issued.lease.lease_id).await.unwrap_err().status(), 409);
    });
}
