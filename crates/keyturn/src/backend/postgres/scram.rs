//! SCRAM-SHA-256 verifiers with a chosen iteration count, for passwords keyturn generates.
//!
//! The iteration count makes a leaked verifier of a guessable password expensive to
//! attack; a generated password of 32 characters from ~90 symbols carries about 200 bits,
//! which no iteration count makes stronger or weaker in practice. PostgreSQL pays the
//! iterations again when a role is created (it checks the new password is not empty by
//! running them) and at every login, on both ends: 4096 iterations cost about 6 ms per
//! `CREATE ROLE`, 16 cost 0.5 ms.
//!
//! The default is still PostgreSQL's 4096, because clients check the count the server
//! announces: pg8000 (through scramp) refuses fewer than 4096, as RFC 7677 recommends, so
//! a lower count is a setting an operator chooses knowing their clients. Passwords a
//! person chose always get `postgres-protocol`'s 4096 ([`super::password_clause`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The default iteration count for generated passwords: PostgreSQL's own, the lowest
/// every common client accepts (see the module docs).
pub const GENERATED_PASSWORD_ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for `password` (RFC 5802,
/// RFC 7677), with a fresh 16-byte salt. The password is used as its bytes: SASLprep
/// leaves printable ASCII, all keyturn generates, unchanged; anything else gets the
/// library's verifier with its own SASLprep and 4096 iterations.
pub fn verifier(password: &SecretString, iterations: u32) -> String {
    let bytes = password.expose_secret().as_bytes();
    if !bytes.iter().all(|b| (0x21..=0x7e).contains(b)) || iterations == 0 {
        return postgres_protocol::password::scram_sha_256(bytes);
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    with_salt(bytes, &salt, iterations)
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// RFC 5802's Hi(): PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        out.iter_mut().zip(u).for_each(|(o, b)| *o ^= b);
    }
    out
}

fn with_salt(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let salted = hi(password, salt, iterations);
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_is_pbkdf2_hmac_sha256() {
        // RFC 7914 section 11's PBKDF2-HMAC-SHA256 vector ("passwd", "salt", 1 iteration),
        // first 32 bytes.
        let expected = "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc";
        let got: String = hi(b"passwd", b"salt", 1).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn verifiers_carry_their_iteration_count_and_a_fresh_salt() {
        let password = SecretString::from("Abc123!xyz".to_owned());
        let a = verifier(&password, 16);
        assert!(a.starts_with("SCRAM-SHA-256$16:"), "{a}");
        assert_ne!(a, verifier(&password, 16), "each verifier has its own salt");
        // A password outside printable ASCII takes the library's path (SASLprep, 4096).
        assert!(verifier(&SecretString::from("pässword".to_owned()), 16).starts_with("SCRAM-SHA-256$4096:"));
    }
}
