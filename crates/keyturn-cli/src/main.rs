//! `keyturn`: the command-line client of keyturn's credentials API. This version has
//! `roles-check`; `creds`, `exec`, `leases` and `roles` come with the API client.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// keyturn: credentials that nobody rotates by hand and that do not outlive their use.
#[derive(Parser)]
#[command(name = "keyturn", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check roles files exactly as the issuer does at cold start (for CI of the
    /// repository that holds them). Exits 1 when any is invalid, naming role and field.
    #[command(after_help = "Example:\n  keyturn roles-check config/roles.prod.toml config/roles.staging.toml")]
    RolesCheck {
        /// The roles files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::RolesCheck { files } => {
            match keyturn::lease::role::check_files(&files, &mut std::io::stdout(), &mut std::io::stderr()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) | Err(_) => ExitCode::FAILURE,
            }
        }
    }
}
