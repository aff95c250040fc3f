//! `keyturn`: the command-line client of keyturn's credentials API. Requests are signed
//! with SigV4 as the caller (AWS's default credential chain); see `keyturn --help`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::BehaviorVersion;
use clap::{Args, Parser, Subcommand};
use keyturn::contract::{LeasesQuery, StateFilter};
use keyturn::time::iso8601_unix;
use keyturn_cli::api::{path_segment, printable, Api, CliError};
use keyturn_cli::exec::{exec, ExecRequest};
use keyturn_cli::format::{json_text, Credential, Format};
use serde_json::{json, Value};

const EXAMPLES: &str = "Examples:
  export KEYTURN_API_URL=https://abc123.execute-api.eu-west-1.amazonaws.com   # or --stack keyturn
  keyturn exec ci-reader -- psql -c 'select 1'
  keyturn exec deploy --ttl 30m -- ./deploy.sh production
  eval \"$(keyturn creds ci-reader --ttl 15m)\" && psql -c 'select 1'
  keyturn creds deploy --format json | jq -r .session_token
  keyturn leases list
  keyturn leases list --all --state failing        # administrators: every failing revocation
  keyturn leases renew 0123456789abcdefghij --ttl 30m
  keyturn roles-check config/roles.toml
  sam deploy --parameter-overrides $(keyturn roles-check --print-parameters roles.toml)
  keyturn roles deploy --stack keyturn roles.toml       # later changes: no build
  keyturn roles-check --stack keyturn roles.toml        # does the stack run this file?

Exit codes: 0 done, 2 usage or a request the API refused as malformed, 3 no credentials or
not allowed, 4 no such role or lease, 5 the API unreachable or failing, 1 anything else;
exec exits with its command's status (dies of signal N if N killed it, which a shell shows
as 128 + N; 127 when the command is not found); exec --strict exits 6 when the command
succeeded but its lease could not be revoked.";

/// keyturn: credentials that nobody rotates by hand and that do not outlive their use.
#[derive(Parser)]
#[command(name = "keyturn", version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the API is and how much to say.
#[derive(Args)]
struct Common {
    /// The credentials API's URL (the stack's CredentialsApiUrl output); when neither this
    /// nor --stack is given, $KEYTURN_API_URL.
    #[arg(long, value_name = "URL", conflicts_with = "stack")]
    api_url: Option<String>,
    /// The keyturn stack whose CredentialsApiUrl output to use (CloudFormation
    /// DescribeStacks, in the caller's region): `keyturn` as samconfig.toml deploys it.
    #[arg(long, value_name = "NAME")]
    stack: Option<String>,
    /// The region to sign for when the URL names none (a custom domain); an API Gateway
    /// URL's own region must agree with it. Default: AWS_REGION, then the profile's.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Print nothing but what was asked for (no lease line on stderr).
    #[arg(long, short)]
    quiet: bool,
    /// Print the API's answer as JSON, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Get credentials of a role and print them (the lease id and expiry go to stderr).
    /// A new IAM user's access key (kind aws-iam-user) may be refused for some seconds
    /// after it is printed (IAM is eventually consistent; `exec` waits for it to work).
    Creds {
        role: String,
        /// How long, as in the roles file: 15m, 1h, 900s (the role's default when absent).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// json, env (export lines for eval), dotenv, uri, pgpass.
        #[arg(long, default_value = "env")]
        format: Format,
        #[command(flatten)]
        common: Common,
    },
    /// Run a command with a role's credentials in its environment: the lease is renewed
    /// while the command runs and revoked when it exits or is stopped (SIGINT, SIGTERM,
    /// SIGHUP and SIGQUIT are forwarded to it). Exits with the command's status. The
    /// credentials are printed nowhere. A new IAM user's access key is tried first
    /// (sts:GetCallerIdentity) until it works, for the API's propagation delay at most.
    Exec {
        role: String,
        /// How long each renewal extends the lease, as in the roles file (the role's
        /// default when absent).
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        /// Exit 6 when the command succeeded but its lease could not be revoked (a command
        /// that failed keeps its own status).
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        common: Common,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<std::ffi::OsString>,
    },
    /// List, renew or revoke your leases.
    Leases {
        #[command(subcommand)]
        action: LeaseAction,
    },
    /// The roles you may request; `roles deploy` publishes a roles file to a stack.
    Roles {
        #[command(subcommand)]
        action: Option<RolesAction>,
        #[command(flatten)]
        common: Common,
    },
    /// Check roles files exactly as the issuer does at cold start (for CI of the
    /// repository that holds them). Exits 1 when any is invalid, naming role and field.
    RolesCheck {
        /// The roles files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
        /// Print the template parameters the file implies (LeaseAdminSecretArns and the
        /// others): sam (Key='value' pairs for sam deploy --parameter-overrides) or json.
        #[arg(long, value_name = "FORMAT", num_args = 0..=1, require_equals = true, default_missing_value = "sam",
              conflicts_with = "stack")]
        print_parameters: Option<keyturn_cli::roles::ParameterFormat>,
        /// The AWS account (12 digits) of the IAM groups and RDS databases the roles name,
        /// for --print-parameters.
        #[arg(long, value_name = "ID", requires = "print_parameters")]
        account: Option<String>,
        /// Compare the file with stack NAME: its parameters and roles layer; exits 1
        /// naming each mismatch.
        #[arg(long, value_name = "NAME")]
        stack: Option<String>,
    },
}

#[derive(Subcommand)]
enum RolesAction {
    /// Publish a roles file to a stack without a build: checked, published as a new version
    /// of the stack's roles layer, then the stack updated (its previous template; its
    /// RolesLayerArn and the parameters the file implies set, every other kept) and watched
    /// until done. Both functions read the new file from their next invocation on.
    Deploy {
        /// The keyturn stack (CloudFormation, in the caller's region).
        #[arg(long, value_name = "NAME")]
        stack: String,
        /// Print what would change (the parameters that differ, the file's sha256) and
        /// change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Let the file widen what the functions may touch (an admin secret, an assumable
        /// role, an IAM group or database user the stack does not list yet, another IAM
        /// path or boundary). Without it such a file is refused, naming each addition.
        #[arg(long)]
        allow_widening: bool,
        /// The roles file.
        #[arg(value_name = "FILE")]
        file: String,
    },
}

#[derive(Subcommand)]
enum LeaseAction {
    /// Your live leases (those issued to this very identity), the earliest expiry first;
    /// with --all, every live lease, whoever holds it (administrators only).
    List {
        /// Every live lease with its holder, by when the reaper acts on it (the roles
        /// file's admin_principals only).
        #[arg(long)]
        all: bool,
        /// Only this role's leases.
        #[arg(long, value_name = "ROLE")]
        role: Option<String>,
        /// live (every live lease), or failing (those whose revocation failed and is
        /// being retried).
        #[arg(long, value_name = "STATE", value_parser = parse_state, default_value = "live")]
        state: StateFilter,
        #[command(flatten)]
        common: Common,
    },
    /// Extend a lease (up to its role's max_ttl from issue).
    Renew {
        lease_id: String,
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<Duration>,
        #[command(flatten)]
        common: Common,
    },
    /// End a lease now: its user is deleted.
    Revoke {
        lease_id: String,
        #[command(flatten)]
        common: Common,
    },
}

fn parse_state(text: &str) -> Result<StateFilter, String> {
    StateFilter::parse(text).ok_or_else(|| format!("{text:?} is not a state (live, failing)"))
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    keyturn::lease::role::parse_ttl(text).map_err(|problem| format!("{text:?} {problem}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            keyturn_cli::term::error(&e.to_string());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::RolesCheck { files, print_parameters, account, stack }
            if print_parameters.is_some() || stack.is_some() =>
        {
            keyturn_cli::roles::check_command(&files, print_parameters, account.as_deref(), stack.as_deref()).await
        }
        Command::RolesCheck { files, .. } => {
            let ok = keyturn::lease::role::check_files(&files, &mut std::io::stdout(), &mut std::io::stderr())
                .map_err(|e| CliError::Server(format!("cannot write the report: {e}")))?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Creds { role, ttl, format, common } => {
            let answer = api(&common).await?.issue(path_segment(&role)?, ttl).await?;
            let credential = Credential::from_body(answer).map_err(|e| CliError::Server(e.to_string()))?;
            let text = credential.render(format).map_err(|e| CliError::Usage(e.to_string()))?;
            print!("{text}");
            if !common.quiet {
                let lease = &credential.issued.lease;
                keyturn_cli::term::info(&format!(
                    "lease {} expires at {}",
                    lease.lease_id,
                    iso8601_unix(lease.expires_at)
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { role, ttl, strict, common, command } => {
            let role = path_segment(&role)?.to_owned();
            let (api, aws) = connect(&common).await?;
            exec(api, ExecRequest { role, ttl, command, quiet: common.quiet, strict, aws }).await
        }
        Command::Roles { action: Some(RolesAction::Deploy { stack, dry_run, allow_widening, file }), .. } => {
            keyturn_cli::roles::deploy_command(&stack, &file, dry_run, allow_widening).await
        }
        Command::Roles { action: None, common } => {
            let answer = api(&common).await?.roles().await?;
            if common.json {
                println!("{}", json_text(&answer.json));
            } else {
                for role in &answer.typed.roles {
                    println!(
                        "{:<32} {:<14} default {:>6}s  max {:>6}s",
                        printable(&role.name),
                        printable(&role.kind),
                        role.default_ttl_seconds,
                        role.max_ttl_seconds
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Leases { action: LeaseAction::List { all, role, state, common } } => {
            let query = LeasesQuery { all, role, state, after: None };
            let answer = api(&common).await?.leases(&query).await?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if common.json {
                println!("{}", json_text(&answer.json));
            } else if all {
                print!("{}", keyturn_cli::leases::table(&answer.typed.leases, now));
            } else {
                for lease in &answer.typed.leases {
                    println!(
                        "{:<20}  {:<24} {:<14} {:<9} {} {:>6}s left  {}",
                        printable(&lease.lease_id),
                        printable(&lease.role),
                        printable(&lease.kind),
                        printable(&lease.state),
                        iso8601_unix(lease.expires_at),
                        lease.expires_at.saturating_sub(now),
                        printable(&lease.username)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Leases { action: LeaseAction::Renew { lease_id, ttl, common } } => {
            let id = path_segment(&lease_id)?;
            let answer = api(&common).await?.renew(id, ttl).await?;
            report(&common, &answer.json, || {
                let capped = if answer.typed.capped { " (capped at the role's max_ttl)" } else { "" };
                format!("lease {lease_id} now expires at {}{capped}", iso8601_unix(answer.typed.expires_at))
            });
            Ok(ExitCode::SUCCESS)
        }
        Command::Leases { action: LeaseAction::Revoke { lease_id, common } } => {
            let id = path_segment(&lease_id)?;
            api(&common).await?.revoke(id).await?;
            report(&common, &json!({"lease_id": lease_id, "revoked": true}), || format!("lease {lease_id} revoked"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The answer as JSON with `--json`, else `line` unless `--quiet`.
fn report(common: &Common, answer: &Value, line: impl FnOnce() -> String) {
    if common.json {
        println!("{}", json_text(answer));
    } else if !common.quiet {
        println!("{}", line());
    }
}

/// The API client: the URL from `--api-url` or `KEYTURN_API_URL`, the region and the
/// caller's credentials from AWS's usual settings.
async fn api(common: &Common) -> Result<Api, CliError> {
    connect(common).await.map(|(api, _)| api)
}

/// The API client and the caller's AWS settings it was made from. The region signed for is
/// the API URL's own when it names one ([`keyturn_cli::region`]).
async fn connect(common: &Common) -> Result<(Api, aws_config::SdkConfig), CliError> {
    let explicit = keyturn_cli::region::explicit(common.region.as_deref(), |name| std::env::var(name).ok());
    let mut settings = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = &common.region {
        settings = settings.region(aws_config::Region::new(region.clone()));
    }
    let sdk = settings.load().await;
    let configured = sdk.region().map(ToString::to_string);
    let url = match (&common.api_url, &common.stack) {
        (Some(url), _) => url.clone(),
        (None, Some(stack)) => {
            // The stack is looked up in the configured region, which must be a region.
            keyturn_cli::region::signing_region("", explicit.as_ref(), configured.as_deref())?;
            keyturn_cli::stack::api_url(&sdk, stack).await?
        }
        (None, None) => std::env::var("KEYTURN_API_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .ok_or_else(|| CliError::Usage("no API URL: pass --api-url or --stack, or set KEYTURN_API_URL".into()))?,
    };
    let region = keyturn_cli::region::signing_region(&url, explicit.as_ref(), configured.as_deref())?;
    let credentials = sdk
        .credentials_provider()
        .ok_or_else(|| CliError::Auth("no AWS credentials: configure the AWS CLI's usual settings".into()))?;
    Ok((Api::new(&url, region, credentials)?.quiet(common.quiet), sdk))
}
