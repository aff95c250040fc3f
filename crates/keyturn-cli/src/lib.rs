//! keyturn's command-line client (issue 10), the part landed so far:
//!
//! - `keyturn roles-check FILE...` ([`keyturn::lease::role::check_files`]): checks roles
//!   files exactly as the issuer does at cold start, for CI of the repository holding them.
//! - [`format`]: how a credential the API issued is printed or handed to a command (`env`,
//!   `dotenv`, `uri`, `pgpass`, `json`), read from the API's answer at the edge and
//!   quoted or encoded so that no character of it can be misread.
//!
//! Still to come: `creds`, `exec`, `leases` and `roles`, which sign requests to the API with
//! SigV4, and the harness's local gateway that tests them end to end.

pub mod api;
pub mod format;
