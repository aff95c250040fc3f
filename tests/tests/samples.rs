//! The sample events under events/ are what the functions accept, and the SAM template is
//! valid CloudFormation (cfn-lint, from the project's venv).

use keyturn::rotation::{RotationEvent, Step};

#[test]
fn sample_rotation_events_parse() {
    for function in ["rotate-database", "rotate-iam-key"] {
        let dir = keyturn_tests::project_root().join("events").join(function);
        for (file, step) in [
            ("createSecret.json", Step::Create),
            ("setSecret.json", Step::Set),
            ("testSecret.json", Step::Test),
            ("finishSecret.json", Step::Finish),
        ] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let event = RotationEvent::from_value(value).unwrap_or_else(|e| panic!("{function}/{file}: {e}"));
            assert_eq!(event.step, step, "{function}/{file}");
        }
    }
}

#[test]
fn sam_template_passes_cfn_lint() {
    let root = keyturn_tests::project_root();
    let out = std::process::Command::new(keyturn_tests::moto::venv().join("bin/cfn-lint"))
        .arg(root.join("infra/template.yaml"))
        .output()
        .expect("run cfn-lint (make setup installs it with moto)");
    assert!(
        out.status.success(),
        "cfn-lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SAM template as JSON: PyYAML from the project's venv (cfn-lint's dependency), with
/// CloudFormation's short tags (`!Sub x`) read as their long form (`{"Fn::Sub": x}`).
fn template() -> serde_json::Value {
    const TO_JSON: &str = r#"
import json, sys, yaml
class Loader(yaml.SafeLoader):
    pass
def intrinsic(loader, tag, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if tag == "Ref" else "Fn::" + tag: value}
Loader.add_multi_constructor("!", intrinsic)
with open(sys.argv[1]) as f:
    print(json.dumps(yaml.load(f, Loader=Loader)))
"#;
    let path = keyturn_tests::project_root().join("infra/template.yaml");
    serde_json::from_str(&python(TO_JSON, &[path.to_str().unwrap()])).expect("template as JSON")
}

fn python(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(keyturn_tests::moto::venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run the venv's python (make setup)");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Whether `pattern` matches each candidate whole, as CloudFormation's AllowedPattern does.
fn full_matches(pattern: &str, candidates: &[&str]) -> Vec<bool> {
    const MATCH: &str = "import re, sys\nfor c in sys.argv[2:]: print(bool(re.fullmatch(sys.argv[1], c)))";
    let args: Vec<&str> = std::iter::once(pattern).chain(candidates.iter().copied()).collect();
    python(MATCH, &args).lines().map(|l| l == "True").collect()
}

/// A string or a list of strings, as a list.
fn strings(value: &serde_json::Value) -> Vec<&str> {
    match value {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// The statements of a function's inline policies, both branches of an `!If` included.
fn statements(function: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut found = Vec::new();
    for policy in function["Properties"]["Policies"].as_array().into_iter().flatten() {
        for statement in policy["Statement"].as_array().into_iter().flatten() {
            match statement.get("Fn::If") {
                Some(branches) => {
                    found.extend(branches.as_array().unwrap()[1..].iter().filter(|b| b.get("Effect").is_some()))
                }
                None => found.push(statement),
            }
        }
    }
    found
}

#[test]
fn sam_template_grants_least_privilege() {
    use keyturn::rotation::iam_key::{CREATING_TAG, TAG_PREFIX};
    let template = template();
    let resources = template["Resources"].as_object().unwrap();
    let of_type = |kind: &str| resources.iter().filter(move |(_, r)| r["Type"] == kind).collect::<Vec<_>>();
    assert!(
        resources.values().all(|r| !r["Type"].as_str().unwrap().starts_with("AWS::IAM::")),
        "every grant belongs to one function's own Policies"
    );
    let functions = of_type("AWS::Serverless::Function");
    assert_eq!(functions.len(), 3);
    for (name, function) in &functions {
        let own_name = function["Properties"]["FunctionName"]["Fn::Sub"].as_str().expect("FunctionName set with !Sub");
        let own_arn =
            format!("arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:{own_name}");
        let is_database = function["Metadata"]["BuildProperties"]["Binary"] == "rotate-database";
        let mut rotates = false;
        for statement in statements(function) {
            let actions = strings(&statement["Action"]);
            let condition = &statement["Condition"];
            let secretsmanager: Vec<&str> =
                actions.iter().copied().filter(|a| a.starts_with("secretsmanager:")).collect();
            if !secretsmanager.is_empty() {
                let allowed = &condition["StringEquals"]["secretsmanager:resource/AllowRotationLambdaArn"];
                if allowed.is_null() {
                    // Only admin secrets, listed, read-only, and only for database functions.
                    assert!(is_database, "{name}: {statement}");
                    assert_eq!(statement["Resource"], serde_json::json!({"Ref": "MasterSecretArns"}), "{name}");
                    assert!(
                        secretsmanager.iter().all(|a| [
                            "secretsmanager:GetSecretValue",
                            "secretsmanager:DescribeSecret"
                        ]
                        .contains(a)),
                        "{name}: {statement}"
                    );
                } else {
                    assert_eq!(allowed["Fn::Sub"].as_str(), Some(own_arn.as_str()), "{name}: its own ARN");
                    rotates |= secretsmanager.contains(&"secretsmanager:PutSecretValue");
                }
            }
            if actions.iter().any(|a| a.starts_with("kms:")) {
                assert_eq!(
                    condition["StringEquals"]["kms:ViaService"]["Fn::Sub"],
                    "secretsmanager.${AWS::Region}.amazonaws.com",
                    "{name}: {statement}"
                );
                let context = ["StringEquals", "StringLike"]
                    .iter()
                    .find_map(|op| condition[op].get("kms:EncryptionContext:SecretARN"));
                assert!(context.is_some(), "{name}: KMS for named secrets only: {statement}");
            }
            if actions.iter().any(|a| *a == "iam:TagUser" || *a == "iam:UntagUser") {
                assert!(actions.iter().all(|a| *a == "iam:TagUser" || *a == "iam:UntagUser"), "{name}: {statement}");
                assert_eq!(
                    strings(&condition["ForAllValues:StringLike"]["aws:TagKeys"]),
                    ["AKIA*", CREATING_TAG],
                    "{name}"
                );
                assert_eq!(condition["Null"]["aws:TagKeys"], "false", "{name}: ForAllValues needs the key present");
                assert_eq!(
                    condition["StringLikeIfExists"][format!("aws:RequestTag/{CREATING_TAG}")],
                    format!("{TAG_PREFIX}*"),
                    "{name}"
                );
            }
            if !is_database {
                assert!(!actions.iter().any(|a| a.starts_with("rds:")), "{name}: {statement}");
            }
        }
        assert!(rotates, "{name}: no statement to rotate its secrets");
    }
    let permissions = of_type("AWS::Lambda::Permission");
    assert_eq!(permissions.len(), functions.len(), "one invoke permission per function");
    for (name, permission) in permissions {
        let p = &permission["Properties"];
        assert_eq!(p["Principal"], "secretsmanager.amazonaws.com", "{name}");
        assert_eq!(p["SourceAccount"], serde_json::json!({"Ref": "AWS::AccountId"}), "{name}");
        let source = p["SourceArn"]["Fn::Sub"].as_str().unwrap_or_default();
        assert!(
            source.starts_with("arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"),
            "{name}"
        );
    }
    let pattern = template["Parameters"]["IamUserPath"]["AllowedPattern"].as_str().unwrap();
    let candidates = ["/keyturn/", "/ci/keyturn/", "/", "//", "/keyturn", "keyturn/", "/key*/", "/a//b/"];
    let expected = [true, true, false, false, false, false, false, false];
    assert_eq!(full_matches(pattern, &candidates), expected, "IamUserPath {pattern:?} on {candidates:?}");
    let default = template["Parameters"]["IamUserPath"]["Default"].as_str().unwrap();
    assert_eq!(full_matches(pattern, &[default]), [true]);
}

#[test]
fn the_alternating_function_checks_its_admin_secrets_itself() {
    let template = template();
    let functions: Vec<&serde_json::Value> = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Properties"]["Environment"]["Variables"]["KEYTURN_STRATEGY"] == "alternating-users")
        .collect();
    assert_eq!(functions.len(), 1);
    let pinned = &functions[0]["Properties"]["Environment"]["Variables"]["KEYTURN_ADMIN_SECRET_ARNS"]["Fn::If"];
    assert_eq!(pinned[0], "HasMasterSecrets", "{pinned}");
    assert_eq!(pinned[1]["Fn::Join"][1], serde_json::json!({"Ref": "MasterSecretArns"}), "{pinned}");
}
