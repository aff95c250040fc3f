//! The sample events under events/ are what the functions accept (or, for the dynamic
//! credentials, what API Gateway and EventBridge send to the routes and schedule the template
//! declares), and the SAM template is valid CloudFormation (cfn-lint, from the project's
//! venv) that grants each function only what it needs.

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
    use keyturn::rotation::iam_key::{CREATING_TAG, ROTATED_TAG, TAG_PREFIX};
    let template = template();
    let resources = template["Resources"].as_object().unwrap();
    let of_type = |kind: &str| resources.iter().filter(move |(_, r)| r["Type"] == kind).collect::<Vec<_>>();
    // Every grant belongs to one function's own Policies, but for the role EventBridge
    // Scheduler invokes the reaper with (its own test below).
    let iam: Vec<&String> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str().unwrap().starts_with("AWS::IAM::"))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(iam, ["ReapLeasesScheduleRole"]);
    let functions = of_type("AWS::Serverless::Function");
    assert_eq!(functions.len(), 5);
    let rotation_functions = functions.iter().filter(|(_, f)| !is_lease_function(f)).count();
    assert_eq!(rotation_functions, 3);
    for (name, function) in &functions {
        let own_name = function["Properties"]["FunctionName"]["Fn::Sub"].as_str().expect("FunctionName set with !Sub");
        let own_arn =
            format!("arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:{own_name}");
        let is_database = binary_of(function) == "rotate-database";
        let is_lease = is_lease_function(function);
        let mut rotates = false;
        for statement in statements(function) {
            let actions = strings(&statement["Action"]);
            let condition = &statement["Condition"];
            let secretsmanager: Vec<&str> =
                actions.iter().copied().filter(|a| a.starts_with("secretsmanager:")).collect();
            if !secretsmanager.is_empty() {
                let allowed = &condition["StringEquals"]["secretsmanager:resource/AllowRotationLambdaArn"];
                if allowed.is_null() && is_lease {
                    // Only the admin secrets the roles name, listed, and only read (their
                    // value, and the tags of one RDS manages).
                    assert_eq!(statement["Resource"], serde_json::json!({"Ref": "LeaseAdminSecretArns"}), "{name}");
                    assert_eq!(
                        secretsmanager,
                        ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                        "{name}: {statement}"
                    );
                } else if allowed.is_null() {
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
            if actions.iter().any(|a| *a == "iam:TagUser" || *a == "iam:UntagUser") && !is_lease {
                assert!(actions.iter().all(|a| *a == "iam:TagUser" || *a == "iam:UntagUser"), "{name}: {statement}");
                assert_eq!(
                    strings(&condition["ForAllValues:StringLike"]["aws:TagKeys"]),
                    ["AKIA*", CREATING_TAG, ROTATED_TAG],
                    "{name}"
                );
                assert_eq!(condition["Null"]["aws:TagKeys"], "false", "{name}: ForAllValues needs the key present");
                for tag in [CREATING_TAG, ROTATED_TAG] {
                    assert_eq!(
                        condition["StringLikeIfExists"][format!("aws:RequestTag/{tag}")],
                        format!("{TAG_PREFIX}*"),
                        "{name}"
                    );
                }
            }
            // Only the lookup of an RDS-managed admin secret's endpoint, by the functions that
            // act as an admin.
            if actions.iter().any(|a| a.starts_with("rds:")) {
                assert!(is_database || is_lease, "{name}: {statement}");
                assert!(
                    actions.iter().all(|a| ["rds:DescribeDBInstances", "rds:DescribeDBClusters"].contains(a)),
                    "{name}: {statement}"
                );
            }
        }
        assert!(rotates || is_lease, "{name}: no statement to rotate its secrets");
    }
    // issue-credentials' invoke permissions come from its events (SAM scopes them to the
    // API's routes); Scheduler invokes the reaper with a role, which needs none.
    let permissions = of_type("AWS::Lambda::Permission");
    assert_eq!(permissions.len(), rotation_functions, "one invoke permission per rotation function");
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

const LEASE_BINARIES: [&str; 2] = ["issue-credentials", "reap-leases"];

fn is_lease_function(function: &serde_json::Value) -> bool {
    LEASE_BINARIES.contains(&binary_of(function))
}

/// The package a function is built from: its CodeUri, the package's own directory, so that
/// `sam build` builds it alone, with its own features.
fn binary_of(function: &serde_json::Value) -> &str {
    let uri = function["Properties"]["CodeUri"].as_str().expect("CodeUri");
    let name = uri.strip_prefix("../functions/").unwrap_or_else(|| panic!("CodeUri {uri} is not a function's package"));
    assert!(function["Metadata"]["BuildProperties"]["Binary"].is_null(), "{name}: the package's only binary is built");
    name
}

/// The function built from that binary.
fn function_of<'a>(template: &'a serde_json::Value, binary: &str) -> &'a serde_json::Value {
    let found: Vec<&serde_json::Value> = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function" && binary_of(r) == binary)
        .collect();
    assert_eq!(found.len(), 1, "one function built from {binary}");
    found[0]
}

/// The routes of the credentials API, as `METHOD /path` (API Gateway's route keys).
fn api_routes(template: &serde_json::Value) -> Vec<String> {
    let mut routes = Vec::new();
    for (name, resource) in template["Resources"].as_object().unwrap() {
        for (event_name, event) in resource["Properties"]["Events"].as_object().into_iter().flatten() {
            assert_ne!(event["Type"], "Api", "{name}.{event_name}: the credentials API is an HttpApi");
            if event["Type"] == "HttpApi" {
                let p = &event["Properties"];
                routes.push(format!("{} {}", p["Method"].as_str().unwrap(), p["Path"].as_str().unwrap()));
            }
        }
    }
    routes.sort();
    routes
}

#[test]
fn every_route_of_the_credentials_api_requires_iam_authorization() {
    let template = template();
    let resources = template["Resources"].as_object().unwrap();
    let apis: Vec<_> = resources.iter().filter(|(_, r)| r["Type"] == "AWS::Serverless::HttpApi").collect();
    assert_eq!(apis.len(), 1);
    let (api_name, api) = apis[0];
    let auth = &api["Properties"]["Auth"];
    assert_eq!(auth["EnableIamAuthorizer"], true, "{api_name}");
    assert_eq!(auth["DefaultAuthorizer"], "AWS_IAM", "{api_name}");
    assert!(api["Properties"].get("DefinitionBody").is_none() && api["Properties"].get("DefinitionUri").is_none());
    assert!(resources.values().all(|r| !r["Type"].as_str().unwrap().starts_with("AWS::ApiGateway")));

    assert_eq!(
        api_routes(&template),
        [
            "DELETE /v1/leases/{lease_id}",
            "GET /v1/leases",
            "GET /v1/roles",
            "POST /v1/credentials/{role}",
            "POST /v1/leases/{lease_id}/renew"
        ]
    );
    for resource in resources.values() {
        for event in resource["Properties"]["Events"].as_object().into_iter().flatten().map(|(_, e)| e) {
            if event["Type"] != "HttpApi" {
                continue;
            }
            let p = &event["Properties"];
            assert_eq!(binary_of(resource), "issue-credentials", "{p}");
            assert_eq!(p["Auth"]["Authorizer"], "AWS_IAM", "every route names its authorizer: {p}");
            assert_eq!(p["ApiId"], serde_json::json!({"Ref": api_name}), "{p}");
            assert_eq!(p["PayloadFormatVersion"], "2.0", "{p}");
        }
    }
}

/// The template serves exactly the contract's route table, and its `CredentialsApiUrl`
/// output names every route and no other.
#[test]
fn the_templates_routes_and_outputs_are_the_contracts_table() {
    use keyturn::contract::Route;
    let template = template();
    let mut table: Vec<String> = Route::ALL.iter().map(|r| r.key()).collect();
    table.sort();
    assert_eq!(api_routes(&template), table);
    let description = template["Outputs"]["CredentialsApiUrl"]["Description"].as_str().unwrap();
    for route in Route::ALL {
        assert!(description.contains(&route.key()), "{} missing from {description:?}", route.key());
    }
    assert_eq!(description.matches("/v1/").count(), Route::ALL.len(), "{description:?}");
}

#[test]
fn the_lease_functions_touch_only_the_lease_table_and_the_listed_admin_secrets() {
    let template = template();
    let table_arn = serde_json::json!({"Fn::GetAtt": ["LeaseTable", "Arn"]});
    // Each lease function queries its indexes only: the reaper the leases due, the issuer a
    // caller's own (GET /v1/leases) and, for API administrators, every live or failing one.
    let index_of = |binary: &str| -> &[&str] {
        match binary {
            "reap-leases" => &["due"],
            "issue-credentials" => &["holder", "due"],
            other => panic!("{other} is not a lease function"),
        }
    };
    let item_actions = [
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
    ];
    for (name, function) in template["Resources"].as_object().unwrap() {
        if function["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let binary = binary_of(function);
        let mut queries = false;
        let mut writes = false;
        for statement in statements(function) {
            let actions = strings(&statement["Action"]);
            assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none(), "{name}");
            for action in &actions {
                assert!(!action.contains('*'), "{name}: a wildcard action {action}");
                assert!(
                    !["dynamodb:Scan", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLDelete"]
                        .contains(action),
                    "{name}: {action} (the lease table is the audit record, read by key or by its indexes only)"
                );
            }
            let touches = |service: &str| actions.iter().any(|a| a.starts_with(service));
            if touches("dynamodb:") || touches("secretsmanager:") {
                let resources: Vec<&serde_json::Value> = match &statement["Resource"] {
                    serde_json::Value::Array(items) => items.iter().collect(),
                    one => vec![one],
                };
                for resource in resources {
                    assert_ne!(resource, "*", "{name}: {statement}");
                    if touches("dynamodb:") {
                        assert!(resource.as_str().is_none_or(|r| !r.contains('*')), "{name}: {statement}");
                    }
                }
            }
            if !touches("dynamodb:") {
                continue;
            }
            assert!(LEASE_BINARIES.contains(&binary), "{name}: only the lease functions use DynamoDB");
            if actions == ["dynamodb:Query"] {
                let indexes: Vec<serde_json::Value> = index_of(binary)
                    .iter()
                    .map(|index| serde_json::json!({"Fn::Sub": format!("${{LeaseTable.Arn}}/index/{index}")}))
                    .collect();
                let resources = match &statement["Resource"] {
                    serde_json::Value::Array(items) => items.clone(),
                    one => vec![one.clone()],
                };
                assert_eq!(resources, indexes, "{name}: Query on its indexes only");
                assert!(!queries, "{name}: one Query statement");
                queries = true;
            } else {
                assert!(actions.iter().all(|a| item_actions.contains(a)), "{name}: {statement}");
                assert_eq!(statement["Resource"], table_arn, "{name}: the lease table's items only");
                writes |= actions.contains(&"dynamodb:UpdateItem");
            }
        }
        if LEASE_BINARIES.contains(&binary) {
            assert!(writes, "{name}: no statement to write leases");
            assert!(queries, "{name}: no statement to query its index");
        }
    }
}

#[test]
fn the_lease_table_is_kept_as_the_audit_record() {
    let template = template();
    let table = &template["Resources"]["LeaseTable"];
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    let p = &table["Properties"];
    assert_eq!(p["DeletionProtectionEnabled"], true);
    assert_eq!(p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true);
    assert_eq!(p["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert!(p.get("TimeToLiveSpecification").is_none(), "leases are never expired out of the table");

    // Keys, attributes and indexes are the store's own CreateTable's (the table every test
    // runs on), built from the same constants, so the two cannot drift apart.
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .build();
    let request = keyturn::aws::dynamodb::DynamoLeaseStore::new(&sdk, "leases").create_table_request().unwrap();
    let input = request.as_input();
    let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> serde_json::Value {
        schema
            .iter()
            .map(|k| serde_json::json!({"AttributeName": k.attribute_name(), "KeyType": k.key_type().as_str()}))
            .collect()
    };
    assert_eq!(p["KeySchema"], keys(input.get_key_schema().as_deref().unwrap_or_default()));
    assert_eq!(p["KeySchema"], serde_json::json!([{"AttributeName": "lease_id", "KeyType": "HASH"}]));
    let sorted = |mut pairs: Vec<(String, String)>| {
        pairs.sort();
        pairs
    };
    let attributes = sorted(
        p["AttributeDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["AttributeName"].as_str().unwrap().to_owned(), a["AttributeType"].as_str().unwrap().to_owned()))
            .collect(),
    );
    let expected = sorted(
        input
            .get_attribute_definitions()
            .iter()
            .flatten()
            .map(|a| (a.attribute_name().to_owned(), a.attribute_type().as_str().to_owned()))
            .collect(),
    );
    assert_eq!(attributes, expected);
    let indexes: serde_json::Value = input
        .get_global_secondary_indexes()
        .iter()
        .flatten()
        .map(|i| {
            let projection = i.projection().and_then(|p| p.projection_type()).map(|t| t.as_str());
            serde_json::json!({
                "IndexName": i.index_name(),
                "KeySchema": keys(i.key_schema()),
                "Projection": {"ProjectionType": projection},
            })
        })
        .collect();
    assert_eq!(p["GlobalSecondaryIndexes"], indexes);
    let names: Vec<&str> = indexes.as_array().unwrap().iter().map(|i| i["IndexName"].as_str().unwrap()).collect();
    assert_eq!(names, ["due", "holder"]);
}

#[test]
fn the_lease_functions_read_the_roles_layer_and_the_lease_table() {
    let template = template();
    let known = [
        "KEYTURN_ROLES_FILE",
        "KEYTURN_LEASE_TABLE",
        "KEYTURN_CONNECT_TIMEOUT_SECS",
        "KEYTURN_STATEMENT_TIMEOUT_SECS",
        "KEYTURN_EXTRA_CA_FILES",
        "KEYTURN_SCRAM_ITERATIONS",
        "SECRETS_MANAGER_ENDPOINT",
    ];
    let layer = &template["Resources"]["RolesLayer"];
    assert_eq!(layer["Type"], "AWS::Serverless::LayerVersion");
    assert_eq!(layer["Metadata"]["BuildMethod"], "makefile");
    let makefile = std::fs::read_to_string(keyturn_tests::project_root().join("infra/Makefile")).unwrap();
    assert!(makefile.contains("build-RolesLayer:") && makefile.contains("$(ARTIFACTS_DIR)/roles.toml"));
    for binary in LEASE_BINARIES {
        let p = &function_of(&template, binary)["Properties"];
        let env = p["Environment"]["Variables"].as_object().unwrap();
        assert_eq!(env["KEYTURN_ROLES_FILE"], "/opt/roles.toml", "{binary}");
        assert_eq!(env["KEYTURN_LEASE_TABLE"], serde_json::json!({"Ref": "LeaseTable"}), "{binary}");
        for key in env.keys() {
            assert!(
                known.contains(&key.as_str()) || (binary == "reap-leases" && key == "KEYTURN_REAP_BATCH"),
                "{binary}: {key} is not a setting it reads"
            );
        }
        // RolesLayerArn when given, else the stack's own layer.
        assert_eq!(
            p["Layers"],
            serde_json::json!([{"Fn::If": ["HasRolesLayerArn", {"Ref": "RolesLayerArn"}, {"Ref": "RolesLayer"}]}]),
            "{binary}"
        );
        assert_eq!(p["VpcConfig"]["SubnetIds"], serde_json::json!({"Ref": "SubnetIds"}), "{binary}");
    }
    let issue = &function_of(&template, "issue-credentials")["Properties"];
    assert!(issue["Timeout"].as_u64().unwrap() < 30, "under API Gateway's 30 s integration timeout");
    let reap = &function_of(&template, "reap-leases")["Properties"];
    assert_eq!(reap["Timeout"], 60);
    assert!(reap["Events"].is_null(), "scheduled by EventBridge Scheduler, not by a rule");
    assert_eq!(reap["EventInvokeConfig"]["MaximumRetryAttempts"], 0, "the next run is the retry");
}

#[test]
fn the_reaper_runs_every_minute_on_eventbridge_scheduler_with_a_role_of_its_own() {
    let template = template();
    let resources = template["Resources"].as_object().unwrap();
    let schedules: Vec<_> = resources.iter().filter(|(_, r)| r["Type"] == "AWS::Scheduler::Schedule").collect();
    assert_eq!(schedules.len(), 1);
    let (_, schedule) = schedules[0];
    let p = &schedule["Properties"];
    assert_eq!(p["ScheduleExpression"], "rate(1 minute)");
    assert_eq!(p["FlexibleTimeWindow"]["Mode"], "OFF", "runs at the minute");
    assert_eq!(p["State"], "ENABLED");
    let target = &p["Target"];
    assert_eq!(target["Arn"], serde_json::json!({"Fn::GetAtt": ["ReapLeases", "Arn"]}));
    assert_eq!(target["RetryPolicy"]["MaximumRetryAttempts"], 0, "the next minute's run is the retry");
    assert_eq!(target["RetryPolicy"]["MaximumEventAgeInSeconds"], 60);
    let queue = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0].as_str().expect("a dead-letter queue");
    assert_eq!(resources[queue]["Type"], "AWS::SQS::Queue");
    assert_eq!(resources[queue]["Properties"]["SqsManagedSseEnabled"], true);
    // Only over TLS, whoever asks.
    let policies: Vec<_> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::SQS::QueuePolicy")
        .filter(|r| r["Properties"]["Queues"] == serde_json::json!([{"Ref": queue}]))
        .collect();
    assert_eq!(policies.len(), 1, "the dead-letter queue's policy");
    let deny = &policies[0]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(deny["Effect"], "Deny");
    assert_eq!(deny["Action"], "sqs:*");
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    // The input is JSON once Scheduler fills its placeholders in: the sample event is that.
    let input = target["Input"].as_str().unwrap();
    let sample =
        std::fs::read_to_string(keyturn_tests::project_root().join("events/reap-leases/scheduled.json")).unwrap();
    let sample: serde_json::Value = serde_json::from_str(&sample).unwrap();
    let input: serde_json::Value = serde_json::from_str(input).expect("Input is JSON");
    assert_eq!(
        input.as_object().unwrap().keys().collect::<Vec<_>>(),
        sample.as_object().unwrap().keys().collect::<Vec<_>>(),
        "events/reap-leases/scheduled.json is the schedule's input"
    );
    assert_eq!(input["source"], sample["source"]);

    // The role Scheduler invokes with: only this account's schedules may take it, and it may
    // invoke the reaper and write to its dead-letter queue, nothing else.
    let role_name = target["RoleArn"]["Fn::GetAtt"][0].as_str().unwrap();
    let role = &resources[role_name]["Properties"];
    let trust = &role["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1);
    assert_eq!(trust[0]["Principal"]["Service"], "scheduler.amazonaws.com");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        serde_json::json!({"Ref": "AWS::AccountId"})
    );
    let mut granted = Vec::new();
    for policy in role["Policies"].as_array().unwrap() {
        for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_eq!(statement["Effect"], "Allow");
            granted.push((statement["Action"].clone(), statement["Resource"].clone()));
        }
    }
    assert_eq!(
        granted,
        [
            (serde_json::json!("lambda:InvokeFunction"), serde_json::json!({"Fn::GetAtt": ["ReapLeases", "Arn"]})),
            (serde_json::json!("sqs:SendMessage"), serde_json::json!({"Fn::GetAtt": [queue, "Arn"]})),
        ]
    );
}

/// `/v1/leases/{lease_id}/renew` with its parameters filled in, as API Gateway's rawPath.
fn fill(path: &str, parameters: &serde_json::Value) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => parameters[name].as_str().unwrap_or_else(|| panic!("no path parameter {name}")).to_owned(),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn sample_credential_events_are_what_api_gateway_sends_to_the_routes() {
    use keyturn::lease::principal::principal_allowed;
    use keyturn::lease::role::Roles;
    let root = keyturn_tests::project_root();
    let template = template();
    let routes = api_routes(&template);
    let roles = Roles::load(&root.join("infra/roles.example.toml")).unwrap();
    let mut seen = Vec::new();
    for file in ["issue.json", "renew.json", "revoke.json", "list-roles.json", "list-leases.json"] {
        let text = std::fs::read_to_string(root.join("events/issue-credentials").join(file)).unwrap();
        let event: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let context = &event["requestContext"];
        assert_eq!(event["version"], "2.0", "{file}");
        assert_eq!(context["stage"], "$default", "{file}");
        let route_key = event["routeKey"].as_str().unwrap();
        assert_eq!(context["routeKey"], route_key, "{file}");
        assert!(routes.iter().any(|k| k == route_key), "{file}: {route_key} is not a route of the template");
        let (method, path) = route_key.split_once(' ').unwrap();
        assert_eq!(context["http"]["method"], method, "{file}");
        let raw_path = fill(path, &event["pathParameters"]);
        assert_eq!(event["rawPath"], raw_path.as_str(), "{file}");
        assert_eq!(context["http"]["path"], raw_path.as_str(), "{file}");
        let iam = &context["authorizer"]["iam"];
        for key in ["accessKey", "accountId", "callerId", "userArn", "userId"] {
            assert!(iam[key].as_str().is_some_and(|v| !v.is_empty()), "{file}: authorizer.iam.{key}");
        }
        assert_eq!(iam["accountId"], context["accountId"], "{file}: a caller of the API's own account");
        assert!(iam.get("cognitoIdentity").is_some_and(serde_json::Value::is_null), "{file}");
        assert!(event["headers"].as_object().unwrap().keys().all(|h| *h == h.to_lowercase()), "{file}");
        assert_eq!(event["isBase64Encoded"], false, "{file}");
        // API Gateway leaves the body out when there is none.
        let body: Option<serde_json::Value> =
            event.get("body").map(|b| serde_json::from_str(b.as_str().unwrap()).unwrap());
        if let Some(body) = &body {
            assert!(body["ttl_seconds"].is_u64(), "{file}: {body}");
        }
        if file == "issue.json" {
            let role = roles.get(event["pathParameters"]["role"].as_str().unwrap()).expect("a role of the example");
            let caller = iam["userArn"].as_str().unwrap();
            assert!(principal_allowed(caller, &role.allowed_principals), "{file}: {caller} may request {}", role.name);
            let ttl = body.expect("issue.json asks for a TTL")["ttl_seconds"].as_u64().unwrap();
            assert!(ttl <= role.max_ttl.as_secs(), "{file}: within the role's max_ttl");
        }
        // The function reads it as this request, from this caller.
        let request = keyturn::lease::api::ApiRequest::from_event(event.clone())
            .unwrap_or_else(|r| panic!("{file}: refused with {}", r.status));
        assert_eq!((request.method.as_str(), request.path.as_str()), (method, raw_path.as_str()), "{file}");
        assert_eq!(request.caller, iam["userArn"].as_str().unwrap(), "{file}");
        if let Some(id) = event["pathParameters"]["lease_id"].as_str() {
            assert!(keyturn::lease::name::is_lease_id(id), "{file}: {id} is not a lease id keyturn issues");
        }
        seen.push(route_key.to_owned());
    }
    seen.sort();
    assert_eq!(seen, routes, "one sample per route");

    let text = std::fs::read_to_string(root.join("events/reap-leases/scheduled.json")).unwrap();
    let event: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(event["source"], "keyturn.scheduler");
    let schedule = event["schedule"].as_str().unwrap();
    assert!(
        schedule.ends_with(":schedule/keyturn/keyturn-reap-leases"),
        "the schedule the template names with the default prefix: {schedule}"
    );
}

#[test]
fn the_lease_functions_reach_only_users_under_the_lease_path_and_the_listed_roles() {
    use keyturn::backend::aws::tag;
    let template = template();
    let user_path =
        serde_json::json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:user${LeaseIamUserPath}*"});
    let boundary = serde_json::json!({"Ref": "LeaseIamUserBoundaryArn"});
    let mut creates = false;
    for name in ["IssueCredentials", "ReapLeases"] {
        let function = &template["Resources"][name];
        for statement in statements(function) {
            let actions = strings(&statement["Action"]);
            for action in &actions {
                match action.split_once(':').map(|(service, _)| service) {
                    Some("iam") if *action == "iam:AddUserToGroup" => {
                        assert_eq!(statement["Resource"], serde_json::json!({"Ref": "LeaseIamGroupArns"}), "{name}");
                    }
                    Some("iam") => assert_eq!(statement["Resource"], user_path, "{name}: {action}"),
                    Some("sts") => {
                        assert_eq!(name, "IssueCredentials", "the reaper assumes no role");
                        assert_eq!(statement["Resource"], serde_json::json!({"Ref": "LeaseAssumableRoleArns"}));
                    }
                    Some("rds-db") => {
                        assert_eq!(name, "IssueCredentials", "the reaper signs no token");
                        assert_eq!(statement["Resource"], serde_json::json!({"Ref": "LeaseRdsDbUserArns"}));
                    }
                    _ => {}
                }
                // What makes a user or gives it rights carries the boundary, checked by IAM.
                if ["iam:CreateUser", "iam:AttachUserPolicy", "iam:PutUserPolicy"].contains(action) {
                    assert_eq!(name, "IssueCredentials", "the reaper creates and grants nothing");
                    assert_eq!(statement["Condition"]["StringEquals"]["iam:PermissionsBoundary"], boundary);
                    creates = true;
                }
                if *action == "iam:TagUser" {
                    // Only keyturn's own tags: a compromised issuer cannot retag users for
                    // another tool's policies.
                    let keys = strings(&statement["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]);
                    assert_eq!(keys, [tag::LEASE_ID, tag::CALLER, tag::EXPIRES_AT], "{name}");
                    assert_eq!(statement["Condition"]["Null"]["aws:TagKeys"], "false", "{name}");
                }
                assert!(
                    !["iam:PutUserPermissionsBoundary", "iam:DeleteUserPermissionsBoundary", "iam:CreateLoginProfile"]
                        .contains(action),
                    "{name}: {action}"
                );
            }
        }
    }
    assert!(creates, "issue-credentials can create IAM users once a boundary is given");
}

/// The functions' log groups and the API's access log outlive the stack, as the lease table
/// does: they are the record of who got which credential and what each function did, and
/// a stack deleted, or a group replaced by a new `FunctionNamePrefix`, must not take them
/// along. It is also what docs/deploying.md's upgrade relies on: CloudFormation imports
/// the log groups Lambda made for an older stack (`--change-set-type IMPORT`) only into
/// resources whose `DeletionPolicy` is `Retain`.
#[test]
fn the_log_groups_outlive_the_stack_and_can_be_imported() {
    let template = template();
    let groups: Vec<_> =
        template["Resources"].as_object().unwrap().iter().filter(|(_, r)| r["Type"] == "AWS::Logs::LogGroup").collect();
    assert_eq!(groups.len(), 6, "one per function and the API's access log");
    for (name, group) in groups {
        assert_eq!(group["DeletionPolicy"], "Retain", "{name}: deleted with the stack, and cannot be imported");
        assert_eq!(group["UpdateReplacePolicy"], "Retain", "{name}: deleted when replaced");
    }
}

/// Only keyturn's own schedule may use the reaper's schedule role: its trust names the
/// schedule group the schedule is in (`aws:SourceArn`, which Scheduler sets to the group's
/// ARN), a group of the stack's own, beside `aws:SourceAccount`. With the account alone,
/// any principal allowed to pass the role to Scheduler (AmazonEventBridgeSchedulerFullAccess
/// allows passing every role to it) can run the reaper from schedules of its own and write
/// what it likes into the dead-letter queue operators alarm on.
#[test]
fn only_the_reapers_own_schedule_group_may_use_its_role() {
    let template = template();
    let resources = template["Resources"].as_object().unwrap();
    let schedule = &resources["ReapLeasesSchedule"]["Properties"];
    let group = schedule["GroupName"]["Ref"].as_str().expect("the schedule in a group of the stack's own");
    assert_eq!(resources[group]["Type"], "AWS::Scheduler::ScheduleGroup");
    let role = schedule["Target"]["RoleArn"]["Fn::GetAtt"][0].as_str().unwrap();
    let trust = &resources[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"];
    let source = ["ArnEquals", "StringEquals"].iter().find_map(|op| trust[op].get("aws:SourceArn"));
    assert_eq!(source, Some(&serde_json::json!({"Fn::GetAtt": [group, "Arn"]})), "{trust}");
}
