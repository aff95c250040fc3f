//! `keyturn leases list --all`: every live lease as an administrator sees it, one line
//! each under a header, with who holds it and, for a lease whose revocation is failing, a
//! second line with its attempts, next retry and last error.

use keyturn::contract::ListedLease;
use keyturn::time::iso8601_unix;

use crate::api::printable;

/// The state shown: `failing` for a lease whose revocation was attempted and failed, else
/// the API's (`active`, `revoking`).
fn state(lease: &ListedLease) -> &str {
    if lease.failing == Some(true) {
        "failing"
    } else {
        &lease.state
    }
}

/// The table, seen at `now` (Unix seconds); every value from the API escaped for a
/// terminal.
pub fn table(leases: &[ListedLease], now: u64) -> String {
    let mut out = format!(
        "{:<20}  {:<24} {:<14} {:<9} {:<20} {:>8}  HOLDER\n",
        "LEASE", "ROLE", "KIND", "STATE", "EXPIRES", "LEFT"
    );
    for lease in leases {
        out.push_str(&format!(
            "{:<20}  {:<24} {:<14} {:<9} {:<20} {:>7}s  {}\n",
            printable(&lease.lease_id),
            printable(&lease.role),
            printable(&lease.kind),
            printable(state(lease)),
            iso8601_unix(lease.expires_at),
            lease.expires_at.saturating_sub(now),
            printable(lease.holder.as_deref().unwrap_or("-")),
        ));
        if lease.failing == Some(true) {
            let next = lease.retry_at.map_or_else(|| "-".to_owned(), iso8601_unix);
            out.push_str(&format!(
                "{:<22}{} attempts, next at {next}: {}\n",
                "",
                lease.attempts.unwrap_or(0),
                printable(lease.last_error.as_deref().unwrap_or("")),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: &str, failing: bool) -> ListedLease {
        ListedLease {
            lease_id: id.into(),
            role: "ci".into(),
            kind: "database".into(),
            issued_at: 0,
            expires_at: 1600,
            renewable: true,
            revocable: true,
            username: "kt_ci_x".into(),
            state: if failing { "revoking" } else { "active" }.into(),
            holder: Some("arn:aws:sts::123456789012:assumed-role/ci/job".into()),
            attempts: Some(u32::from(failing) * 3),
            last_error: failing.then(|| "DROP ROLE failed\r\nkeyturn: forged\u{1b}[2J".into()),
            retry_at: failing.then_some(1700),
            failing: Some(failing),
        }
    }

    #[test]
    fn the_table_shows_holders_and_failing_revocations_with_nothing_a_terminal_acts_on() {
        let text = table(&[lease("abcdefghij0123456789", false), lease("zyxwvutsrq9876543210", true)], 1000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("LEASE") && lines[0].ends_with("HOLDER"), "{text}");
        assert!(lines[1].starts_with("abcdefghij0123456789  ci ") && lines[1].contains(" active "), "{text}");
        assert!(lines[1].contains("1970-01-01T00:26:40Z") && lines[1].contains(" 600s "), "{text}");
        assert!(lines[1].ends_with("assumed-role/ci/job"), "{text}");
        assert!(lines[2].contains(" failing "), "{text}");
        assert!(lines[3].contains("3 attempts, next at 1970-01-01T00:28:20Z: DROP ROLE failed"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }
}
