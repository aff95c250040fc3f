//! The names keyturn gives: lease ids and the usernames that carry them. The reaper's
//! orphan sweep reads a lease id back out of a username, so both forms are defined here
//! once. Pure functions, no I/O.

use rand::Rng;

/// The default prefix of every username keyturn creates (the roles file's
/// `username_prefix`; the reaper's orphan sweep looks for it).
pub const DEFAULT_USERNAME_PREFIX: &str = "kt_";

/// The username of a new lease: `kt_<role>_<random>`. The random part is never cut: the
/// role part is shortened to fit the engine's limit instead (down to nothing:
/// `kt__<random>`). `None` when `random` is empty, not ASCII letters and digits, or does
/// not fit the limit even so. Role names are ASCII (see [`Role`]), so bytes and characters
/// count the same.
pub fn username(prefix: &str, role_name: &str, engine_limit_bytes: usize, random: &str) -> Option<String> {
    if random.is_empty() || !random.bytes().all(|b| b.is_ascii_alphanumeric()) || !role_name.is_ascii() {
        return None;
    }
    let fixed = prefix.len() + 1 + random.len();
    let room = engine_limit_bytes.checked_sub(fixed)?;
    let role_part = &role_name[..role_name.len().min(room)];
    Some(format!("{prefix}{role_part}_{random}"))
}

/// Length of a lease id, which is also the random part of its username: 20 characters of
/// `[a-z0-9]`, about 103 bits. Lowercase only, so the name needs no quoting anywhere and
/// case-folding tools cannot merge two.
pub const LEASE_ID_LEN: usize = 20;

/// A new lease id from the operating system's CSPRNG (see [`LEASE_ID_LEN`]).
pub fn new_lease_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..LEASE_ID_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Whether `id` could be a lease id (anything else is unknown without a lookup).
pub fn is_lease_id(id: &str) -> bool {
    id.len() == LEASE_ID_LEN && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The lease id in a username of keyturn's form, `<prefix><role part>_<lease id>`; `None`
/// for any other name (left alone by the sweep).
pub fn lease_id_of<'a>(prefix: &str, username: &'a str) -> Option<&'a str> {
    let rest = username.strip_prefix(prefix)?;
    let (role_part, id) = rest.rsplit_once('_')?;
    let role_ok = role_part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (role_ok && is_lease_id(id)).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Engine;

    #[test]
    fn usernames_keep_the_random_part_whole() {
        let random = "a1b2c3d4e5f6g7h8";
        assert_eq!(
            username("kt_", "ci-reader", Engine::Postgres.max_username_len(), random).unwrap(),
            "kt_ci-reader_a1b2c3d4e5f6g7h8"
        );
        let long = "r".repeat(32);
        for limit in
            [Engine::Postgres.max_username_len(), Engine::Mysql.max_username_len(), Engine::Mariadb.max_username_len()]
        {
            let name = username("kt_", &long, limit, random).unwrap();
            assert!(name.len() <= limit, "{name}");
            assert!(name.starts_with("kt_r") && name.ends_with(&format!("_{random}")), "{name}");
        }
        assert_eq!(
            username("kt_", &long, Engine::Mysql.max_username_len(), random).unwrap(),
            format!("kt_{}_{random}", "r".repeat(12))
        );
        assert_eq!(username("kt_", &long, 20, random).unwrap(), format!("kt__{random}"));
        assert_eq!(username("kt_", "ci", 19, random), None);
        assert_eq!(username("kt_", "ci", 63, ""), None);
        assert_eq!(username("kt_", "ci", 63, "ab-c"), None);
        assert_eq!(username("kt_", "ci", 63, "abç"), None);
    }
}
