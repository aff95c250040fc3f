//! What the lease service does I/O with, as one bundle: the lease table, the database
//! users, AWS (IAM users, STS sessions, RDS tokens), Secrets Manager and RDS (admin secrets
//! and where RDS-managed ones point, behind their cache) and the clock. [`Ports`] names one implementation of each, so the service
//! and everything that carries it has one type parameter: production's adapters are wired in
//! `app::lease`, the unit tests' fakes in `fakes`.

use std::time::{SystemTime, UNIX_EPOCH};

use super::admin::Admins;
use super::store::LeaseStore;
use crate::backend::aws::AwsCredentials;
use crate::backend::DynamicUsers;
use crate::password::PasswordPolicy;
use crate::rotation::database::RdsLookup;
use crate::rotation::store::SecretStore;

/// The time, in Unix seconds.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The system clock, plus an offset that only the end-to-end tests set (to expire leases
/// in a real binary without waiting).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    pub offset: u64,
}

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + self.offset
    }
}

/// One implementation of each port.
pub trait Ports: Send + Sync + 'static {
    type Store: LeaseStore;
    type Users: DynamicUsers;
    type Aws: AwsCredentials;
    type Secrets: SecretStore;
    type Rds: RdsLookup;
    type Clock: Clock;
}

/// The ports, wired: what the service's operations and the kinds' I/O work with.
pub struct Io<P: Ports> {
    pub store: P::Store,
    pub users: P::Users,
    pub aws: P::Aws,
    /// The admin secrets, read through Secrets Manager (and RDS) and kept.
    pub admins: Admins<P::Secrets, P::Rds>,
    pub clock: P::Clock,
    pub passwords: PasswordPolicy,
}
