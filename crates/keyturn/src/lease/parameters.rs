//! The template parameters a roles file implies: what issue-credentials and reap-leases
//! must be allowed to touch (the admin secrets they read, the IAM path, boundary and groups
//! of the users they make, the roles they assume, the database users they sign tokens for),
//! derived from the roles file so that it is the one place roles are configured. The SAM
//! template and the CDK app take them as `LeaseAdminSecretArns`, `LeaseIamUserPath`,
//! `LeaseIamUserBoundaryArn`, `LeaseIamGroupArns`, `LeaseAssumableRoleArns` and
//! `LeaseRdsDbUserArns`; `keyturn roles-check --print-parameters` prints them, `keyturn
//! roles deploy` sets them, `keyturn roles-check --stack` compares them with a stack's.
//!
//! Two things are not in the roles file and come from where the parameters are used: the
//! AWS account of the IAM groups and of the databases (the stack's, or given), and a
//! database's resource id (the `rds-iam-token` role's optional `resource_id`: a
//! `rds-db:connect` resource names it, not the host). A role whose parameter needs one
//! that is missing is refused, naming the role and what is missing; no wildcard stands in.
//! So are roles that disagree on what is one parameter for all of them (the IAM path and
//! permissions boundary of the `aws-iam-user` roles), naming both.

use serde_json::{json, Map, Value};

use super::field::{err, RolesError};
use super::kind::aws_iam_user::DEFAULT_IAM_PATH;
use super::kind::RoleKind;
use super::role::Roles;

/// A template parameter derived from the roles file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Parameter {
    AdminSecretArns,
    IamUserPath,
    IamUserBoundaryArn,
    IamGroupArns,
    AssumableRoleArns,
    RdsDbUserArns,
}

impl Parameter {
    /// Every derived parameter, in the template's order.
    pub const ALL: [Parameter; 6] = [
        Self::AdminSecretArns,
        Self::IamUserPath,
        Self::IamUserBoundaryArn,
        Self::IamGroupArns,
        Self::AssumableRoleArns,
        Self::RdsDbUserArns,
    ];

    /// The template's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AdminSecretArns => "LeaseAdminSecretArns",
            Self::IamUserPath => "LeaseIamUserPath",
            Self::IamUserBoundaryArn => "LeaseIamUserBoundaryArn",
            Self::IamGroupArns => "LeaseIamGroupArns",
            Self::AssumableRoleArns => "LeaseAssumableRoleArns",
            Self::RdsDbUserArns => "LeaseRdsDbUserArns",
        }
    }

    /// Whether it is a `CommaDelimitedList` (else a `String`).
    pub fn is_list(self) -> bool {
        !matches!(self, Self::IamUserPath | Self::IamUserBoundaryArn)
    }
}

/// The derived parameters' values: lists in the file's order, each value once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameters {
    pub admin_secret_arns: Vec<String>,
    /// The `aws-iam-user` roles' `path`; the template's default when there is none.
    pub iam_user_path: String,
    /// The `aws-iam-user` roles' `permissions_boundary`; empty when there is none.
    pub iam_user_boundary_arn: String,
    pub iam_group_arns: Vec<String>,
    pub assumable_role_arns: Vec<String>,
    pub rds_db_user_arns: Vec<String>,
}

/// A derived parameter whose value differs from the one a stack has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub parameter: Parameter,
    /// The stack's value as CloudFormation stores it (`None`: the stack has no such
    /// parameter).
    pub stack: Option<String>,
    /// The value the roles file implies, as CloudFormation would store it.
    pub file: String,
}

/// The parameters `roles` implies, in AWS account `account` (12 digits; needed only by
/// IAM groups and RDS token roles).
pub fn derive(roles: &Roles, account: Option<&str>) -> Result<Parameters, RolesError> {
    if let Some(account) = account {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(None, "account", format!("{account:?} is not an AWS account id (12 digits)")));
        }
    }
    let mut p = Parameters {
        admin_secret_arns: Vec::new(),
        iam_user_path: DEFAULT_IAM_PATH.to_owned(),
        iam_user_boundary_arn: String::new(),
        iam_group_arns: Vec::new(),
        assumable_role_arns: Vec::new(),
        rds_db_user_arns: Vec::new(),
    };
    // The first aws-iam-user role: what the others must agree with.
    let mut first_iam_user: Option<&str> = None;
    for role in roles.iter() {
        let name = role.name.as_str();
        let need_account = |parameter: Parameter| {
            account.ok_or_else(|| {
                err(
                    Some(name),
                    "account",
                    format!(
                        "is needed for {}: the roles file does not say which AWS account it is in; give it \
                         (--account) or compare with the stack (--stack)",
                        parameter.name()
                    ),
                )
            })
        };
        match &role.kind {
            RoleKind::Database(db) => push(&mut p.admin_secret_arns, &db.admin_secret),
            RoleKind::AwsSts(sts) => push(&mut p.assumable_role_arns, &sts.role_arn),
            RoleKind::AwsIamUser(iam) => {
                match first_iam_user {
                    None => {
                        first_iam_user = Some(name);
                        p.iam_user_path.clone_from(&iam.path);
                        p.iam_user_boundary_arn.clone_from(&iam.permissions_boundary);
                    }
                    Some(first) => {
                        for (field, theirs, ours, parameter) in [
                            ("path", &p.iam_user_path, &iam.path, Parameter::IamUserPath),
                            (
                                "permissions_boundary",
                                &p.iam_user_boundary_arn,
                                &iam.permissions_boundary,
                                Parameter::IamUserBoundaryArn,
                            ),
                        ] {
                            if theirs != ours {
                                return Err(err(
                                    Some(name),
                                    field,
                                    format!(
                                        "{ours:?} differs from role {first:?}'s {theirs:?}: {} is one template \
                                         parameter, the same for every aws-iam-user role",
                                        parameter.name()
                                    ),
                                ));
                            }
                        }
                    }
                }
                if !iam.groups.is_empty() {
                    let account = need_account(Parameter::IamGroupArns)?;
                    // The users' own partition: the boundary is a policy of their account
                    // (or AWS's, in the same partition).
                    let partition = iam.permissions_boundary.split(':').nth(1).unwrap_or("aws");
                    for group in &iam.groups {
                        push(&mut p.iam_group_arns, &format!("arn:{partition}:iam::{account}:group/{group}"));
                    }
                }
            }
            RoleKind::RdsIamToken(rds) => {
                let resource_id = rds.resource_id.as_deref().ok_or_else(|| {
                    err(
                        Some(name),
                        "resource_id",
                        format!(
                            "is needed for {}: the database's resource id (DbiResourceId db-..., \
                             DbClusterResourceId cluster-..., or a proxy's prx-...), which rds-db:connect names",
                            Parameter::RdsDbUserArns.name()
                        ),
                    )
                })?;
                let account = need_account(Parameter::RdsDbUserArns)?;
                let partition = partition_of_region(&rds.region);
                push(
                    &mut p.rds_db_user_arns,
                    &format!("arn:{partition}:rds-db:{}:{account}:dbuser:{resource_id}/{}", rds.region, rds.db_user),
                );
            }
        }
    }
    Ok(p)
}

fn push(list: &mut Vec<String>, value: &str) {
    if !list.iter().any(|v| v == value) {
        list.push(value.to_owned());
    }
}

/// The AWS partition of a region by its name.
pub fn partition_of_region(region: &str) -> &'static str {
    const PREFIXES: [(&str, &str); 6] = [
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-isob-", "aws-iso-b"),
        ("us-isof-", "aws-iso-f"),
        ("us-iso-", "aws-iso"),
        ("eu-isoe-", "aws-iso-e"),
    ];
    PREFIXES.iter().find(|(prefix, _)| region.starts_with(prefix)).map_or("aws", |(_, partition)| partition)
}

impl Parameters {
    /// The values of one parameter: a list's items, or the one value.
    pub fn values(&self, parameter: Parameter) -> Vec<&str> {
        let list = match parameter {
            Parameter::AdminSecretArns => &self.admin_secret_arns,
            Parameter::IamUserPath => return vec![&self.iam_user_path],
            Parameter::IamUserBoundaryArn => return vec![&self.iam_user_boundary_arn],
            Parameter::IamGroupArns => &self.iam_group_arns,
            Parameter::AssumableRoleArns => &self.assumable_role_arns,
            Parameter::RdsDbUserArns => &self.rds_db_user_arns,
        };
        list.iter().map(String::as_str).collect()
    }

    /// One parameter's value as CloudFormation takes and stores it (a list joined with
    /// commas).
    pub fn template_value(&self, parameter: Parameter) -> String {
        self.values(parameter).join(",")
    }

    /// `Key='value' ...` on one line, each value shell-quoted: for `sam deploy
    /// --parameter-overrides $(keyturn roles-check --print-parameters FILE)`. The quotes
    /// are around the value, not the pair: the shell does not remove quotes from a command
    /// substitution's output, and SAM's parser removes them around a value only.
    pub fn sam(&self) -> String {
        Parameter::ALL
            .iter()
            .map(|p| format!("{}={}", p.name(), shell_quote(&self.template_value(*p))))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `{"LeaseAdminSecretArns": [...], "LeaseIamUserPath": "...", ...}`: lists as arrays.
    pub fn json(&self) -> Value {
        let mut map = Map::new();
        for p in Parameter::ALL {
            let value = if p.is_list() { json!(self.values(p)) } else { json!(self.template_value(p)) };
            map.insert(p.name().to_owned(), value);
        }
        Value::Object(map)
    }

    /// The parameters whose value differs from the stack's (`stack` gives a parameter's
    /// value by its name, as CloudFormation stores it). Lists are compared as sets (the
    /// order and repeats of ARNs in a policy's Resource change nothing), after trimming
    /// each item as CloudFormation does.
    pub fn differences<'a>(&self, stack: impl Fn(&str) -> Option<&'a str>) -> Vec<Difference> {
        Parameter::ALL
            .iter()
            .filter_map(|&parameter| {
                let file = self.template_value(parameter);
                let theirs = stack(parameter.name());
                let same = theirs.is_some_and(|t| parameter.items(t) == parameter.items(&file));
                (!same).then(|| Difference { parameter, stack: theirs.map(str::to_owned), file })
            })
            .collect()
    }
}

impl Parameter {
    /// A value as CloudFormation stores it, as a set: a list's items trimmed, sorted and
    /// each once (their order and repeats change nothing in a policy); a string alone.
    fn items(self, text: &str) -> Vec<String> {
        if !self.is_list() {
            return vec![text.to_owned()];
        }
        let mut items: Vec<String> =
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        items.sort();
        items.dedup();
        items
    }
}

impl Difference {
    /// What the file's value lets the functions do that the stack's does not: each ARN a
    /// list adds, or a path or boundary that replaces the stack's. Empty when the change
    /// only takes something away. `roles deploy` makes no such change unless asked: the
    /// lists are the ceiling of what the roles file may hand out, and whoever may merge
    /// the file should not also raise its own ceiling.
    pub fn widening(&self) -> Vec<String> {
        let file = self.parameter.items(&self.file);
        if !self.parameter.is_list() {
            let changed = self.stack.as_deref() != Some(self.file.as_str());
            return if changed && !self.file.is_empty() { file } else { Vec::new() };
        }
        let stack = self.stack.as_deref().map(|s| self.parameter.items(s)).unwrap_or_default();
        file.into_iter().filter(|item| !stack.contains(item)).collect()
    }
}

/// `text` in single quotes, a quote in it written `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn derived(text: &str, account: Option<&str>) -> Result<Parameters, RolesError> {
        derive(&Roles::from_toml(text).expect("a valid roles file"), account)
    }

    fn database(name: &str, secret: &str) -> String {
        format!(
            r#"
[[role]]
name = "{name}"
kind = "database"
admin_secret = "arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{secret}"
groups = ["app_read"]
default_ttl = "15m"
max_ttl = "1h"
"#
        )
    }

    fn sts(name: &str, role: &str) -> String {
        format!(
            r#"
[[role]]
name = "{name}"
kind = "aws-sts"
role_arn = "arn:aws:iam::{ACCOUNT}:role/{role}"
default_ttl = "15m"
max_ttl = "1h"
"#
        )
    }

    fn iam_user(name: &str, extra: &str) -> String {
        format!(
            r#"
[[role]]
name = "{name}"
kind = "aws-iam-user"
policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
default_ttl = "1h"
max_ttl = "4h"
{extra}
"#
        )
    }

    fn rds(name: &str, extra: &str) -> String {
        format!(
            r#"
[[role]]
name = "{name}"
kind = "rds-iam-token"
engine = "postgres"
host = "db.example.us-east-1.rds.amazonaws.com"
port = 5432
db_user = "app_iam"
{extra}
"#
        )
    }

    const BOUNDARY: &str = r#"permissions_boundary = "arn:aws:iam::123456789012:policy/boundary""#;

    #[test]
    fn an_empty_file_derives_the_templates_defaults() {
        let p = derived("", None).unwrap();
        assert_eq!(p.iam_user_path, "/keyturn-leases/");
        assert_eq!(
            p.sam(),
            "LeaseAdminSecretArns='' LeaseIamUserPath='/keyturn-leases/' LeaseIamUserBoundaryArn='' \
             LeaseIamGroupArns='' LeaseAssumableRoleArns='' LeaseRdsDbUserArns=''"
        );
        assert_eq!(
            p.json(),
            json!({"LeaseAdminSecretArns": [], "LeaseIamUserPath": "/keyturn-leases/", "LeaseIamUserBoundaryArn": "",
                   "LeaseIamGroupArns": [], "LeaseAssumableRoleArns": [], "LeaseRdsDbUserArns": []})
        );
    }

    #[test]
    fn database_roles_give_their_admin_secrets_once_each_in_the_files_order() {
        let text = [database("a", "pg-b"), database("b", "pg-a"), database("c", "pg-b")].concat();
        let p = derived(&text, None).unwrap();
        let arn = |s: &str| format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{s}");
        assert_eq!(p.admin_secret_arns, [arn("pg-b"), arn("pg-a")]);
        assert!(
            p.sam().starts_with(&format!("LeaseAdminSecretArns='{},{}' ", arn("pg-b"), arn("pg-a"))),
            "{}",
            p.sam()
        );
        assert_eq!(p.json()["LeaseAdminSecretArns"], json!([arn("pg-b"), arn("pg-a")]));
    }

    #[test]
    fn sts_roles_give_the_roles_they_assume() {
        let p = derived(&[sts("a", "deploy"), sts("b", "deploy"), sts("c", "audit")].concat(), None).unwrap();
        assert_eq!(
            p.assumable_role_arns,
            [format!("arn:aws:iam::{ACCOUNT}:role/deploy"), format!("arn:aws:iam::{ACCOUNT}:role/audit")]
        );
        assert!(p.admin_secret_arns.is_empty() && p.iam_user_boundary_arn.is_empty());
    }

    #[test]
    fn iam_user_roles_give_path_boundary_and_their_groups_in_the_account() {
        let text = [
            iam_user("a", &format!("{BOUNDARY}\npath = \"/leases/\"\ngroups = [\"readers\", \"uploaders\"]")),
            iam_user("b", &format!("{BOUNDARY}\npath = \"/leases/\"\ngroups = [\"readers\"]")),
        ]
        .concat();
        let p = derived(&text, Some(ACCOUNT)).unwrap();
        assert_eq!(p.iam_user_path, "/leases/");
        assert_eq!(p.iam_user_boundary_arn, "arn:aws:iam::123456789012:policy/boundary");
        assert_eq!(
            p.iam_group_arns,
            ["arn:aws:iam::123456789012:group/readers", "arn:aws:iam::123456789012:group/uploaders"]
        );
        // Groups are the only part that needs the account.
        let e = derived(&text, None).unwrap_err();
        assert_eq!((e.role.as_deref(), e.field.as_str()), (Some("a"), "account"), "{e}");
        assert!(e.problem.contains("LeaseIamGroupArns"), "{e}");
        let no_groups = derived(&iam_user("a", BOUNDARY), None).unwrap();
        assert!(no_groups.iam_group_arns.is_empty());
        assert_eq!(no_groups.iam_user_path, DEFAULT_IAM_PATH);
        // A group ARN is in the users' partition.
        let cn = iam_user("a", "permissions_boundary = \"arn:aws-cn:iam::123456789012:policy/b\"\ngroups = [\"g\"]");
        assert_eq!(derived(&cn, Some(ACCOUNT)).unwrap().iam_group_arns, ["arn:aws-cn:iam::123456789012:group/g"]);
    }

    #[test]
    fn iam_user_roles_that_disagree_on_one_parameter_are_refused_naming_both() {
        let other = r#"permissions_boundary = "arn:aws:iam::123456789012:policy/other""#;
        let e = derived(&[iam_user("first", BOUNDARY), iam_user("second", other)].concat(), None).unwrap_err();
        assert_eq!((e.role.as_deref(), e.field.as_str()), (Some("second"), "permissions_boundary"));
        assert!(e.to_string().contains(r#"role "first"'s"#) && e.problem.contains("LeaseIamUserBoundaryArn"), "{e}");
        let e = derived(
            &[iam_user("first", &format!("{BOUNDARY}\npath = \"/x/\"")), iam_user("second", BOUNDARY)].concat(),
            None,
        )
        .unwrap_err();
        assert_eq!((e.role.as_deref(), e.field.as_str()), (Some("second"), "path"));
        assert!(e.to_string().contains(r#"differs from role "first"'s "/x/""#), "{e}");
    }

    #[test]
    fn rds_token_roles_give_the_database_user_in_the_account_and_resource() {
        let text = rds("pg", "region = \"eu-west-1\"\nresource_id = \"db-ABCDEFGHIJKL0123456789ABCD\"");
        let p = derived(&text, Some(ACCOUNT)).unwrap();
        assert_eq!(
            p.rds_db_user_arns,
            ["arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABCDEFGHIJKL0123456789ABCD/app_iam"]
        );
        let gov = rds("pg", "region = \"us-gov-west-1\"\nresource_id = \"cluster-ABC\"");
        assert_eq!(
            derived(&gov, Some(ACCOUNT)).unwrap().rds_db_user_arns,
            ["arn:aws-us-gov:rds-db:us-gov-west-1:123456789012:dbuser:cluster-ABC/app_iam"]
        );
    }

    #[test]
    fn rds_token_roles_without_resource_id_or_account_are_refused_not_wildcarded() {
        let e = derived(&rds("pg", "region = \"eu-west-1\""), Some(ACCOUNT)).unwrap_err();
        assert_eq!((e.role.as_deref(), e.field.as_str()), (Some("pg"), "resource_id"), "{e}");
        assert!(e.problem.contains("LeaseRdsDbUserArns"), "{e}");
        let e = derived(&rds("pg", "region = \"eu-west-1\"\nresource_id = \"db-X\""), None).unwrap_err();
        assert_eq!((e.role.as_deref(), e.field.as_str()), (Some("pg"), "account"), "{e}");
        for bad in ["db-*", "*", "db-", "instance-ABC", "db-A/B", "cluster-ABC:x"] {
            let e =
                Roles::from_toml(&rds("pg", &format!("region = \"eu-west-1\"\nresource_id = {bad:?}"))).unwrap_err();
            assert_eq!(e.field, "resource_id", "{bad}: {e}");
        }
        let e = derived("", Some("12345")).unwrap_err();
        assert_eq!(e.field, "account");
    }

    #[test]
    fn partitions_follow_the_region() {
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("eu-west-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
        ] {
            assert_eq!(partition_of_region(region), partition, "{region}");
        }
    }

    #[test]
    fn a_widening_is_each_added_arn_or_a_new_path_or_boundary_and_a_narrowing_is_none() {
        let d = |parameter, stack: Option<&str>, file: &str| Difference {
            parameter,
            stack: stack.map(str::to_owned),
            file: file.to_owned(),
        };
        assert_eq!(d(Parameter::AdminSecretArns, Some("a, b"), "b,c,a").widening(), ["c"]);
        assert!(d(Parameter::AdminSecretArns, Some("a,b"), "a").widening().is_empty(), "a narrowing");
        assert_eq!(d(Parameter::AssumableRoleArns, None, "r").widening(), ["r"]);
        assert_eq!(d(Parameter::IamUserPath, Some("/a/"), "/b/").widening(), ["/b/"]);
        assert_eq!(d(Parameter::IamUserBoundaryArn, Some(""), "arn:b").widening(), ["arn:b"]);
        assert!(d(Parameter::IamUserBoundaryArn, Some("arn:b"), "").widening().is_empty(), "no IAM users any more");
    }

    #[test]
    fn differences_name_each_parameter_and_compare_lists_as_sets() {
        let text = [database("a", "s1"), database("b", "s2"), sts("c", "deploy")].concat();
        let p = derived(&text, None).unwrap();
        let s1 = format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:s1");
        let s2 = format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:s2");
        let role = format!("arn:aws:iam::{ACCOUNT}:role/deploy");
        let swapped = format!("{s2}, {s1}");
        let stack = |name: &str| -> Option<&str> {
            match name {
                "LeaseAdminSecretArns" => Some(swapped.as_str()),
                "LeaseIamUserPath" => Some("/keyturn-leases/"),
                "LeaseAssumableRoleArns" => Some(role.as_str()),
                "LeaseIamUserBoundaryArn" | "LeaseIamGroupArns" => Some(""),
                _ => None,
            }
        };
        let d = p.differences(stack);
        assert_eq!(d, [Difference { parameter: Parameter::RdsDbUserArns, stack: None, file: String::new() }]);
        let stale = |name: &str| if name == "LeaseAdminSecretArns" { Some(s1.as_str()) } else { stack(name) };
        let d = p.differences(stale);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].parameter, d[0].stack.as_deref()), (Parameter::AdminSecretArns, Some(s1.as_str())));
        assert_eq!(d[0].file, format!("{s1},{s2}"));
    }

    #[test]
    fn sam_values_are_shell_quoted() {
        assert_eq!(shell_quote("a,b"), "'a,b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_example_file_derives_with_an_account() {
        let roles = Roles::from_toml(include_str!("../../../../infra/roles.example.toml")).unwrap();
        let p = derive(&roles, Some(ACCOUNT)).unwrap();
        assert_eq!(p.admin_secret_arns.len(), 1);
        assert_eq!(p.assumable_role_arns, ["arn:aws:iam::123456789012:role/deploy"]);
        assert_eq!(p.rds_db_user_arns.len(), 1);
        assert!(p.rds_db_user_arns[0].ends_with("/orders_app"), "{:?}", p.rds_db_user_arns);
    }
}
