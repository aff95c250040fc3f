//! Password generation, done locally with a CSPRNG so a rotation needs no
//! `GetRandomPassword` round trip.
//!
//! The defaults match AWS's rotation templates (length 32, excluding `:/@"'\`), and every
//! character class that is not fully excluded appears at least once, as with
//! `RequireEachIncludedType`.

use rand::seq::{IndexedRandom, SliceRandom};
use secrecy::SecretString;

/// Default password length, as in AWS's templates.
pub const DEFAULT_LENGTH: usize = 32;
/// Characters AWS's templates exclude by default: they break connection strings and shells.
pub const DEFAULT_EXCLUDE: &str = ":/@\"'\\";
/// Bounds accepted for the length (Secrets Manager's own `GetRandomPassword` range).
pub const LENGTH_RANGE: std::ops::RangeInclusive<usize> = 8..=4096;

/// Why a password policy was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("password length {0} is outside {min}..={max}", min = LENGTH_RANGE.start(), max = LENGTH_RANGE.end())]
    Length(usize),
    #[error("the excluded characters leave no character to build a password from")]
    NothingLeft,
    #[error("password length {length} is shorter than the {classes} character classes it must contain")]
    TooShortForClasses { length: usize, classes: usize },
}

/// A validated password policy: the only way to get one is [`PasswordPolicy::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    length: usize,
    /// Printable ASCII minus exclusions, one entry per class that is not empty.
    classes: Vec<Vec<char>>,
}

impl PasswordPolicy {
    /// Builds a policy of `length` characters drawn from printable ASCII (no space) minus
    /// `exclude`. Fails when the length is out of range or too short to hold one character
    /// of each remaining class.
    pub fn new(length: usize, exclude: &str) -> Result<Self, PolicyError> {
        if !LENGTH_RANGE.contains(&length) {
            return Err(PolicyError::Length(length));
        }
        let keep = |c: &char| !exclude.contains(*c);
        let classes: Vec<Vec<char>> = [
            ('a'..='z').collect::<Vec<_>>(),
            ('A'..='Z').collect(),
            ('0'..='9').collect(),
            ('!'..='~').filter(|c| c.is_ascii_punctuation()).collect(),
        ]
        .into_iter()
        .map(|class| class.into_iter().filter(keep).collect::<Vec<_>>())
        .filter(|class| !class.is_empty())
        .collect();
        if classes.is_empty() {
            return Err(PolicyError::NothingLeft);
        }
        if length < classes.len() {
            return Err(PolicyError::TooShortForClasses { length, classes: classes.len() });
        }
        Ok(Self { length, classes })
    }

    /// Length of the passwords this policy generates.
    pub fn length(&self) -> usize {
        self.length
    }

    /// Generates a password: one character of each class, the rest from all of them,
    /// shuffled. Uses the thread-local CSPRNG (ChaCha seeded from the OS).
    pub fn generate(&self) -> SecretString {
        let mut rng = rand::rng();
        let all: Vec<char> = self.classes.concat();
        let mut chars: Vec<char> = self.classes.iter().filter_map(|class| class.choose(&mut rng).copied()).collect();
        while chars.len() < self.length {
            chars.extend(all.choose(&mut rng));
        }
        chars.shuffle(&mut rng);
        SecretString::from(chars.into_iter().collect::<String>())
    }
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self::new(DEFAULT_LENGTH, DEFAULT_EXCLUDE).expect("the default policy is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn default_policy_has_every_class_and_no_excluded_character() {
        let policy = PasswordPolicy::default();
        for _ in 0..200 {
            let p = policy.generate();
            let p = p.expose_secret();
            assert_eq!(p.chars().count(), 32);
            assert!(p.chars().any(|c| c.is_ascii_lowercase()));
            assert!(p.chars().any(|c| c.is_ascii_uppercase()));
            assert!(p.chars().any(|c| c.is_ascii_digit()));
            assert!(p.chars().any(|c| c.is_ascii_punctuation()));
            assert!(!p.chars().any(|c| DEFAULT_EXCLUDE.contains(c) || c == ' '));
        }
    }

    #[test]
    fn passwords_differ() {
        let policy = PasswordPolicy::default();
        assert_ne!(policy.generate().expose_secret(), policy.generate().expose_secret());
    }

    #[test]
    fn excluding_a_whole_class_drops_it() {
        let digits: String = ('0'..='9').collect();
        let policy = PasswordPolicy::new(12, &digits).unwrap();
        let p = policy.generate();
        assert!(!p.expose_secret().chars().any(|c| c.is_ascii_digit()));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert_eq!(PasswordPolicy::new(4, ""), Err(PolicyError::Length(4)));
        assert_eq!(PasswordPolicy::new(5000, ""), Err(PolicyError::Length(5000)));
        let everything: String = ('!'..='~').collect();
        assert_eq!(PasswordPolicy::new(16, &everything), Err(PolicyError::NothingLeft));
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let p = PasswordPolicy::default().generate();
        assert!(!format!("{p:?}").contains(p.expose_secret()));
    }
}
