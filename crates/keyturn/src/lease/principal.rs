//! Who a caller is and whom a pattern names: the roles file's principal patterns
//! (`allowed_principals`, `admin_principals`) matched against the caller's ARN as API
//! Gateway's IAM authorizer reports it, who holds a lease, and the caller as AWS records it
//! on what it gets (an STS session's name, a tag). Pure functions, no I/O.
//!
//! # Principals
//!
//! API Gateway's IAM authorizer reports the caller as an IAM user
//! (`arn:aws:iam::ACCOUNT:user/[PATH/]NAME`) or, for anyone using a role (Lambda, ECS, CI
//! with OIDC, SSO), as the role's session:
//! `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`, which carries no role path. Any other
//! caller (the root user, federated users, anything malformed) matches no pattern.
//!
//! A pattern is one of three forms, each with a literal partition and 12-digit account (no
//! wildcard may widen a pattern to other accounts) and `*` (any run of characters, also
//! none) or `?` (exactly one character) only after the resource type:
//!
//! - `arn:aws:iam::ACCOUNT:user/GLOB`: IAM users; the glob runs over path and name, as
//!   IAM's `ArnLike` does (`user/*` is every user, `user/ops/*` the users under `/ops/`).
//! - `arn:aws:iam::ACCOUNT:role/GLOB`: every session of a role whose name matches. The glob
//!   is matched against the role name alone, never the session name (which whoever assumes
//!   the role chooses), so `role/ci*` matches sessions of `ci` and `ci-admin` (as IAM would
//!   match the role ARNs) and nothing else. A role pattern with a path (`role/team/ci`) is
//!   refused: a session ARN does not say the role's path, so it could never be checked.
//! - `arn:aws:sts::ACCOUNT:assumed-role/ROLEGLOB/SESSIONGLOB`: sessions of a matching role
//!   with a matching session name, each glob matched against its own segment. A session name
//!   proves only what the role's trust policy makes its assumers prove (SSO puts the user's
//!   name there; an `sts:AssumeRole` caller writes any name).
//!
//! Matching is case-sensitive, as `ArnLike` is.

/// The longest pattern or caller ARN considered.
const ARN_MAX: usize = 2048;

/// An IAM ARN pattern, validated (see the module's documentation for the forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnPattern {
    text: String,
    partition: String,
    account: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    User(String),
    Role(String),
    AssumedRole(String, String),
}

/// Partition, service, account and resource of an ARN whose literal fields are well formed
/// (no wildcard can get through: partition lowercase letters and `-`, empty region, 12
/// digits of account).
fn split_arn(arn: &str) -> Option<(&str, &str, &str, &str)> {
    if arn.len() > ARN_MAX || !arn.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, service, region, account, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let partition_ok = partition.starts_with("aws") && partition.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    (arn_ == "arn" && partition_ok && region.is_empty() && account_ok && !resource.is_empty())
        .then_some((partition, service, account, resource))
}

impl ArnPattern {
    /// Validates a pattern; the error says what is wrong (the caller adds the pattern).
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            "is not an IAM principal pattern: write arn:aws:iam::ACCOUNT:role/NAME, \
             arn:aws:iam::ACCOUNT:user/NAME or arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION \
             (a 12-digit account, * and ? only after the resource type)"
                .to_owned()
        };
        let (partition, service, account, resource) = split_arn(text).ok_or_else(invalid)?;
        let kind = match (service, resource.split_once('/')) {
            ("iam", Some(("user", glob))) if !glob.is_empty() => PatternKind::User(glob.into()),
            ("iam", Some(("role", glob))) if !glob.is_empty() => {
                if glob.contains('/') {
                    return Err("names a role path: the caller's session ARN does not carry the path, \
                                so write role/NAME (role names are unique in an account)"
                        .into());
                }
                PatternKind::Role(glob.into())
            }
            ("sts", Some(("assumed-role", rest))) => match rest.split_once('/') {
                Some((role, session)) if !role.is_empty() && !session.is_empty() && !session.contains('/') => {
                    PatternKind::AssumedRole(role.into(), session.into())
                }
                _ => return Err(invalid()),
            },
            _ => return Err(invalid()),
        };
        Ok(Self { text: text.into(), partition: partition.into(), account: account.into(), kind })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, caller: &Caller<'_>) -> bool {
        if self.partition != caller.partition || self.account != caller.account {
            return false;
        }
        match (&self.kind, &caller.kind) {
            (PatternKind::User(glob), CallerKind::User(rest)) => wildcard_match(glob, rest),
            (PatternKind::Role(glob), CallerKind::AssumedRole { role, .. }) => wildcard_match(glob, role),
            (PatternKind::AssumedRole(rg, sg), CallerKind::AssumedRole { role, session }) => {
                wildcard_match(rg, role) && wildcard_match(sg, session)
            }
            _ => false,
        }
    }
}

struct Caller<'a> {
    partition: &'a str,
    account: &'a str,
    kind: CallerKind<'a>,
}

enum CallerKind<'a> {
    User(&'a str),
    AssumedRole { role: &'a str, session: &'a str },
}

impl<'a> Caller<'a> {
    fn parse(arn: &'a str) -> Option<Self> {
        let (partition, service, account, resource) = split_arn(arn)?;
        let kind = match (service, resource.split_once('/')?) {
            ("iam", ("user", rest)) if !rest.is_empty() && !rest.ends_with('/') => CallerKind::User(rest),
            ("sts", ("assumed-role", rest)) => {
                let (role, session) = rest.split_once('/')?;
                if role.is_empty() || session.is_empty() || session.contains('/') {
                    return None;
                }
                CallerKind::AssumedRole { role, session }
            }
            _ => return None,
        };
        Some(Self { partition, account, kind })
    }
}

/// IAM's wildcards: `*` any run of characters (also none), `?` exactly one. Linear in
/// practice (one backtrack point), never exponential.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether the caller matches one of the patterns. Default deny: no patterns, or a caller
/// ARN of any other form, is `false`.
pub fn principal_allowed(caller_arn: &str, patterns: &[ArnPattern]) -> bool {
    match Caller::parse(caller_arn) {
        Some(caller) => patterns.iter().any(|p| p.matches(&caller)),
        None => false,
    }
}

/// Whether the caller holds a lease: it is the very identity that got it (for a role, the
/// same session: another session of the same role is another holder), byte for byte, and
/// an identity a lease can be issued to at all. The holder lists, renews and revokes it.
pub fn holds(caller_arn: &str, lease_owner_arn: &str) -> bool {
    Caller::parse(caller_arn).is_some() && caller_arn == lease_owner_arn
}

/// Whether the caller may renew or revoke a lease: its holder ([`holds`]), or an admin
/// principal.
pub fn may_act(caller_arn: &str, lease_owner_arn: &str, admin_principals: &[ArnPattern]) -> bool {
    holds(caller_arn, lease_owner_arn) || principal_allowed(caller_arn, admin_principals)
}

/// The longest STS session name.
const SESSION_NAME_MAX: usize = 64;

/// The STS session name of a lease: who asked, then the lease id (`<who>.<lease id>`), so
/// CloudTrail shows both. `<who>` is the caller's role and session (`ROLE.SESSION`) or user
/// name, with characters STS does not allow in a name replaced by `-` and cut to fit.
pub fn session_name(caller_arn: &str, lease_id: &str) -> String {
    let who = match Caller::parse(caller_arn).map(|c| c.kind) {
        Some(CallerKind::AssumedRole { role, session }) => format!("{role}.{session}"),
        Some(CallerKind::User(path_and_name)) => path_and_name.rsplit('/').next().unwrap_or(path_and_name).to_owned(),
        None => "caller".to_owned(),
    };
    let room = SESSION_NAME_MAX.saturating_sub(lease_id.len() + 1);
    let who: String = who
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) { c } else { '-' })
        .take(room)
        .collect();
    format!("{who}.{lease_id}")
}

/// The caller's ARN as an AWS tag value, which policies and CloudTrail can key on: `None`
/// when it cannot be one exactly (over 256 characters, or a character tags refuse, such as
/// the `,` IAM names allow). A tag that a policy matches must never be a cut or altered
/// ARN that could equal another principal's.
pub fn caller_tag(caller_arn: &str) -> Option<&str> {
    let ok =
        caller_arn.len() <= 256 && caller_arn.bytes().all(|b| b.is_ascii_alphanumeric() || b" _.:/=+-@".contains(&b));
    ok.then_some(caller_arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "123456789012";

    fn pats(list: &[&str]) -> Vec<ArnPattern> {
        list.iter().map(|p| ArnPattern::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"))).collect()
    }

    fn allowed(caller: &str, list: &[&str]) -> bool {
        principal_allowed(caller, &pats(list))
    }

    #[test]
    fn role_patterns_match_sessions_of_that_role_only() {
        let p = [format!("arn:aws:iam::{A}:role/ci-runner")];
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        assert!(allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-runner/job-1"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-runner-evil/job-1"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-runne/r"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/CI-RUNNER/job-1"), &p));
        // A role ARN itself is never a caller, nor is a session without a session name.
        assert!(!allowed(&format!("arn:aws:iam::{A}:role/ci-runner"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-runner"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-runner/"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-runner/a/b"), &p));
        // An IAM user of the same name is not the role.
        assert!(!allowed(&format!("arn:aws:iam::{A}:user/ci-runner"), &p));
    }

    #[test]
    fn a_role_wildcard_covers_role_names_never_session_names() {
        let p = format!("arn:aws:iam::{A}:role/ci*");
        let p = [p.as_str()];
        assert!(allowed(&format!("arn:aws:sts::{A}:assumed-role/ci/x"), &p));
        assert!(allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-admin/x"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/deploy/ci-job"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/xci/x"), &p));
        let p = format!("arn:aws:iam::{A}:role/ci-???");
        assert!(allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-abc/x"), &[p.as_str()]));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-ab/x"), &[p.as_str()]));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ci-abcd/x"), &[p.as_str()]));
    }

    #[test]
    fn another_account_or_partition_never_matches() {
        let p = format!("arn:aws:iam::{A}:role/ci-*");
        let p = [p.as_str()];
        assert!(!allowed("arn:aws:sts::999999999999:assumed-role/ci-runner/x", &p));
        assert!(!allowed(&format!("arn:aws-cn:sts::{A}:assumed-role/ci-runner/x"), &p));
        // The account field cannot be smuggled through the resource either.
        assert!(!allowed(&format!("arn:aws:sts::999999999999:assumed-role/ci-runner/{A}"), &p));
    }

    #[test]
    fn wildcards_outside_the_resource_are_refused() {
        for bad in [
            "*".to_string(),
            "arn:aws:iam::*:role/ci".into(),
            "arn:aws:iam::12345678901?:role/ci".into(),
            "arn:*:iam::123456789012:role/ci".into(),
            "arn:aws:*::123456789012:role/ci".into(),
            format!("arn:aws:iam::{A}:*"),
            format!("arn:aws:iam::{A}:role*"),
            format!("arn:aws:iam::{A}:role/"),
            format!("arn:aws:iam::{A}:root"),
            format!("arn:aws:iam::{A}:role/team/ci"),
            format!("arn:aws:iam::{A}:role/*/ci"),
            format!("arn:aws:sts::{A}:assumed-role/ci"),
            format!("arn:aws:sts::{A}:assumed-role/ci/"),
            format!("arn:aws:sts::{A}:federated-user/bob"),
            format!("arn:aws:iam:us-east-1:{A}:user/bob"),
            format!("arn:aws:iam::{A}:user/bob smith"),
            "arn:aws:iam::1:role/ci".into(),
            String::new(),
        ] {
            assert!(ArnPattern::parse(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn user_patterns_follow_arnlike() {
        let p = [format!("arn:aws:iam::{A}:user/ops/*"), format!("arn:aws:iam::{A}:user/alice")];
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        assert!(allowed(&format!("arn:aws:iam::{A}:user/alice"), &p));
        assert!(allowed(&format!("arn:aws:iam::{A}:user/ops/bob"), &p));
        assert!(allowed(&format!("arn:aws:iam::{A}:user/ops/eu/carol"), &p));
        assert!(!allowed(&format!("arn:aws:iam::{A}:user/alice2"), &p));
        assert!(!allowed(&format!("arn:aws:iam::{A}:user/dev/alice"), &p));
        assert!(!allowed(&format!("arn:aws:iam::{A}:user/opsx/bob"), &p));
        // A user pattern never covers role sessions.
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/ops/bob"), &p));
    }

    #[test]
    fn session_patterns_match_each_segment_on_its_own() {
        let p = format!("arn:aws:sts::{A}:assumed-role/AWSReservedSSO_OnCall_*/*@example.com");
        let p = [p.as_str()];
        assert!(allowed(&format!("arn:aws:sts::{A}:assumed-role/AWSReservedSSO_OnCall_0a1b/al@example.com"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/AWSReservedSSO_OnCall_0a1b/al@example.org"), &p));
        assert!(!allowed(&format!("arn:aws:sts::{A}:assumed-role/AWSReservedSSO_Admin/al@example.com"), &p));
    }

    #[test]
    fn other_callers_and_garbage_are_denied() {
        let p = [format!("arn:aws:iam::{A}:user/*"), format!("arn:aws:iam::{A}:role/*")];
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        for caller in [
            String::new(),
            "anonymous".into(),
            format!("arn:aws:iam::{A}:root"),
            format!("arn:aws:sts::{A}:federated-user/bob"),
            format!("arn:aws:iam::{A}:user/"),
            format!("arn:aws:iam::{A}:user/bob "),
            format!("arn:aws:iam::{A}:user/bob\n"),
            format!("arn:aws:iam:us-east-1:{A}:user/bob"),
            format!("ARN:aws:iam::{A}:user/bob"),
            format!("arn:aws:iam::{A}:user/{}", "a".repeat(3000)),
        ] {
            assert!(!allowed(&caller, &p), "{caller:?} was allowed");
        }
        assert!(!principal_allowed(&format!("arn:aws:iam::{A}:user/bob"), &[]));
    }

    #[test]
    fn wildcard_matching_is_iam_like_and_cheap() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("a*b*c", "aXbYbZ"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(!wildcard_match("", "a"));
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "*a".repeat(500));
        assert!(!wildcard_match(&pattern, &text));
    }

    #[test]
    fn only_the_holder_or_an_admin_may_act() {
        let owner = format!("arn:aws:sts::{A}:assumed-role/ci-runner/job-1");
        let admins = pats(&[&format!("arn:aws:iam::{A}:role/keyturn-admin")]);
        assert!(may_act(&owner, &owner, &admins));
        assert!(!may_act(&format!("arn:aws:sts::{A}:assumed-role/ci-runner/job-2"), &owner, &admins));
        assert!(!may_act(&format!("arn:aws:sts::{A}:assumed-role/ci-runner/job-1 "), &owner, &admins));
        assert!(may_act(&format!("arn:aws:sts::{A}:assumed-role/keyturn-admin/x"), &owner, &admins));
        assert!(!may_act("arn:aws:sts::999999999999:assumed-role/keyturn-admin/x", &owner, &admins));
        // A lease recorded with no or a garbage owner is nobody's.
        assert!(!may_act("", "", &[]));
        assert!(!may_act("x", "x", &[]));
        // Holding is identity alone: an admin acts on a lease it does not hold.
        assert!(holds(&owner, &owner));
        assert!(!holds(&format!("arn:aws:sts::{A}:assumed-role/keyturn-admin/x"), &owner));
        assert!(!holds(&format!("arn:aws:sts::{A}:assumed-role/CI-runner/job-1"), &owner), "case counts");
        assert!(!holds("x", "x"));
    }

    #[test]
    fn session_names_say_who_and_which_lease_within_stss_rules() {
        let id = "abcdefghij0123456789";
        assert_eq!(
            session_name(&format!("arn:aws:sts::{A}:assumed-role/ci-runner/job-1"), id),
            format!("ci-runner.job-1.{id}")
        );
        assert_eq!(session_name(&format!("arn:aws:iam::{A}:user/ops/alice"), id), format!("alice.{id}"));
        let long = session_name(&format!("arn:aws:sts::{A}:assumed-role/{}/s", "r".repeat(64)), id);
        assert_eq!(long.len(), 64);
        assert!(long.ends_with(&format!(".{id}")));
        let odd = session_name(&format!("arn:aws:iam::{A}:user/a!b#c"), id);
        assert_eq!(odd, format!("a-b-c.{id}"));
        for name in [long, odd] {
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b)), "{name}");
        }
    }

    #[test]
    fn a_caller_tag_is_the_exact_arn_or_nothing() {
        let arn = format!("arn:aws:sts::{A}:assumed-role/ci-runner/job-1@x=y");
        assert_eq!(caller_tag(&arn), Some(arn.as_str()));
        assert_eq!(caller_tag(&format!("arn:aws:iam::{A}:user/a,b")), None, "IAM names allow a comma, tags do not");
        assert_eq!(caller_tag(&format!("arn:aws:iam::{A}:user/{}", "p/".repeat(200))), None, "over 256");
    }
}
