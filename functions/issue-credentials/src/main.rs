//! issue-credentials: the dynamic credentials API (API Gateway HTTP API, IAM
//! authorization, payload format 2.0). See `keyturn::lease::api` for the routes.
//!
//! `main` builds the service once per container with `keyturn::app::lease::build`
//! (which the tests and the bench also use): the roles file is validated here, at cold
//! start, so a bad file fails the deployment's first invocation instead of a caller's.
//!
//! `issue-credentials check FILE...` validates roles files and exits, for CI.

use std::process::ExitCode;

use keyturn::config::LeaseConfig;
use keyturn::lease::role::check_files;
use keyturn::telemetry::cannot_start;

#[tokio::main]
async fn main() -> Result<ExitCode, lambda_runtime::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("check", files)) = args.split_first().map(|(c, rest)| (c.as_str(), rest)) {
        return Ok(check(files));
    }
    keyturn::telemetry::init();
    let config = LeaseConfig::from_env().map_err(cannot_start)?;
    let sdk = aws_config::load_from_env().await;
    let service = &keyturn::app::lease::build(&config, &sdk).map_err(cannot_start)?;
    keyturn::lambda::serve_api(service).await?;
    Ok(ExitCode::SUCCESS)
}

/// Validates each roles file; says what is wrong with each bad one.
fn check(files: &[String]) -> ExitCode {
    if files.is_empty() {
        eprintln!("usage: issue-credentials check ROLES_FILE...");
        return ExitCode::from(2);
    }
    match check_files(files, &mut std::io::stdout(), &mut std::io::stderr()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) | Err(_) => ExitCode::FAILURE,
    }
}
