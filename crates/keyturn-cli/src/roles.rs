//! The roles file as the one place roles are configured:
//!
//! - `keyturn roles-check --print-parameters[=sam|json] FILE`: the template parameters the
//!   file implies ([`keyturn::lease::parameters`]), for the first `sam deploy` or the CDK app.
//! - `keyturn roles-check --stack NAME FILE`: the stack's parameters and roles layer
//!   compared with the file's, each mismatch named (so it is caught before a request fails).
//! - `keyturn roles deploy --stack NAME FILE`: the file checked, published as a new version
//!   of the stack's roles layer (`<FunctionNamePrefix>-roles`, a zip holding `roles.toml`
//!   alone, which the functions read at `/opt/roles.toml`), then the stack updated with its
//!   previous template, `RolesLayerArn` set to that version and the derived parameters set
//!   to the file's, every other parameter kept; no build. The layer version is named in
//!   both functions' configuration, so once the update is complete every new invocation of
//!   either reads the new file.
//!
//! The bytes published are the bytes checked: the file is read once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::error::{DisplayErrorContext, ProvideErrorMetadata as _};
use aws_sdk_cloudformation::types::{Capability, Parameter as StackParameter, Stack};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{LayerVersionContentInput, Runtime};
use keyturn::lease::parameters::{derive, Difference, Parameters};
use keyturn::lease::role::Roles;
use sha2::{Digest as _, Sha256};

use crate::api::{printable, CliError};
use crate::stack;
use crate::term;

/// The stack parameter that names the roles layer version both functions run with (empty:
/// the stack's own layer, built by `sam build`).
pub const ROLES_LAYER_ARN: &str = "RolesLayerArn";
/// The stack parameter the roles layer's name is made from: `<prefix>-roles`.
pub const PREFIX: &str = "FunctionNamePrefix";
/// Where the roles file is in the layer's zip: the functions read `/opt/roles.toml`, and a
/// layer is extracted into `/opt`.
pub const LAYER_PATH: &str = "roles.toml";
/// How long `roles deploy` waits for the stack's update before it gives up watching.
const UPDATE_WAIT: Duration = Duration::from_secs(30 * 60);
/// How often it asks.
const POLL: Duration = Duration::from_secs(5);

/// How `--print-parameters` prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterFormat {
    /// `Key='value' ...` for `sam deploy --parameter-overrides`.
    Sam,
    /// One JSON object, lists as arrays (the CDK app reads it).
    Json,
}

impl FromStr for ParameterFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sam" => Ok(Self::Sam),
            "json" => Ok(Self::Json),
            other => Err(format!("{other:?} is not a parameters format (sam, json)")),
        }
    }
}

/// A roles file read once: its bytes (what is published) and what they mean.
pub struct RolesFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub roles: Roles,
}

impl RolesFile {
    /// Reads and checks `path` as the issuer does at cold start; an invalid file is an
    /// error naming the file, the role and the field (exit 1, as `roles-check`).
    pub fn read(path: &str) -> Result<Self, CliError> {
        let bad = |problem: String| CliError::Refused(format!("{}: {problem}", printable(path)));
        let bytes = std::fs::read(Path::new(path)).map_err(|e| bad(format!("could not be read: {e}")))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("is not UTF-8 text".into()))?;
        let roles = Roles::from_toml(text).map_err(|e| bad(e.to_string()))?;
        Ok(Self { path: path.to_owned(), bytes, roles })
    }

    /// The template parameters the file implies in AWS account `account`.
    pub fn parameters(&self, account: Option<&str>) -> Result<Parameters, CliError> {
        derive(&self.roles, account).map_err(|e| CliError::Refused(format!("{}: {e}", printable(&self.path))))
    }

    /// The file's sha256, in hex (what `sha256sum` prints, and infra/Makefile shows).
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }
}

/// `roles-check --print-parameters`: the text to print.
pub fn print_parameters(file: &RolesFile, format: ParameterFormat, account: Option<&str>) -> Result<String, CliError> {
    let parameters = file.parameters(account)?;
    Ok(match format {
        ParameterFormat::Sam => parameters.sam(),
        ParameterFormat::Json => parameters.json().to_string(),
    })
}

/// A zip archive holding `contents` as [`LAYER_PATH`] and nothing else, the same bytes for
/// the same contents (no time, no owner, no compression): the layer's CodeSha256 then says
/// which roles file a layer version holds. Mode 0644, so the functions' user can read it.
pub fn layer_zip(contents: &[u8]) -> Result<Vec<u8>, CliError> {
    let size =
        u32::try_from(contents.len()).map_err(|_| CliError::Usage("the roles file is too large for a layer".into()))?;
    let crc = crc32(contents);
    let name = LAYER_PATH.as_bytes();
    // 1980-01-01 00:00:00, the earliest time a zip entry can have.
    let (time, date): (u16, u16) = (0, (1 << 5) | 1);
    let entry = |out: &mut Vec<u8>| {
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&time.to_le_bytes());
        out.extend_from_slice(&date.to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes()); // compressed
        out.extend_from_slice(&size.to_le_bytes()); // uncompressed
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // extra field
    };
    let mut zip = Vec::with_capacity(contents.len() + 128);
    zip.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    zip.extend_from_slice(&10u16.to_le_bytes()); // version needed: 1.0
    entry(&mut zip);
    zip.extend_from_slice(name);
    zip.extend_from_slice(contents);
    let directory_at = zip.len();
    zip.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
    zip.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by: Unix, 2.0
    zip.extend_from_slice(&10u16.to_le_bytes());
    entry(&mut zip);
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment
    zip.extend_from_slice(&0u16.to_le_bytes()); // disk
    zip.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    zip.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes()); // a regular file, rw-r--r--
    zip.extend_from_slice(&0u32.to_le_bytes()); // the local header's offset
    zip.extend_from_slice(name);
    let directory_size = zip.len() - directory_at;
    let too_large = || CliError::Usage("the roles file is too large for a layer".into());
    zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    zip.extend_from_slice(&[0; 4]); // this disk, the directory's disk
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&1u16.to_le_bytes());
    zip.extend_from_slice(&u32::try_from(directory_size).map_err(|_| too_large())?.to_le_bytes());
    zip.extend_from_slice(&u32::try_from(directory_at).map_err(|_| too_large())?.to_le_bytes());
    zip.extend_from_slice(&0u16.to_le_bytes()); // comment
    Ok(zip)
}

/// CRC-32 (IEEE 802.3, as zip uses it).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lambda's CodeSha256 of a layer's zip: its sha256 in base64.
fn code_sha256(zip: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip))
}

/// What `roles deploy` and `roles-check --stack` read from the stack.
#[derive(Debug, Clone)]
pub struct StackView {
    pub name: String,
    /// From the stack's id: the account its IAM groups and databases are in.
    pub account: String,
    /// From the stack's id: where its roles layer lives (`PARTITION:REGION`).
    pub partition: String,
    pub region: String,
    pub status: String,
    /// Every parameter with its value (DescribeStacks lists the template's parameters,
    /// defaults included).
    pub parameters: BTreeMap<String, String>,
}

impl StackView {
    pub fn of(name: &str, stack: &Stack) -> Result<Self, CliError> {
        // arn:PARTITION:cloudformation:REGION:ACCOUNT:stack/NAME/ID
        let unreadable = || CliError::Server(format!("stack {:?} has no readable id", printable(name)));
        let id: Vec<&str> = stack.stack_id().ok_or_else(unreadable)?.split(':').collect();
        let (partition, region, account) = match id.as_slice() {
            ["arn", partition, "cloudformation", region, account, _] => (*partition, *region, *account),
            _ => return Err(unreadable()),
        };
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) || region.is_empty() {
            return Err(unreadable());
        }
        let parameters = stack
            .parameters()
            .iter()
            .filter_map(|p| Some((p.parameter_key()?.to_owned(), p.parameter_value().unwrap_or_default().to_owned())))
            .collect();
        Ok(Self {
            name: name.to_owned(),
            account: account.to_owned(),
            partition: partition.to_owned(),
            region: region.to_owned(),
            status: stack.stack_status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            parameters,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(String::as_str)
    }

    /// The value of a parameter `roles deploy` needs, or why this is no stack it can update.
    fn required(&self, key: &str) -> Result<&str, CliError> {
        self.get(key).ok_or_else(|| {
            CliError::Refused(format!(
                "stack {:?} has no {key} parameter: deploy this version's template to it once (sam deploy) first",
                printable(&self.name)
            ))
        })
    }

    /// Whether layer version `arn` is one of this stack's partition, region and account:
    /// only such a version is read, compared or deleted as the stack's roles layer (a
    /// version of the same name elsewhere is another layer, which the caller's Lambda
    /// client would not even reach by that name).
    fn owns_layer(&self, arn: &str) -> bool {
        layer_version_of(arn)
            .is_some_and(|v| v.partition == self.partition && v.region == self.region && v.account == self.account)
    }

    /// The roles layer's name: `<FunctionNamePrefix>-roles`, as the template names it.
    fn layer_name(&self) -> Result<String, CliError> {
        Ok(format!("{}-roles", self.required(PREFIX)?))
    }
}

/// The UpdateStack parameters: `changes` set, every other parameter of the stack kept as
/// it is (UsePreviousValue, which also keeps NoEcho values unread).
pub fn update_parameters(stack: &StackView, changes: &BTreeMap<String, String>) -> Vec<StackParameter> {
    stack
        .parameters
        .keys()
        .map(|key| match changes.get(key) {
            Some(value) => StackParameter::builder().parameter_key(key).parameter_value(value).build(),
            None => StackParameter::builder().parameter_key(key).use_previous_value(true).build(),
        })
        .collect()
}

/// What a stack's status says about the update just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Complete,
    /// Failed and rolled back (or failing to): the functions keep the previous file.
    Failed,
}

pub fn outcome(status: &str) -> Outcome {
    match status {
        "UPDATE_COMPLETE" => Outcome::Complete,
        // The new resources are in place; CloudFormation is removing the old ones.
        s if s.ends_with("_IN_PROGRESS") && !s.contains("ROLLBACK") => Outcome::Running,
        "UPDATE_ROLLBACK_IN_PROGRESS" | "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS" => Outcome::Running,
        _ => Outcome::Failed,
    }
}

/// A layer version ARN's parts: `arn:PARTITION:lambda:REGION:ACCOUNT:layer:NAME:VERSION`.
struct LayerVersion<'a> {
    partition: &'a str,
    region: &'a str,
    account: &'a str,
    name: &'a str,
    version: i64,
}

fn layer_version_of(arn: &str) -> Option<LayerVersion<'_>> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", partition, "lambda", region, account, "layer", name, version] => {
            Some(LayerVersion { partition, region, account, name, version: version.parse().ok()? })
        }
        _ => None,
    }
}

/// Whether the stack's `RolesLayerArn` names a version holding exactly `zip`: `None` when
/// the stack runs its own layer (sam build's zip, which is not this one) or the version
/// cannot be read.
async fn layer_holds(lambda: &aws_sdk_lambda::Client, stack: &StackView, zip: &[u8]) -> Option<bool> {
    let arn = stack.get(ROLES_LAYER_ARN).filter(|a| !a.is_empty())?;
    if !stack.owns_layer(arn) {
        // Another account's or region's: not the file this stack's roles deploy published.
        return Some(false);
    }
    let v = layer_version_of(arn)?;
    match lambda.get_layer_version().layer_name(v.name).version_number(v.version).send().await {
        Ok(found) => Some(found.content().and_then(|c| c.code_sha256()) == Some(code_sha256(zip).as_str())),
        Err(e) => {
            term::warning(&format!(
                "cannot read roles layer {arn}: {}",
                aws_sdk_lambda::error::DisplayErrorContext(&e)
            ));
            None
        }
    }
}

/// A line for each difference: `NAME: the stack has "…", FILE needs "…"`.
fn describe_differences(file: &RolesFile, differences: &[Difference]) -> Vec<String> {
    differences
        .iter()
        .map(|d| {
            let theirs = d.stack.as_deref().map_or("no such parameter".to_owned(), |v| format!("{:?}", printable(v)));
            format!("{}: the stack has {theirs}, {} needs {:?}", d.parameter.name(), printable(&file.path), d.file)
        })
        .collect()
}

/// `roles-check --stack`: prints every mismatch between the stack and the file; whether
/// they agree.
pub async fn check_stack(sdk: &aws_config::SdkConfig, name: &str, file: &RolesFile) -> Result<bool, CliError> {
    let stack = StackView::of(name, &stack::describe(sdk, name).await?)?;
    let parameters = file.parameters(Some(&stack.account))?;
    let mut lines = describe_differences(file, &parameters.differences(|key| stack.get(key)));
    let zip = layer_zip(&file.bytes)?;
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let layer = match stack.get(ROLES_LAYER_ARN) {
        None | Some("") => "its own roles layer (sam build's, not compared)".to_owned(),
        Some(arn) => match layer_holds(&lambda, &stack, &zip).await {
            Some(true) => format!("roles layer {arn}, which holds this file"),
            Some(false) if !stack.owns_layer(arn) => {
                lines.push(format!(
                    "{ROLES_LAYER_ARN}: {arn} is not a layer of the stack's account {} in {} (not compared)",
                    stack.account, stack.region
                ));
                String::new()
            }
            Some(false) => {
                lines.push(format!(
                    "{ROLES_LAYER_ARN}: {arn} holds another roles file than {} (sha256 {})",
                    printable(&file.path),
                    file.sha256()
                ));
                String::new()
            }
            None => format!("roles layer {arn} (not readable, not compared)"),
        },
    };
    for line in &lines {
        println!("{line}");
    }
    if lines.is_empty() {
        println!("{}: stack {:?} agrees with it; it runs {layer}", printable(&file.path), printable(name));
    }
    Ok(lines.is_empty())
}

/// `roles deploy`.
pub async fn deploy(
    sdk: &aws_config::SdkConfig,
    name: &str,
    file: &RolesFile,
    dry_run: bool,
    allow_widening: bool,
) -> Result<(), CliError> {
    let stack = StackView::of(name, &stack::describe(sdk, name).await?)?;
    let previous_layer = stack.required(ROLES_LAYER_ARN)?.to_owned();
    let layer_name = stack.layer_name()?;
    if stack.status.ends_with("_IN_PROGRESS") {
        return Err(CliError::Refused(format!(
            "stack {:?} is {}: wait until it is done",
            printable(name),
            printable(&stack.status)
        )));
    }
    let parameters = file.parameters(Some(&stack.account))?;
    let differences = parameters.differences(|key| stack.get(key));
    let zip = layer_zip(&file.bytes)?;
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let same_layer = layer_holds(&lambda, &stack, &zip).await == Some(true);
    let sha = file.sha256();
    let path = printable(&file.path);
    term::info(&format!("{path}: {} roles, valid, sha256 {sha}", file.roles.iter().count()));
    if same_layer && differences.is_empty() {
        println!("stack {:?} already runs {path} (sha256 {sha}): nothing to change", printable(name));
        return Ok(());
    }
    let mut plan = describe_differences(file, &differences);
    let widening: Vec<String> = differences
        .iter()
        .flat_map(|d| d.widening().into_iter().map(move |w| format!("{} adds {:?}", d.parameter.name(), printable(&w))))
        .collect();
    if !same_layer {
        let from = if previous_layer.is_empty() { "the stack's own layer" } else { previous_layer.as_str() };
        plan.insert(0, format!("{ROLES_LAYER_ARN}: {from} -> a new version of layer {layer_name} holding {path}"));
    }
    for line in &plan {
        println!("{line}");
    }
    for line in &widening {
        println!("widens: {line}");
    }
    if dry_run {
        println!("dry run: stack {:?} and layer {layer_name} not changed", printable(name));
        return Ok(());
    }
    if !widening.is_empty() && !allow_widening {
        return Err(CliError::Refused(format!(
            "{path} widens what issue-credentials and reap-leases may touch ({}): nothing changed. Review each \
             addition and run again with --allow-widening",
            widening.join("; ")
        )));
    }

    let mut changes: BTreeMap<String, String> =
        differences.iter().map(|d| (d.parameter.name().to_owned(), d.file.clone())).collect();
    let new_layer = if same_layer {
        None
    } else {
        let published = lambda
            .publish_layer_version()
            .layer_name(&layer_name)
            .description(format!("keyturn roles file (/opt/roles.toml), sha256 {sha}"))
            .content(LayerVersionContentInput::builder().zip_file(Blob::new(zip)).build())
            .compatible_runtimes(Runtime::Providedal2023)
            .send()
            .await
            .map_err(|e| {
                CliError::Server(format!(
                    "cannot publish layer {layer_name}: {}",
                    aws_sdk_lambda::error::DisplayErrorContext(&e)
                ))
            })?;
        let arn = published
            .layer_version_arn()
            .ok_or_else(|| CliError::Server("PublishLayerVersion answered no LayerVersionArn".into()))?
            .to_owned();
        term::info(&format!("published {arn}"));
        changes.insert(ROLES_LAYER_ARN.to_owned(), arn.clone());
        Some(arn)
    };

    let cloudformation = aws_sdk_cloudformation::Client::new(sdk);
    let started = cloudformation
        .update_stack()
        .stack_name(name)
        .use_previous_template(true)
        .set_parameters(Some(update_parameters(&stack, &changes)))
        .capabilities(Capability::CapabilityIam)
        .capabilities(Capability::CapabilityAutoExpand)
        .send()
        .await;
    if let Err(e) = started {
        let message = match &e {
            aws_sdk_cloudformation::error::SdkError::ServiceError(s) => {
                printable(s.err().message().unwrap_or("refused")).to_string()
            }
            _ => DisplayErrorContext(&e).to_string(),
        };
        discard(&lambda, new_layer.as_deref()).await;
        return Err(CliError::Server(format!("cannot update stack {:?}: {message}", printable(name))));
    }
    term::info(&format!("updating stack {:?}", printable(name)));
    let deadline = Instant::now() + UPDATE_WAIT;
    loop {
        let now = StackView::of(name, &stack::describe(sdk, name).await?)?;
        match outcome(&now.status) {
            Outcome::Complete => break,
            Outcome::Failed => {
                let reason = failure_reason(&cloudformation, name).await;
                let state = if now.status == "UPDATE_ROLLBACK_COMPLETE" {
                    // Nothing refers to the new version any more.
                    discard(&lambda, new_layer.as_deref()).await;
                    "the stack rolled back: issue-credentials and reap-leases still read the previous roles file"
                        .to_owned()
                } else {
                    // Not rolled back (a failed rollback, or rollback disabled): the new
                    // version may be in use, so it stays.
                    format!("the stack is {}: see its events in CloudFormation", printable(&now.status))
                };
                return Err(CliError::Refused(format!(
                    "stack {:?} was not updated: {reason}; {state}",
                    printable(name)
                )));
            }
            Outcome::Running if Instant::now() > deadline => {
                return Err(CliError::Server(format!(
                    "stack {:?} is still {} after {} minutes: follow it in CloudFormation",
                    printable(name),
                    printable(&now.status),
                    UPDATE_WAIT.as_secs() / 60
                )));
            }
            Outcome::Running => tokio::time::sleep(POLL).await,
        }
    }
    println!("stack {:?}: UPDATE_COMPLETE; both functions now read {path} (sha256 {sha})", printable(name));
    // The superseded version was published by roles deploy (the stack's own layer is
    // CloudFormation's to delete): a stale roles file should not stay attachable.
    if new_layer.is_some()
        && stack.owns_layer(&previous_layer)
        && layer_version_of(&previous_layer).is_some_and(|v| v.name == layer_name)
    {
        discard(&lambda, Some(&previous_layer)).await;
    }
    Ok(())
}

/// Deletes layer version `arn`, if any, warning when it cannot (it then stays, unused).
async fn discard(lambda: &aws_sdk_lambda::Client, arn: Option<&str>) {
    let Some(v) = arn.and_then(layer_version_of) else { return };
    if let Err(e) = lambda.delete_layer_version().layer_name(v.name).version_number(v.version).send().await {
        term::warning(&format!(
            "cannot delete unused layer version {}: {}",
            arn.unwrap_or_default(),
            aws_sdk_lambda::error::DisplayErrorContext(&e)
        ));
    }
}

/// Why the stack's last update failed: the first resource that failed since it started,
/// with CloudFormation's reason.
async fn failure_reason(cloudformation: &aws_sdk_cloudformation::Client, name: &str) -> String {
    let Ok(answer) = cloudformation.describe_stack_events().stack_name(name).send().await else {
        return "see the stack's events".into();
    };
    // Newest first: up to the stack's own UPDATE_IN_PROGRESS, the start of this update.
    let mut first_failure = None;
    for event in answer.stack_events() {
        let status = event.resource_status().map(|s| s.as_str()).unwrap_or_default();
        if event.logical_resource_id() == Some(name) && status == "UPDATE_IN_PROGRESS" {
            break;
        }
        if status.ends_with("_FAILED") {
            first_failure = Some(format!(
                "{} {}: {}",
                event.logical_resource_id().unwrap_or("?"),
                status,
                event.resource_status_reason().unwrap_or("no reason given")
            ));
        }
    }
    printable(&first_failure.unwrap_or_else(|| "see the stack's events".into()))
}

/// `roles-check --print-parameters` or `--stack` on `files` (one file).
pub async fn check_command(
    files: &[String],
    format: Option<ParameterFormat>,
    account: Option<&str>,
    stack: Option<&str>,
) -> Result<ExitCode, CliError> {
    let [path] = files else {
        return Err(CliError::Usage("--print-parameters and --stack take one roles file".into()));
    };
    let file = RolesFile::read(path)?;
    match (format, stack) {
        (Some(format), _) => {
            println!("{}", print_parameters(&file, format, account)?);
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(stack)) => {
            let agree = check_stack(&sdk().await?, stack, &file).await?;
            Ok(if agree { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        (None, None) => Err(CliError::Usage("nothing to do: pass --print-parameters or --stack".into())),
    }
}

/// `roles deploy --stack NAME [--dry-run] FILE`.
pub async fn deploy_command(
    stack: &str,
    path: &str,
    dry_run: bool,
    allow_widening: bool,
) -> Result<ExitCode, CliError> {
    let file = RolesFile::read(path)?;
    deploy(&sdk().await?, stack, &file, dry_run, allow_widening).await?;
    Ok(ExitCode::SUCCESS)
}

/// The caller's AWS settings, with a region (CloudFormation and Lambda are regional).
async fn sdk() -> Result<aws_config::SdkConfig, CliError> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    if sdk.region().is_none() {
        return Err(CliError::Usage("no AWS region: set AWS_REGION or a profile's region".into()));
    }
    Ok(sdk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zips() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn the_zip_is_the_same_for_the_same_file_and_holds_it_at_roles_toml() {
        let zip = layer_zip(b"admin_principals = []\n").unwrap();
        assert_eq!(zip, layer_zip(b"admin_principals = []\n").unwrap());
        assert_ne!(zip, layer_zip(b"admin_principals = [] \n").unwrap());
        assert_eq!(&zip[..4], b"PK\x03\x04");
        assert_eq!(&zip[30..40], b"roles.toml");
        assert_eq!(&zip[40..62], b"admin_principals = []\n");
        assert_eq!(&zip[zip.len() - 22..zip.len() - 18], b"PK\x05\x06");
        assert_eq!(code_sha256(b"").len(), 44);
    }

    /// Stack `keyturn` of account 123456789012 in aws/us-east-1 with `parameters`.
    fn stack_with(parameters: &[(&str, &str)]) -> StackView {
        StackView {
            name: "keyturn".into(),
            account: "123456789012".into(),
            partition: "aws".into(),
            region: "us-east-1".into(),
            status: "UPDATE_COMPLETE".into(),
            parameters: parameters.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn update_parameters_keep_every_other_value() {
        let stack = stack_with(&[("ApiRateLimit", "10"), ("RolesLayerArn", ""), ("LeaseIamUserPath", "/a/")]);
        let changes = BTreeMap::from([("RolesLayerArn".to_owned(), "arn:x".to_owned())]);
        let p = update_parameters(&stack, &changes);
        let by_key = |k: &str| p.iter().find(|p| p.parameter_key() == Some(k)).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(by_key("RolesLayerArn").parameter_value(), Some("arn:x"));
        assert_eq!(by_key("RolesLayerArn").use_previous_value(), None);
        for kept in ["ApiRateLimit", "LeaseIamUserPath"] {
            assert_eq!((by_key(kept).use_previous_value(), by_key(kept).parameter_value()), (Some(true), None));
        }
    }

    #[test]
    fn outcomes_of_a_stack_update() {
        assert_eq!(outcome("UPDATE_COMPLETE"), Outcome::Complete);
        for running in ["UPDATE_IN_PROGRESS", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS"] {
            assert_eq!(outcome(running), Outcome::Running, "{running}");
        }
        for failed in ["UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED", "UPDATE_FAILED"] {
            assert_eq!(outcome(failed), Outcome::Failed, "{failed}");
        }
    }

    #[test]
    fn layer_version_arns_are_read_strictly() {
        let v = layer_version_of("arn:aws:lambda:us-east-1:123456789012:layer:keyturn-roles:7").unwrap();
        assert_eq!(
            (v.partition, v.region, v.account, v.name, v.version),
            ("aws", "us-east-1", "123456789012", "keyturn-roles", 7)
        );
        assert!(layer_version_of("arn:aws:lambda:us-east-1:123456789012:layer:keyturn-roles").is_none());
        assert!(layer_version_of("arn:aws:lambda:us-east-1:123456789012:function:f:1").is_none());
        assert!(layer_version_of("").is_none());
    }

    #[test]
    fn only_a_layer_of_the_stacks_own_account_and_region_is_its_roles_layer() {
        let stack = stack_with(&[]);
        assert!(stack.owns_layer("arn:aws:lambda:us-east-1:123456789012:layer:keyturn-roles:7"));
        for other in [
            "arn:aws:lambda:us-east-1:999999999999:layer:keyturn-roles:7",
            "arn:aws:lambda:eu-west-1:123456789012:layer:keyturn-roles:7",
            "arn:aws-cn:lambda:us-east-1:123456789012:layer:keyturn-roles:7",
            "arn:aws:lambda:us-east-1:123456789012:layer:keyturn-roles",
        ] {
            assert!(!stack.owns_layer(other), "{other}");
        }
    }
}
