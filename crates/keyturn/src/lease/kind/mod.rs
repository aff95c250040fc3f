//! The credential kinds a role can issue, one module each, named as the roles file's
//! `kind` names it (`database`, `aws-sts`, `aws-iam-user`, `rds-iam-token`). A kind's module
//! owns everything about it:
//!
//! - `NAME`, its `kind` string, also the lease table's and the API's name for it;
//! - `KEYS`, its own roles-file keys (beside every role's: `name`, `kind`, `default_ttl`,
//!   `max_ttl`, `allowed_principals`, `max_leases`), and `parse`, which checks them into its
//!   `Role`;
//! - `MIN_TTL`, `FIXED_TTL` and `check_ttl`, what its TTLs may be;
//! - `Credential`, what a lease of it records about what it made (what renewal and
//!   revocation need, never a secret), with `REVOCABLE`, and `fields`/`from_fields`, how
//!   the lease table stores it;
//! - with the `lease` feature: `Secret` (what the caller gets) and `answer` (its fields in
//!   the API's answer, `crate::contract`), and the I/O, each over the
//!   service's ports ([`super::ports::Io`]): `prepare` (before the lease is written: its
//!   username and record), `make` (the credential), `renew`, `delete` (removes every access
//!   it can; succeeds when the credential is gone) and `sweep` (drops what no live lease
//!   accounts for).
//!
//! `kinds!` (below) lists the kinds once; the enums that carry a kind's values
//! ([`RoleKind`], [`Credential`], `Secret`) and their dispatch are generated from that
//! list. Adding a kind is a new module here (its `pub mod` line below: declared outside the
//! macro so that rustfmt reaches it) and one line in that list.

pub mod aws_iam_user;
pub mod aws_sts;
pub mod database;
pub mod rds_iam_token;

use std::time::Duration;

use super::field::RolesError;

/// A value the lease table stores for a credential: text or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    S(String),
    N(u64),
}

/// Reads a stored credential's fields back (the lease table's adapter implements it over
/// an item, its errors naming the item and the field).
pub trait Fields {
    type Error;
    fn s(&self, name: &'static str) -> Result<String, Self::Error>;
    fn u16(&self, name: &'static str) -> Result<u16, Self::Error>;
}

/// Declares the kinds: `Variant => module`, the variant named as the kind (see the module's
/// documentation for what each module provides).
macro_rules! kinds {
    ($($variant:ident => $module:ident),+ $(,)?) => {
        /// The `kind` names, in the order the kinds are declared.
        pub const NAMES: &[&str] = &[$($module::NAME),+];

        /// A role's settings of its kind.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum RoleKind {
            $($variant($module::Role)),+
        }

        /// What a lease made, as the lease records it, by kind: everything its renewal and
        /// revocation need, so a lease whose role was since removed is still revocable.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Credential {
            $($variant($module::Credential)),+
        }

        /// The secret part of credentials just issued, by kind: what the caller needs to
        /// use them.
        #[cfg(feature = "lease")]
        #[derive(Debug)]
        pub enum Secret {
            $($variant($module::Secret)),+
        }

        /// The own keys of kind `name`; `None` for no kind.
        pub fn keys(name: &str) -> Option<&'static [&'static str]> {
            match name {
                $($module::NAME => Some($module::KEYS),)+
                _ => None,
            }
        }

        /// Whether `key` is some kind's own key.
        pub fn is_kind_key(key: &str) -> bool {
            [$($module::KEYS),+].iter().any(|keys| keys.contains(&key))
        }

        /// Role `role`'s keys of kind `name` (which [`keys`] knows), checked. Only the
        /// kind's own keys may be in `table`.
        pub fn parse(name: &str, role: &str, table: toml::Table) -> Result<RoleKind, RolesError> {
            match name {
                $($module::NAME => $module::parse(role, table).map(RoleKind::$variant),)+
                other => Err(super::field::err(Some(role), "kind", format!("{other:?} is not supported"))),
            }
        }

        impl RoleKind {
            /// The kind's name in the roles file.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $module::NAME,)+
                }
            }

            /// The shortest credential the kind can issue: a shorter request gets this much
            /// (and is told so), as AWS issues nothing shorter.
            pub fn min_ttl(&self) -> Duration {
                match self {
                    $(Self::$variant(_) => $module::MIN_TTL,)+
                }
            }

            /// The one TTL the kind issues, if it has only one (taken when the role names
            /// none).
            pub fn fixed_ttl(&self) -> Option<Duration> {
                match self {
                    $(Self::$variant(_) => $module::FIXED_TTL,)+
                }
            }

            /// The kind's own limits on a role's TTL (`text` as written): a reason when it
            /// is out of them.
            pub fn check_ttl(&self, ttl: Duration, text: &str) -> Result<(), String> {
                match self {
                    $(Self::$variant(_) => $module::check_ttl(ttl, text),)+
                }
            }

            /// Whether the reaper's orphan sweep has anything to look for in this kind's
            /// roles: the kinds whose credentials can be revoked make users (the others
            /// expire by themselves).
            pub fn swept(&self) -> bool {
                match self {
                    $(Self::$variant(_) => $module::REVOCABLE,)+
                }
            }

            /// The names of the kinds the orphan sweep looks at (see [`Self::swept`]).
            pub fn swept_kinds() -> Vec<&'static str> {
                let mut kinds = Vec::new();
                $(if $module::REVOCABLE { kinds.push($module::NAME); })+
                kinds
            }
        }

        impl Credential {
            /// The kind's name, as the roles file and the lease table name it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $module::NAME,)+
                }
            }

            /// Whether revoking it removes something (a user); an STS session and an RDS
            /// token stay valid until they expire whatever keyturn does.
            pub fn is_revocable(&self) -> bool {
                match self {
                    $(Self::$variant(_) => $module::REVOCABLE,)+
                }
            }

            /// What the lease table stores about it, beside its kind.
            pub fn fields(&self) -> Vec<(&'static str, Field)> {
                match self {
                    $(Self::$variant(c) => $module::fields(c),)+
                }
            }

            /// The credential of kind `kind` read back from its stored fields; `None` for
            /// no kind.
            pub fn from_fields<F: Fields>(kind: &str, fields: &F) -> Option<Result<Self, F::Error>> {
                match kind {
                    $($module::NAME => Some($module::from_fields(fields).map(Self::$variant)),)+
                    _ => None,
                }
            }
        }

        #[cfg(feature = "lease")]
        impl Secret {
            /// The kind's name.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $module::NAME,)+
                }
            }

            /// The credential as the API's answer gives it to `lease`'s holder.
            pub fn answer(&self, lease: &super::Lease) -> crate::contract::IssuedCredential {
                match self {
                    $(Self::$variant(secret) => $module::answer(secret, lease),)+
                }
            }
        }

        /// The I/O of every kind, dispatched.
        #[cfg(feature = "lease")]
        impl RoleKind {
            /// Before the lease is written: its username and what it will record.
            pub async fn prepare<P: io::Ports>(
                &self,
                io: &io::Io<P>,
                req: &io::IssueRequest<'_>,
            ) -> Result<io::Prepared, super::LeaseError> {
                match self {
                    $(Self::$variant(role) => $module::prepare(io, role, req).await,)+
                }
            }

            /// The credential of a lease just written.
            pub async fn make<P: io::Ports>(
                &self,
                io: &io::Io<P>,
                req: &io::IssueRequest<'_>,
                lease: &super::Lease,
            ) -> Result<io::Made, super::LeaseError> {
                match self {
                    $(Self::$variant(role) => $module::make(io, role, req, lease).await,)+
                }
            }
        }

        #[cfg(feature = "lease")]
        impl Credential {
            /// Moves the server's expiry of `lease`'s credential to `expires_at`. `role` is
            /// the lease's role as the roles file has it now.
            pub async fn renew<P: io::Ports>(
                &self,
                io: &io::Io<P>,
                role: &RoleKind,
                lease: &super::Lease,
                expires_at: u64,
            ) -> Result<(), super::LeaseError> {
                match self {
                    $(Self::$variant(c) => {
                        let role = match role {
                            RoleKind::$variant(role) => Some(role),
                            #[allow(unreachable_patterns)]
                            _ => None,
                        };
                        $module::renew(io, c, role, lease, expires_at).await
                    })+
                }
            }

            /// Removes what `lease` made, with all its access; succeeds when it is gone.
            pub async fn delete<P: io::Ports>(
                &self,
                io: &io::Io<P>,
                lease: &super::Lease,
            ) -> Result<crate::backend::DeleteOutcome, super::LeaseError> {
                match self {
                    $(Self::$variant(c) => $module::delete(io, c, lease).await,)+
                }
            }
        }

        /// The reaper's orphan sweep, kind by kind: each gets the roles (name and kind) of
        /// its kind; usernames start with `prefix`.
        #[cfg(feature = "lease")]
        pub async fn sweep<P: io::Ports>(
            io: &io::Io<P>,
            roles: &[(&str, &RoleKind)],
            prefix: &str,
            orphans: &impl io::Orphans,
            out: &mut io::SweepReport,
        ) {
            $(
                let of_kind: Vec<(&str, &$module::Role)> = roles
                    .iter()
                    .filter_map(|(name, kind)| match kind {
                        RoleKind::$variant(k) => Some((*name, k)),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    })
                    .collect();
                if !of_kind.is_empty() {
                    $module::sweep(io, &of_kind, prefix, orphans, out).await;
                }
            )+
        }
    };
}

kinds! {
    Database => database,
    AwsSts => aws_sts,
    AwsIamUser => aws_iam_user,
    RdsIamToken => rds_iam_token,
}

/// What the kinds' I/O shares: the request of an issue, what it yields, and the failures
/// of AWS as the API reports them.
#[cfg(feature = "lease")]
pub mod io {
    pub use super::super::admin::{backend_error, AdminLogin};
    pub use super::super::ports::{Io, Ports};
    use super::super::{Lease, LeaseError};
    use super::{Credential, Secret};
    use crate::backend::aws::{tag, AwsError, AwsKeys};

    /// One issue, as the kinds see it.
    #[derive(Debug, Clone, Copy)]
    pub struct IssueRequest<'a> {
        /// The role's name.
        pub role: &'a str,
        pub lease_id: &'a str,
        /// The caller's ARN, which becomes the lease's holder.
        pub caller: &'a str,
        /// The roles file's `username_prefix`.
        pub username_prefix: &'a str,
        /// The TTL decided for the lease.
        pub ttl: std::time::Duration,
    }

    /// What the lease is written with before its credential is made.
    #[derive(Debug)]
    pub struct Prepared {
        /// The name the credential authenticates as.
        pub username: String,
        pub credential: Credential,
        /// Whether the server itself refuses the credential after its expiry (as far as
        /// is known before making it).
        pub server_expiry: bool,
    }

    /// A credential just made.
    #[derive(Debug)]
    pub struct Made {
        pub secret: Secret,
        /// Whether the server enforces the expiry, when making it found out (a MariaDB
        /// event); `None` leaves what [`Prepared`] said.
        pub server_expiry: Option<bool>,
    }

    /// What a sweep did.
    #[derive(Debug, Default)]
    pub struct SweepReport {
        /// Users of keyturn's form without a live lease, dropped.
        pub dropped: Vec<String>,
        /// Where the sweep failed, with why.
        pub errors: Vec<String>,
    }

    /// Which of the names listed are orphans: of keyturn's form, but without a live lease
    /// of that name; each with the lease of its id when one is on record (revoked, or
    /// another name's). The service answers from the lease table.
    pub trait Orphans: Sync {
        fn orphans(
            &self,
            listed: Vec<String>,
        ) -> impl std::future::Future<Output = Result<Vec<(String, Option<Lease>)>, LeaseError>> + Send;
    }

    /// An AWS failure as the API reports it: transient ones are worth a retry (503); a
    /// refusal (a trust policy, a missing permission) is the deployment's to fix (500),
    /// named.
    pub fn aws_error(e: AwsError, role: &str) -> LeaseError {
        if e.retryable {
            LeaseError::Unavailable(format!("AWS, for role {role:?}: {e}"))
        } else {
            LeaseError::Internal(format!("AWS, for role {role:?}: {e}"))
        }
    }

    /// The tags that tie an AWS credential (a session, a user) to its lease and its holder;
    /// a 400 when the caller's ARN cannot be a tag.
    pub fn lease_tags(req: &IssueRequest<'_>) -> Result<Vec<(String, String)>, LeaseError> {
        let caller = super::super::principal::caller_tag(req.caller).ok_or_else(|| {
            LeaseError::BadRequest(format!(
                "{} cannot be recorded in an AWS tag (over 256 characters, or a character tags refuse, such as a \
                 comma), and this role's credentials carry their holder's ARN in one",
                req.caller
            ))
        })?;
        Ok(vec![(tag::LEASE_ID.to_owned(), req.lease_id.to_owned()), (tag::CALLER.to_owned(), caller.to_owned())])
    }

    /// An access key as the API's answer gives it (a session's with its token and expiry),
    /// with the kind's own fields set by `own`.
    pub fn aws_keys_answer(
        keys: &AwsKeys,
        own: impl FnOnce(&mut crate::contract::AwsKeys),
    ) -> crate::contract::AwsKeys {
        let mut answer = crate::contract::AwsKeys {
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key.clone(),
            session_token: keys.session_token.clone(),
            session_name: None,
            role_arn: None,
            username: None,
            expiration: keys.expiration,
            propagation_delay_seconds: None,
        };
        own(&mut answer);
        answer
    }

    /// The renewal, revocation and sweep of a credential that expires by itself and that
    /// AWS can neither extend nor end early (an STS session, an RDS token): the kinds that
    /// issue one re-export these as their own.
    pub mod self_expiring {
        use super::{Io, Lease, LeaseError, Orphans, Ports, SweepReport};
        use crate::backend::DeleteOutcome;

        /// Refused: AWS cannot extend it.
        pub async fn renew<P: Ports, C, R>(
            _: &Io<P>,
            _: &C,
            _: Option<&R>,
            lease: &Lease,
            _: u64,
        ) -> Result<(), LeaseError> {
            Err(LeaseError::Conflict(format!(
                "lease {:?} is an {} credential, which AWS cannot extend: request a new one",
                lease.lease_id,
                lease.credential.kind()
            )))
        }

        /// Nothing to delete: it expires by itself (the reaper reaches it only then).
        pub async fn delete<P: Ports, C>(_: &Io<P>, _: &C, _: &Lease) -> Result<DeleteOutcome, LeaseError> {
            Ok(DeleteOutcome { existed: false, sessions_ended: 0 })
        }

        /// Nothing to sweep: it makes no user, and one no lease accounts for expires
        /// within the hour.
        pub async fn sweep<P: Ports, R>(_: &Io<P>, _: &[(&str, &R)], _: &str, _: &impl Orphans, _: &mut SweepReport) {}
    }

    /// The username of a new lease of `req`'s role, for a system whose names are at most
    /// `limit` bytes.
    pub fn username(req: &IssueRequest<'_>, limit: usize) -> Result<String, LeaseError> {
        super::super::name::username(req.username_prefix, req.role, limit, req.lease_id)
            .ok_or_else(|| LeaseError::Internal(format!("no username fits role {:?}", req.role)))
    }
}
