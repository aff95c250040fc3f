//! The lease decisions as pure functions, the clock passed in as Unix seconds: how long an
//! issue runs, how far a renewal goes, whether a lease is expired and whether a role has
//! room for one more. No I/O here; all unit-tested. Who may act is [`super::principal`]'s,
//! the names keyturn gives [`super::name`]'s.

use std::time::Duration;

use super::kind::RoleKind;
use super::role::Role;
use super::{Lease, LeaseError, LeaseState};

/// The TTL of a new lease: the role's default when none is asked for. A TTL of zero, with a
/// fraction of a second, or over the role's max_ttl is refused, never cut (the caller
/// would get less than it asked for without knowing). One under what the kind can issue
/// (15 minutes for an STS session or an RDS token) is raised to it: AWS issues nothing
/// shorter, and the answer says how long the credential lives.
pub fn issue_ttl(role: &Role, requested: Option<Duration>) -> Result<Duration, LeaseError> {
    let Some(ttl) = requested else { return Ok(role.default_ttl) };
    check_requested(role, ttl)?;
    Ok(ttl.max(role.kind.min_ttl()))
}

fn check_requested(role: &Role, ttl: Duration) -> Result<(), LeaseError> {
    if ttl.as_secs() == 0 || ttl.subsec_nanos() != 0 {
        return Err(LeaseError::BadRequest(format!(
            "ttl_seconds must be a whole number of seconds from 1 to {} for role {:?}",
            role.max_ttl.as_secs(),
            role.name
        )));
    }
    if ttl > role.max_ttl {
        let why = match role.kind {
            RoleKind::RdsIamToken(_) => " (an RDS IAM token is valid for 15 minutes, no longer)",
            _ => "",
        };
        return Err(LeaseError::BadRequest(format!(
            "ttl_seconds {} is over role {:?}'s max_ttl of {} seconds{why}",
            ttl.as_secs(),
            role.name,
            role.max_ttl.as_secs()
        )));
    }
    Ok(())
}

/// The expiry of a lease issued at `now` for `ttl`.
pub fn expires_at(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ttl.as_secs())
}

/// Whether the credentials are past their time.
pub fn is_expired(lease: &Lease, now: u64) -> bool {
    now >= lease.expires_at
}

/// Whether the role allows one more live lease, given how many it has.
pub fn check_capacity(role: &Role, live: u64) -> Result<(), LeaseError> {
    match role.max_leases {
        Some(max) if live >= u64::from(max) => Err(LeaseError::TooManyLeases { role: role.name.clone(), live }),
        _ => Ok(()),
    }
}

/// A renewal's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    pub expires_at: u64,
    /// The lease reached the role's max_ttl from issue time: it got less than asked.
    pub capped: bool,
}

/// How far a renewal takes a lease: `now + requested` (the role's default_ttl when absent),
/// capped at `issued_at + max_ttl` with the role's current max_ttl. The requested TTL is
/// checked as at issue. Refused for a lease that is expired, being revoked or revoked, for
/// another role's lease, and when the new expiry would not be later than the current one
/// (renewal never shortens a lease; the caller learns it reached its limit).
pub fn renew_until(lease: &Lease, role: &Role, requested: Option<Duration>, now: u64) -> Result<Renewal, LeaseError> {
    if lease.role != role.name {
        return Err(LeaseError::Internal(format!(
            "lease {:?} is for role {:?}, not {:?}",
            lease.lease_id, lease.role, role.name
        )));
    }
    match lease.state {
        LeaseState::Active => {}
        LeaseState::Revoking | LeaseState::Revoked => {
            return Err(LeaseError::Conflict(format!("lease {:?} is {}", lease.lease_id, lease.state.as_str())))
        }
    }
    if is_expired(lease, now) {
        return Err(LeaseError::Conflict(format!("lease {:?} expired at {}", lease.lease_id, lease.expires_at)));
    }
    let ttl = issue_ttl(role, requested)?;
    let wanted = expires_at(now, ttl);
    let limit = expires_at(lease.issued_at, role.max_ttl);
    let new = wanted.min(limit);
    if new <= lease.expires_at {
        return Err(LeaseError::NotExtended { lease_id: lease.lease_id.clone(), expires_at: lease.expires_at, limit });
    }
    Ok(Renewal { expires_at: new, capped: wanted > limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::role::Roles;

    const A: &str = "123456789012";

    fn role(default: u64, max: u64) -> Role {
        let text = format!(
            r#"[[role]]
name = "ci"
kind = "database"
admin_secret = "arn:aws:secretsmanager:us-east-1:{A}:secret:a"
groups = ["g"]
default_ttl = "{default}s"
max_ttl = "{max}s"
max_leases = 2
"#
        );
        Roles::from_toml(&text).unwrap().get("ci").unwrap().clone()
    }

    fn lease(issued_at: u64, expires_at: u64, state: LeaseState) -> Lease {
        Lease { issued_at, state, ..Lease::example("l1", expires_at) }
    }

    #[test]
    fn issue_ttl_takes_the_default_and_refuses_out_of_range() {
        let r = role(900, 3600);
        assert_eq!(issue_ttl(&r, None).unwrap(), Duration::from_secs(900));
        assert_eq!(issue_ttl(&r, Some(Duration::from_secs(3600))).unwrap(), Duration::from_secs(3600));
        assert_eq!(issue_ttl(&r, Some(Duration::from_secs(1))).unwrap(), Duration::from_secs(1));
        for bad in [Duration::ZERO, Duration::from_millis(500), Duration::from_millis(1500), Duration::from_secs(3601)]
        {
            let e = issue_ttl(&r, Some(bad)).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{bad:?}");
        }
        assert_eq!(
            issue_ttl(&r, Some(Duration::from_secs(u64::MAX))).unwrap_err().to_string(),
            format!("ttl_seconds {} is over role \"ci\"'s max_ttl of 3600 seconds", u64::MAX)
        );
    }

    #[test]
    fn renewal_extends_up_to_max_ttl_from_issue() {
        let r = role(900, 3600);
        let l = lease(1000, 1900, LeaseState::Active);
        assert_eq!(renew_until(&l, &r, None, 1500).unwrap(), Renewal { expires_at: 2400, capped: false });
        assert_eq!(
            renew_until(&l, &r, Some(Duration::from_secs(3600)), 1500).unwrap(),
            Renewal { expires_at: 4600, capped: true }
        );
        // At the cap: reported, not a silent success.
        let at_cap = lease(1000, 4600, LeaseState::Active);
        let e = renew_until(&at_cap, &r, None, 4000).unwrap_err();
        assert_eq!(e, LeaseError::NotExtended { lease_id: "l1".into(), expires_at: 4600, limit: 4600 });
        assert_eq!(e.status(), 409);
        // A short renewal never shortens the lease.
        let e = renew_until(&l, &r, Some(Duration::from_secs(10)), 1500).unwrap_err();
        assert_eq!(e.code(), "not_extended");
        // The requested TTL is checked as at issue.
        assert_eq!(renew_until(&l, &r, Some(Duration::from_secs(3601)), 1500).unwrap_err().code(), "bad_request");
        assert_eq!(renew_until(&l, &r, Some(Duration::ZERO), 1500).unwrap_err().code(), "bad_request");
    }

    #[test]
    fn expired_or_revoked_leases_are_not_renewed() {
        let r = role(900, 3600);
        assert_eq!(renew_until(&lease(1000, 1900, LeaseState::Active), &r, None, 1900).unwrap_err().code(), "conflict");
        assert_eq!(
            renew_until(&lease(1000, 1900, LeaseState::Revoking), &r, None, 1500).unwrap_err().code(),
            "conflict"
        );
        assert_eq!(
            renew_until(&lease(1000, 1900, LeaseState::Revoked), &r, None, 1500).unwrap_err().code(),
            "conflict"
        );
        let mut other = lease(1000, 1900, LeaseState::Active);
        other.role = "other".into();
        assert_eq!(renew_until(&other, &r, None, 1500).unwrap_err().code(), "internal");
    }

    #[test]
    fn a_lowered_max_ttl_applies_to_renewals_of_older_leases() {
        let l = lease(1000, 1900, LeaseState::Active);
        assert_eq!(renew_until(&l, &role(300, 600), None, 1500).unwrap_err().code(), "not_extended");
    }

    #[test]
    fn expiry_is_at_expires_at() {
        let l = lease(1000, 1900, LeaseState::Active);
        assert!(!is_expired(&l, 1899));
        assert!(is_expired(&l, 1900));
        assert_eq!(expires_at(u64::MAX - 1, Duration::from_secs(10)), u64::MAX);
    }

    #[test]
    fn max_leases_caps_live_leases() {
        let r = role(900, 3600);
        assert!(check_capacity(&r, 1).is_ok());
        assert_eq!(check_capacity(&r, 2).unwrap_err(), LeaseError::TooManyLeases { role: "ci".into(), live: 2 });
        let mut unlimited = r;
        unlimited.max_leases = None;
        assert!(check_capacity(&unlimited, u64::MAX).is_ok());
    }

    fn sts_role() -> Role {
        let text = format!(
            r#"[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::{A}:role/deploy"
default_ttl = "15m"
max_ttl = "1h"
"#
        );
        Roles::from_toml(&text).unwrap().get("deploy").unwrap().clone()
    }

    #[test]
    fn sts_ttls_are_raised_to_fifteen_minutes_and_capped_at_max_ttl() {
        let role = sts_role();
        assert_eq!(issue_ttl(&role, Some(Duration::from_secs(60))).unwrap().as_secs(), 900);
        assert_eq!(issue_ttl(&role, Some(Duration::from_secs(1800))).unwrap().as_secs(), 1800);
        assert_eq!(issue_ttl(&role, None).unwrap().as_secs(), 900);
        assert_eq!(issue_ttl(&role, Some(Duration::from_secs(3601))).unwrap_err().status(), 400);
        assert_eq!(issue_ttl(&role, Some(Duration::ZERO)).unwrap_err().status(), 400);
    }
}
