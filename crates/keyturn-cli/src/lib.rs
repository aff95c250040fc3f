//! keyturn's command-line client (issue 10), the part landed so far:
//!
//! - [`api`]: the credentials API as the CLI calls it: requests signed with SigV4
//!   (`execute-api`) as the caller (AWS's default credential chain), answers read as JSON,
//!   failures sorted into exit-code classes ([`api::CliError`]).
//! - [`format`]: how a credential is printed or handed to a command (`env`, `dotenv`,
//!   `uri`, `pgpass`, `json`), read from the API's answer at the edge and quoted or
//!   encoded so that no character of it can be misread.
//! - `main.rs`: the commands `creds`, `roles`, `leases renew|revoke` and `roles-check`
//!   (which runs the issuer's own [`keyturn::lease::role::check_files`]).
//!
//! Still to come: `exec` (run a command with the credentials, renew while it runs, revoke
//! when it ends), `leases list` (needs an API route), `--stack` (the URL from a
//! CloudFormation output), and the release artifact's packaging.

pub mod api;
pub mod format;
