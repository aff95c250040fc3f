//! keyturn's command-line client:
//!
//! - [`api`]: the credentials API as the CLI calls it: requests signed with SigV4
//!   (`execute-api`) as the caller (AWS's default credential chain) to the routes of
//!   [`keyturn::contract`], answers read into its types, failures sorted into exit-code
//!   classes ([`api::CliError`]).
//! - [`format`]: how a credential is printed or handed to a command (`env`, `dotenv`,
//!   `uri`, `pgpass`, `json`), read from the API's answer at the edge and quoted or
//!   encoded so that no character of it can be misread.
//! - [`exec`]: `keyturn exec`: a command run with a lease's credentials in its
//!   environment only, the lease renewed while it runs and revoked when it ends, signals
//!   forwarded, its status returned.
//! - [`leases`]: `leases list --all`'s table of every live lease, for administrators.
//! - [`propagation`]: `exec`'s wait, before the command runs, until a new IAM user's
//!   access key works (IAM is eventually consistent).
//! - [`region`]: the region requests are signed for: an API Gateway URL's own, checked
//!   against an explicitly set one.
//! - [`stack`]: `--stack NAME`: the API's URL from the stack's `CredentialsApiUrl` output.
//! - [`roles`]: the roles file as the one place roles are configured: the template
//!   parameters it implies (`roles-check --print-parameters`), compared with a stack's
//!   (`roles-check --stack`), and `roles deploy`, which publishes it to a stack without a
//!   build.
//! - [`term`]: lines on stderr, coloured only on a terminal.
//! - `main.rs`: the commands `creds`, `exec`, `roles`, `roles deploy`, `leases
//!   renew|revoke` and `roles-check` (which runs the issuer's own
//!   [`keyturn::lease::role::check_files`]).

pub mod api;
pub mod exec;
pub mod format;
pub mod leases;
pub mod propagation;
pub mod region;
pub mod roles;
pub mod stack;
pub mod term;
