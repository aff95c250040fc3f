"""What a user of infra/template.yaml relies on, for several sets of parameters.

Each test transforms the template with SAM's own translator (samtranslator, as `sam deploy`
has CloudFormation do) for its parameter values, keeps the resources and outputs whose
conditions hold, and resolves their intrinsics (the comparison with the CDK app's
machinery, infra/cdk/test/compare.py). Run by `make infra-check`:

    .venv/bin/python -m unittest discover -s infra/tests -v
"""

import copy
import importlib.util
import json
import os
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("compare", os.path.join(ROOT, "infra/cdk/test/compare.py"))
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)

SOURCE = compare.load_sam(os.path.join(ROOT, "infra/template.yaml"))
# The parameters without a default, and what the tests below build on.
BASE = {
    "SubnetIds": "subnet-0123456789abcdef0,subnet-0123456789abcdef1",
    "SecurityGroupIds": "sg-0123456789abcdef0",
}
LAYER = "arn:aws:lambda:us-east-1:123456789012:layer:keyturn-roles:7"


class Stack:
    """The deployed stack for one set of parameters: resources by logical id, resolved."""

    def __init__(self, **parameters):
        values = {**BASE, **parameters}
        sam = compare.transform_sam(copy.deepcopy(SOURCE), values)
        self.resolver = compare.Resolver(sam, values)
        self.resources = {
            logical_id: {**r, "Properties": self.resolver.value(r.get("Properties", {}))}
            for logical_id, r in self.resolver.kept().items()
        }
        self.outputs = compare.outputs(sam, values)

    def of_type(self, kind):
        return {i: r for i, r in self.resources.items() if r["Type"] == kind}

    def function(self, name):
        found = [r for r in self.of_type("AWS::Lambda::Function").values() if r["Properties"]["FunctionName"] == name]
        return found[0] if found else None

    def function_names(self):
        return sorted(r["Properties"]["FunctionName"] for r in self.of_type("AWS::Lambda::Function").values())

    def policy_lines(self, function_name):
        """The function's role's grants: (action, resource) pairs."""
        function = self.function(function_name)
        role = function["Properties"]["Role"]  # "{role:...}.Arn"
        lines = set()
        for logical_id, r in self.of_type("AWS::IAM::Role").items():
            if "{" + self.resolver.name(logical_id) + "}.Arn" != role:
                continue
            for policy in r["Properties"].get("Policies", []):
                for line in compare.policy_lines(policy["PolicyDocument"]):
                    effect, action, resource, _, _ = json.loads(line)
                    lines.add((action, resource))
        return lines


ROTATION = ["keyturn-database-alternating-users", "keyturn-database-single-user", "keyturn-iam-key"]
DYNAMIC = ["keyturn-issue-credentials", "keyturn-reap-leases"]


class Switches(unittest.TestCase):
    def test_both_halves_by_default(self):
        stack = Stack()
        self.assertEqual(stack.function_names(), sorted(ROTATION + DYNAMIC))
        self.assertIn("CredentialsApiUrl", stack.outputs)
        self.assertIn("SingleUserFunctionArn", stack.outputs)

    def test_rotation_only_has_no_api_table_or_reaper(self):
        stack = Stack(EnableDynamicCredentials="false")
        self.assertEqual(stack.function_names(), ROTATION)
        for kind in ("AWS::ApiGatewayV2::Api", "AWS::DynamoDB::Table", "AWS::Scheduler::Schedule",
                     "AWS::Lambda::LayerVersion", "AWS::SQS::Queue"):
            self.assertEqual(stack.of_type(kind), {}, kind)
        self.assertFalse({"CredentialsApiUrl", "LeaseTableName", "RolesLayerVersionArn"} & set(stack.outputs))
        alarms = sorted(r["Properties"]["AlarmName"] for r in stack.of_type("AWS::CloudWatch::Alarm").values())
        self.assertEqual(alarms, [f"{name}-errors" for name in ROTATION])

    def test_dynamic_only_has_no_rotation_function(self):
        stack = Stack(EnableRotation="false")
        self.assertEqual(stack.function_names(), DYNAMIC)
        self.assertEqual(stack.of_type("AWS::SecretsManager::RotationSchedule"), {})
        self.assertEqual(stack.of_type("AWS::Events::Rule"), {})
        self.assertFalse({"SingleUserFunctionArn", "AlternatingUsersFunctionArn", "IamKeyFunctionArn"} & set(stack.outputs))
        # A secret to schedule is ignored without the rotation half.
        stack = Stack(EnableRotation="false", RotatedSecretArn="arn:aws:secretsmanager:us-east-1:123456789012:secret:a-AbCdEf")
        self.assertEqual(stack.of_type("AWS::SecretsManager::RotationSchedule"), {})

    def test_both_off_is_refused(self):
        rule = SOURCE["Rules"]["SomethingToDeploy"]["Assertions"][0]["Assert"]
        for rotation, dynamic, holds in [("true", "true", True), ("true", "false", True), ("false", "true", True), ("false", "false", False)]:
            resolver = compare.Resolver(SOURCE, {**BASE, "EnableRotation": rotation, "EnableDynamicCredentials": dynamic})
            self.assertEqual(resolver.truth(rule), holds, (rotation, dynamic))

    def test_outputs_are_exported_under_the_stack_name(self):
        stack = Stack()
        for name, output in stack.outputs.items():
            self.assertEqual(output["Export"], f"keyturn-{name}", name)


class RolesLayer(unittest.TestCase):
    def test_the_stacks_own_layer_by_default(self):
        stack = Stack()
        self.assertEqual(len(stack.of_type("AWS::Lambda::LayerVersion")), 1)
        for name in DYNAMIC:
            self.assertEqual(stack.function(name)["Properties"]["Layers"], ["{layer:keyturn-roles}"], name)

    def test_roles_layer_arn_replaces_the_layer(self):
        stack = Stack(RolesLayerArn=LAYER)
        self.assertEqual(stack.of_type("AWS::Lambda::LayerVersion"), {})
        for name in DYNAMIC:
            self.assertEqual(stack.function(name)["Properties"]["Layers"], [LAYER], name)
        self.assertEqual(stack.outputs["RolesLayerVersionArn"]["Value"], LAYER)


class Permissions(unittest.TestCase):
    def test_the_issuer_and_the_reaper_have_the_extra_grants(self):
        stack = Stack()
        issuer = stack.policy_lines("keyturn-issue-credentials")
        reaper = stack.policy_lines("keyturn-reap-leases")
        for lines in (issuer, reaper):
            self.assertIn(("rds:DescribeDBInstances", "*"), lines)
            self.assertIn(("rds:DescribeDBClusters", "*"), lines)
        queries = lambda lines: sorted(r.rsplit("/", 1)[1] for a, r in lines if a == "dynamodb:Query")
        self.assertEqual(queries(issuer), ["due", "holder"])
        self.assertEqual(queries(reaper), ["due"])
        self.assertNotIn("rds:DescribeDBInstances", {a for a, _ in stack.policy_lines("keyturn-iam-key")})

    def test_every_listed_kms_key_and_the_old_one(self):
        keys = ["arn:aws:kms:us-east-1:123456789012:key/a", "arn:aws:kms:us-east-1:123456789012:key/b"]
        old = "arn:aws:kms:us-east-1:123456789012:key/old"
        decrypt = lambda stack: {r for a, r in stack.policy_lines("keyturn-database-single-user") if a == "kms:Decrypt"}
        self.assertEqual(decrypt(Stack(KmsKeyArns=",".join(keys))), set(keys))
        self.assertEqual(decrypt(Stack(KmsKeyArn=old)), {old})
        self.assertEqual(decrypt(Stack(KmsKeyArn=old, KmsKeyArns=",".join(keys))), set(keys) | {old})
        self.assertEqual(decrypt(Stack()), set())


class Endpoints(unittest.TestCase):
    def services(self, stack):
        return sorted(r["Properties"]["ServiceName"].rsplit(".", 1)[1] for r in stack.of_type("AWS::EC2::VPCEndpoint").values())

    def test_none_unless_asked(self):
        stack = Stack(VpcId="vpc-0123456789abcdef0", RouteTableIds="rtb-0123456789abcdef0")
        self.assertEqual(stack.of_type("AWS::EC2::VPCEndpoint"), {})
        self.assertEqual(stack.of_type("AWS::EC2::SecurityGroup"), {})

    def test_each_half_gets_what_it_uses(self):
        asked = {"CreateVpcEndpoints": "true", "VpcId": "vpc-0123456789abcdef0"}
        self.assertEqual(self.services(Stack(**asked, RouteTableIds="rtb-0123456789abcdef0")), ["dynamodb", "rds", "secretsmanager", "sts"])
        # Without route tables no gateway endpoint; the rotation half needs neither STS nor DynamoDB.
        self.assertEqual(self.services(Stack(**asked)), ["rds", "secretsmanager", "sts"])
        self.assertEqual(self.services(Stack(**asked, EnableDynamicCredentials="false", RouteTableIds="rtb-0123456789abcdef0")), ["rds", "secretsmanager"])
        rule = SOURCE["Rules"]["EndpointsNeedAVpc"]
        resolver = compare.Resolver(SOURCE, {**BASE, "CreateVpcEndpoints": "true"})
        self.assertTrue(resolver.truth(rule["RuleCondition"]))
        self.assertFalse(resolver.truth(rule["Assertions"][0]["Assert"]), "an empty VpcId is refused")

    def test_interface_endpoints_admit_https_from_every_function_group(self):
        groups = ["sg-0000000000000000a", "sg-0000000000000000b", "sg-0000000000000000c"]
        stack = Stack(CreateVpcEndpoints="true", VpcId="vpc-0123456789abcdef0", SecurityGroupIds=",".join(groups))
        (group_id, group), = stack.of_type("AWS::EC2::SecurityGroup").items()
        ingress = group["Properties"]["SecurityGroupIngress"]
        self.assertEqual(sorted(i["SourceSecurityGroupId"] for i in ingress), groups)
        self.assertTrue(all((i["IpProtocol"], i["FromPort"], i["ToPort"]) == ("tcp", 443, 443) for i in ingress))
        for endpoint in stack.of_type("AWS::EC2::VPCEndpoint").values():
            p = endpoint["Properties"]
            self.assertEqual(p["VpcEndpointType"], "Interface")
            self.assertTrue(p["PrivateDnsEnabled"])
            self.assertEqual(p["SecurityGroupIds"], ["{" + stack.resolver.name(group_id) + "}"])


class Logs(unittest.TestCase):
    def test_every_function_logs_to_a_group_with_the_retention(self):
        stack = Stack(LogRetentionDays="30")
        groups = {r["Properties"]["LogGroupName"]: r for r in stack.of_type("AWS::Logs::LogGroup").values()}
        for name in ROTATION + DYNAMIC:
            group = stack.function(name)["Properties"]["LoggingConfig"]["LogGroup"]
            self.assertEqual(group, "{log-group:/aws/lambda/%s}" % name)
            self.assertEqual(groups[f"/aws/lambda/{name}"]["Properties"]["RetentionInDays"], "30", name)
        self.assertEqual(groups["/aws/apigateway/keyturn-credentials"]["Properties"]["RetentionInDays"], "30")
        self.assertEqual(len(groups), 6)


class Failures(unittest.TestCase):
    def rule(self, stack):
        (rule,) = stack.of_type("AWS::Events::Rule").values()
        return rule["Properties"]

    def test_rotation_failed_rule_targets_the_stacks_topic(self):
        stack = Stack(SecretNamePattern="prod/app-??????")
        rule = self.rule(stack)
        pattern = rule["EventPattern"]
        self.assertEqual(pattern["detail-type"], ["AWS Service Event via CloudTrail"])
        self.assertEqual(pattern["detail"]["eventName"], ["RotationFailed", "RotationAbandoned"])
        # EventBridge's wildcard knows * only: ? matches as *.
        self.assertEqual(pattern["detail"]["additionalEventData"]["SecretId"],
                         [{"wildcard": "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/app-******"}])
        (topic_id,) = stack.of_type("AWS::SNS::Topic")
        topic = "{" + stack.resolver.name(topic_id) + "}"
        self.assertEqual(rule["Targets"], [{"Id": "AlarmTopic", "Arn": topic}])
        (policy,) = stack.of_type("AWS::SNS::TopicPolicy").values()
        statements = [json.loads(line) for line in compare.policy_lines(policy["Properties"]["PolicyDocument"])]
        publishers = {service for effect, _, _, principal, _ in statements if effect == "Allow" for service in principal["Service"]}
        self.assertEqual(publishers, {"events.amazonaws.com", "cloudwatch.amazonaws.com"})
        for alarm in stack.of_type("AWS::CloudWatch::Alarm").values():
            self.assertEqual(alarm["Properties"]["AlarmActions"], [topic], alarm["Properties"]["AlarmName"])

    def test_a_topic_given_replaces_the_stacks_own(self):
        topic = "arn:aws:sns:us-east-1:123456789012:operations"
        stack = Stack(AlarmTopicArn=topic)
        for kind in ("AWS::SNS::Topic", "AWS::SNS::TopicPolicy", "AWS::KMS::Key"):
            self.assertEqual(stack.of_type(kind), {}, kind)
        self.assertEqual(self.rule(stack)["Targets"], [{"Id": "AlarmTopic", "Arn": topic}])
        for alarm in stack.of_type("AWS::CloudWatch::Alarm").values():
            self.assertEqual(alarm["Properties"]["AlarmActions"], [topic])
        self.assertEqual(stack.outputs["AlarmTopicArn"]["Value"], topic)

    def test_the_reapers_revocation_alarm_reads_its_own_metric(self):
        stack = Stack()
        alarms = {r["Properties"]["AlarmName"]: r["Properties"] for r in stack.of_type("AWS::CloudWatch::Alarm").values()}
        failed = alarms["keyturn-reap-leases-revocations-failed"]
        self.assertEqual((failed["Namespace"], failed["MetricName"]), ("keyturn", "RevocationsFailed"))
        self.assertEqual(failed["Dimensions"], [{"Name": "FunctionName", "Value": "{function:keyturn-reap-leases}"}])
        self.assertEqual(alarms["keyturn-reap-leases-not-running"]["TreatMissingData"], "breaching")


if __name__ == "__main__":
    unittest.main()
