//! The roles file as the one place roles are configured, with the real `keyturn` binary:
//! `roles-check --print-parameters` read by SAM CLI's own parameter parser, and against
//! moto, `roles deploy` (the file published as a layer version whose zip holds exactly the
//! file, the stack updated with it and the derived parameters, every other parameter kept,
//! the superseded version deleted), `--dry-run` and a bad file changing nothing, and
//! `roles-check --stack` naming each mismatch and passing when the stack agrees.
//!
//! moto's CloudFormation cannot expand the SAM transform: the stack is a stand-in, a plain
//! template with the real one's parameter names and a resource moto supports (see
//! docs/testing.md).

use std::collections::BTreeMap;
use std::process::{Command, Output};

use keyturn_tests::gateway::REGION;
use serde_json::{json, Value};

/// moto's account: the one in every ARN it makes.
const ACCOUNT: &str = "123456789012";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `keyturn ARGS` with AWS pointed at the harness's moto and nothing else of the caller's.
fn keyturn(args: &[&str]) -> Output {
    let h = keyturn_tests::harness();
    Command::new(keyturn_tests::lambda::function_binary("keyturn"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", &h.moto.endpoint)
        .args(args)
        .output()
        .expect("run keyturn")
}

/// Runs `script` with the harness's Python (boto3, SAM CLI) and `args`; its stdout as JSON.
fn python(script: &str, args: &[&str]) -> Value {
    let h = keyturn_tests::harness();
    let prelude = "import boto3, json, sys\n\
        kw = dict(endpoint_url=sys.argv[1], region_name=sys.argv[2], aws_access_key_id='test',\n\
                  aws_secret_access_key='test')\n";
    let out = Command::new(keyturn_tests::moto::venv().join("bin/python"))
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .args([h.moto.endpoint.as_str(), REGION])
        .args(args)
        .output()
        .expect("run python");
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The real template's parameters that the stand-in has: the ones `roles deploy` sets,
/// the prefix it names the layer after, and one it must leave alone.
const PARAMETERS: [&str; 9] = [
    "FunctionNamePrefix",
    "RolesLayerArn",
    "LeaseAdminSecretArns",
    "LeaseIamUserPath",
    "LeaseIamUserBoundaryArn",
    "LeaseIamGroupArns",
    "LeaseAssumableRoleArns",
    "LeaseRdsDbUserArns",
    "ApiRateLimit",
];

/// Creates the stand-in stack `name` with prefix `prefix` (without `RolesLayerArn` when
/// `with_layer_parameter` is false: a stack deployed from an older template). moto's
/// UpdateStack keeps a UsePreviousValue parameter only if it was given at creation, so
/// every parameter is given here, as its default where the real template has one. The
/// lists are `String`s here: moto describes a `CommaDelimitedList` as Python prints a list
/// (`['a', 'b']`), where AWS gives the text as it was passed (`a,b`), as for a `String`.
fn create_stack(name: &str, prefix: &str, with_layer_parameter: bool) {
    let mut parameters = serde_json::Map::new();
    let mut given = Vec::new();
    for key in PARAMETERS {
        if key == "RolesLayerArn" && !with_layer_parameter {
            continue;
        }
        let (kind, value) = match key {
            "FunctionNamePrefix" => ("String", prefix),
            "LeaseIamUserPath" => ("String", "/keyturn-leases/"),
            "ApiRateLimit" => ("Number", "7"),
            _ => ("String", ""),
        };
        parameters.insert(key.into(), json!({"Type": kind, "Default": ""}));
        given.push(json!({"ParameterKey": key, "ParameterValue": value}));
    }
    let template = json!({
        "Parameters": parameters,
        "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
    });
    python(
        "cf = boto3.client('cloudformation', **kw)\n\
         cf.create_stack(StackName=sys.argv[3], TemplateBody=sys.argv[4], Parameters=json.loads(sys.argv[5]))\n\
         print('{}')",
        &[name, &template.to_string(), &Value::Array(given).to_string()],
    );
}

/// The stack's parameters and status.
fn stack(name: &str) -> (BTreeMap<String, String>, String) {
    let found = python(
        "s = boto3.client('cloudformation', **kw).describe_stacks(StackName=sys.argv[3])['Stacks'][0]\n\
         print(json.dumps({'status': s['StackStatus'],\n\
                           'parameters': {p['ParameterKey']: p['ParameterValue'] for p in s['Parameters']}}))",
        &[name],
    );
    let parameters = serde_json::from_value(found["parameters"].clone()).expect("parameters");
    (parameters, found["status"].as_str().expect("status").to_owned())
}

/// The live versions of layer `name`: their ARNs.
fn layer_versions(name: &str) -> Vec<String> {
    let found = python(
        "l = boto3.client('lambda', **kw)\n\
         print(json.dumps([v['LayerVersionArn'] for v in l.list_layer_versions(LayerName=sys.argv[3])['LayerVersions']]))",
        &[name],
    );
    serde_json::from_value(found).expect("ARNs")
}

/// What the zip published as layer version `arn` holds, read by Python's zipfile: each
/// entry's name, mode and text. moto's API gives no download; `tests/moto_server.py` serves
/// the zip a version was published with.
fn layer_contents(arn: &str) -> Value {
    python(
        "import base64, io, urllib.parse, urllib.request, zipfile\n\
         url = sys.argv[1] + '/keyturn-test/lambda/layer-content?arn=' + urllib.parse.quote(sys.argv[3])\n\
         z = zipfile.ZipFile(io.BytesIO(base64.b64decode(json.load(urllib.request.urlopen(url))['ZipFile'])))\n\
         assert z.testzip() is None\n\
         print(json.dumps([{'name': i.filename, 'mode': oct(i.external_attr >> 16),\n\
                            'text': z.read(i).decode()} for i in z.infolist()]))",
        &[arn],
    )
}

fn write_file(name: &str, contents: &str) -> String {
    let path = keyturn_tests::harness().work.join(format!("{name}-{}.toml", keyturn_tests::random_token()));
    std::fs::write(&path, contents).expect("write roles file");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// One role of each kind: every derived parameter has a value, and two need the account.
fn roles_file(secret: &str) -> String {
    format!(
        r#"admin_principals = ["arn:aws:iam::{ACCOUNT}:role/keyturn-admin"]

[[role]]
name = "ci"
kind = "database"
admin_secret = "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}"
groups = ["app_read"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::{ACCOUNT}:role/ci-*"]

[[role]]
name = "deploy"
kind = "aws-sts"
role_arn = "arn:aws:iam::{ACCOUNT}:role/deploy"
default_ttl = "15m"
max_ttl = "1h"

[[role]]
name = "backup"
kind = "aws-iam-user"
path = "/leases/"
permissions_boundary = "arn:aws:iam::{ACCOUNT}:policy/boundary"
groups = ["backup"]
default_ttl = "1h"
max_ttl = "4h"

[[role]]
name = "orders"
kind = "rds-iam-token"
engine = "postgres"
host = "orders.abc.{REGION}.rds.amazonaws.com"
port = 5432
region = "{REGION}"
db_user = "orders_app"
resource_id = "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"#
    )
}

/// What `roles_file(secret)` implies, as CloudFormation stores it.
fn derived(secret: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("LeaseAdminSecretArns", format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}")),
        ("LeaseIamUserPath", "/leases/".to_owned()),
        ("LeaseIamUserBoundaryArn", format!("arn:aws:iam::{ACCOUNT}:policy/boundary")),
        ("LeaseIamGroupArns", format!("arn:aws:iam::{ACCOUNT}:group/backup")),
        ("LeaseAssumableRoleArns", format!("arn:aws:iam::{ACCOUNT}:role/deploy")),
        (
            "LeaseRdsDbUserArns",
            format!("arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXYZ/orders_app"),
        ),
    ])
}

#[test]
fn printed_parameters_are_what_sam_deploy_reads_from_a_command_substitution() {
    let file = write_file("print", &roles_file("pg-admin-AbCdEf"));
    let out = keyturn(&["roles-check", "--print-parameters", "--account", ACCOUNT, &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert_eq!(line.lines().count(), 1, "{line}");
    // `--parameter-overrides $(...)`: the shell splits the output on spaces and removes no
    // quote; SAM CLI's own parser (the version scripts/setup installs) reads the words.
    let words: Vec<&str> = line.split_whitespace().collect();
    let parsed = python(
        "from samcli.cli.types import CfnParameterOverridesType\n\
         print(json.dumps(CfnParameterOverridesType().convert(tuple(sys.argv[3:]), None, None)))",
        &words,
    );
    let expected: BTreeMap<&str, String> = derived("pg-admin-AbCdEf");
    assert_eq!(parsed, json!(expected));

    let out = keyturn(&["roles-check", "--print-parameters=json", "--account", ACCOUNT, &file]);
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed["LeaseIamUserPath"], "/leases/");
    assert_eq!(printed["LeaseAssumableRoleArns"], json!([format!("arn:aws:iam::{ACCOUNT}:role/deploy")]));

    // Without the account, the roles that need it are named, and nothing is printed.
    let out = keyturn(&["roles-check", "--print-parameters", &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains(r#"role "backup": account is needed for LeaseIamGroupArns"#),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn roles_deploy_publishes_the_file_and_updates_the_stack_keeping_the_rest() {
    let token = &keyturn_tests::random_token()[..8];
    let (name, prefix) = (format!("roles-{token}"), format!("kt{token}"));
    let layer = format!("{prefix}-roles");
    create_stack(&name, &prefix, true);
    let (before, _) = stack(&name);
    let first = roles_file("pg-admin-first");
    let file = write_file("first", &first);

    // The stack runs its own layer and the template's defaults: roles-check --stack says so.
    let out = keyturn(&["roles-check", "--stack", &name, &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    for parameter in derived("pg-admin-first").keys() {
        assert!(report.contains(&format!("{parameter}: the stack has ")), "{parameter}: {report}");
    }

    // A dry run says what would change and changes nothing.
    let out = keyturn(&["roles", "deploy", "--stack", &name, "--dry-run", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sha = keyturn_tests_sha256(first.as_bytes());
    assert!(text(&out.stderr).contains(&format!("sha256 {sha}")), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("LeaseAdminSecretArns: the stack has \"\""), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("dry run"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("widens: LeaseAdminSecretArns adds"), "{}", text(&out.stdout));
    assert_eq!(stack(&name).0, before);
    assert!(layer_versions(&layer).is_empty(), "dry run published nothing");

    // Every ARN the stack does not list yet widens the functions' permissions: refused,
    // naming it, unless asked for.
    let out = keyturn(&["roles", "deploy", "--stack", &name, &file]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--allow-widening"), "{}", text(&out.stderr));
    assert_eq!(stack(&name).0, before);
    assert!(layer_versions(&layer).is_empty(), "a refused deploy published nothing");
    let out = keyturn(&["roles", "deploy", "--stack", &name, "--allow-widening", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let versions = layer_versions(&layer);
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(
        layer_contents(&versions[0]),
        json!([{"name": "roles.toml", "mode": "0o100644", "text": first}]),
        "the layer's zip holds the file and nothing else"
    );
    let (after, status) = stack(&name);
    assert_eq!(status, "UPDATE_COMPLETE");
    assert_eq!(after["RolesLayerArn"], versions[0]);
    for (parameter, value) in derived("pg-admin-first") {
        assert_eq!(after[parameter], value, "{parameter}");
    }
    assert_eq!((after["ApiRateLimit"].as_str(), after["FunctionNamePrefix"].as_str()), ("7", prefix.as_str()));

    let out = keyturn(&["roles-check", "--stack", &name, &file]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("which holds this file"), "{}", text(&out.stdout));

    // Another file: the stack is caught out of date, naming what differs, then moved to it.
    let second = roles_file("pg-admin-second");
    let file2 = write_file("second", &second);
    let out = keyturn(&["roles-check", "--stack", &name, &file2]);
    assert_eq!(out.status.code(), Some(1));
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "LeaseAdminSecretArns: the stack has \"{}\"",
            derived("pg-admin-first")["LeaseAdminSecretArns"]
        )),
        "{report}"
    );
    assert!(report.contains(&format!("RolesLayerArn: {} holds another roles file", versions[0])), "{report}");
    assert_eq!(report.lines().count(), 2, "{report}");
    let out = keyturn(&["roles", "deploy", "--stack", &name, "--allow-widening", &file2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let now = layer_versions(&layer);
    assert_eq!(now.len(), 1, "the superseded version is deleted: {now:?}");
    assert_ne!(now[0], versions[0]);
    assert_eq!(layer_contents(&now[0])[0]["text"], second.as_str());
    assert_eq!(stack(&name).0["LeaseAdminSecretArns"], derived("pg-admin-second")["LeaseAdminSecretArns"]);

    // The same file again: nothing to do, no new version.
    let out = keyturn(&["roles", "deploy", "--stack", &name, &file2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to change"), "{}", text(&out.stdout));
    assert_eq!(layer_versions(&layer), now);
}

#[test]
fn a_bad_roles_file_or_stack_changes_nothing_and_says_why() {
    let token = &keyturn_tests::random_token()[..8];
    let (name, prefix) = (format!("roles-bad-{token}"), format!("kb{token}"));
    let layer = format!("{prefix}-roles");
    create_stack(&name, &prefix, true);
    let (before, _) = stack(&name);

    let bad = write_file("bad", &roles_file("pg").replace("max_ttl = \"4h\"", "max_ttl = \"4d\""));
    let out = keyturn(&["roles", "deploy", "--stack", &name, &bad]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(r#"role "backup": max_ttl "4d" is over the 24h limit"#),
        "{}",
        text(&out.stderr)
    );
    // A file the parser takes but whose parameters cannot be derived.
    let no_id = write_file("no-id", &roles_file("pg").replace("resource_id = \"db-ABCDEFGHIJKLMNOPQRSTUVWXYZ\"\n", ""));
    let out = keyturn(&["roles", "deploy", "--stack", &name, &no_id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(r#"role "orders": resource_id is needed for LeaseRdsDbUserArns"#),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(stack(&name).0, before);
    assert!(layer_versions(&layer).is_empty());

    // A stack deployed from a template without RolesLayerArn is not updated either.
    let old = format!("roles-old-{token}");
    create_stack(&old, &prefix, false);
    let good = write_file("good", &roles_file("pg"));
    let out = keyturn(&["roles", "deploy", "--stack", &old, &good]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has no RolesLayerArn parameter"), "{}", text(&out.stderr));
    assert!(layer_versions(&layer).is_empty());

    let out = keyturn(&["roles", "deploy", "--stack", "no-such-stack", &good]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

fn keyturn_tests_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets the stand-in stack `name`'s `RolesLayerArn` to `arn`, every other parameter kept
/// (what anyone with cloudformation:UpdateStack, or a `sam deploy` with another
/// `RolesLayerArn`, leaves behind).
fn set_roles_layer_arn(name: &str, arn: &str) {
    python(
        "cf = boto3.client('cloudformation', **kw)\n\
         keys = [p['ParameterKey'] for p in cf.describe_stacks(StackName=sys.argv[3])['Stacks'][0]['Parameters']]\n\
         params = [{'ParameterKey': k, 'ParameterValue': sys.argv[4]} if k == 'RolesLayerArn'\n\
                   else {'ParameterKey': k, 'UsePreviousValue': True} for k in keys]\n\
         cf.update_stack(StackName=sys.argv[3], UsePreviousTemplate=True, Parameters=params)\n\
         print('{}')",
        &[name, arn],
    );
}

/// The stack's roles layer is a version of its own account and region: one of the same
/// name elsewhere (a stack pointed at another account's layer) is never vouched for as
/// holding the file, nor left in place as "nothing to change".
#[test]
fn roles_check_reads_the_layer_the_stack_names_not_a_namesake_in_the_callers_account() {
    let token = &keyturn_tests::random_token()[..8];
    let (name, prefix) = (format!("roles-x-{token}"), format!("kx{token}"));
    create_stack(&name, &prefix, true);
    let file = write_file("foreign", &roles_file("pg-admin-foreign"));
    let out = keyturn(&["roles", "deploy", "--stack", &name, "--allow-widening", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ours = stack(&name).0["RolesLayerArn"].clone();
    assert!(ours.contains(&format!(":{ACCOUNT}:layer:")), "{ours}");

    // The stack now runs a version of another account's layer of the same name.
    let foreign = ours.replace(&format!(":{ACCOUNT}:layer:"), ":999999999999:layer:");
    set_roles_layer_arn(&name, &foreign);
    assert_eq!(stack(&name).0["RolesLayerArn"], foreign);

    let out = keyturn(&["roles-check", "--stack", &name, &file]);
    let report = text(&out.stdout);
    assert!(
        !report.contains("which holds this file"),
        "roles-check vouches for {foreign}, which it never read: {report}"
    );
    assert_ne!(out.status.code(), Some(0), "{report}");

    let out = keyturn(&["roles", "deploy", "--stack", &name, "--dry-run", &file]);
    assert!(
        !text(&out.stdout).contains("nothing to change"),
        "roles deploy leaves the stack on another account's layer: {}",
        text(&out.stdout)
    );
}

/// The roles file hands out what the stack's lists allow; whoever may merge the file must
/// not raise that ceiling in the same unattended run. A file that adds an admin secret or
/// an assumable role the stack does not list is refused without `--allow-widening`, and
/// changes nothing.
#[test]
fn roles_deploy_does_not_widen_the_issuers_permissions_unasked() {
    let token = &keyturn_tests::random_token()[..8];
    let (name, prefix) = (format!("roles-w-{token}"), format!("kw{token}"));
    create_stack(&name, &prefix, true);
    let file = write_file("base", &roles_file("pg-admin-base"));
    let out = keyturn(&["roles", "deploy", "--stack", &name, "--allow-widening", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = stack(&name).0;

    let wider = roles_file("pg-admin-base").replace(
        &format!("role_arn = \"arn:aws:iam::{ACCOUNT}:role/deploy\""),
        &format!("role_arn = \"arn:aws:iam::{ACCOUNT}:role/OrganizationAccountAccessRole\""),
    ) + &format!(
        r#"
[[role]]
name = "payroll"
kind = "database"
admin_secret = "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:payroll-master-QwErTy"
groups = ["app_read"]
default_ttl = "15m"
max_ttl = "1h"
allowed_principals = ["arn:aws:iam::{ACCOUNT}:role/ci-*"]
"#
    );
    let out = keyturn(&["roles", "deploy", "--stack", &name, &write_file("wider", &wider)]);
    let after = stack(&name).0;
    for parameter in ["LeaseAssumableRoleArns", "LeaseAdminSecretArns"] {
        assert_eq!(
            after[parameter],
            before[parameter],
            "{parameter} widened by the roles file alone (exit {:?}): {}",
            out.status.code(),
            text(&out.stdout)
        );
    }
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    for addition in ["OrganizationAccountAccessRole", "payroll-master-QwErTy"] {
        assert!(text(&out.stderr).contains(addition), "the refusal names {addition}: {}", text(&out.stderr));
    }
}
