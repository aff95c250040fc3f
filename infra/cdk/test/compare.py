#!/usr/bin/env python3
"""Compares the CDK app's template with infra/template.yaml for one set of values.

The SAM template is transformed by SAM's own translator (samtranslator) with the parameter
values of cdk.json's context (every optional part on), each --set KEY=VALUE replacing one
(the app reads the same values, under camelCase names, and was synthesized with the same
-c KEY=VALUE), its
Conditions and Fn::If are resolved for those values, and every intrinsic of both templates is
resolved to text (pseudo parameters as in us-east-1 of account 123456789012, a resource as
the name of what it is, e.g. {function:keyturn-reap-leases}). Then, resource by resource:

  - the same number of resources of each type;
  - the same resources, each matched by what it is (a function by its name, a role by the
    function or schedule it serves, a permission by its function, principal and source);
  - for each function's role: the same IAM actions, and per action the same resources and
    conditions (statements split into one line per action and resource, so the grouping
    of statements does not matter); the same managed policies;
  - every other property the same (lists compared as sets);
  - the same outputs, each with the same value, description and export.

Exits 1 on any difference, naming each. Only these are set aside, each the two tools'
bookkeeping rather than what is deployed: SAM's createdBy tags, the code's location (an S3
placeholder for SAM, an asset for CDK), Metadata, DependsOn, policy names and Sids.

    compare.py --sam infra/template.yaml --cdk infra/cdk/cdk.out/keyturn.template.json \\
        --context infra/cdk/cdk.json [--set enableRotation=false ...]
"""

import argparse
import json
import os
import re
import sys
from collections import Counter

import yaml

ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    # The CDK app's stack name (its default), which the exports' names start with.
    "AWS::StackName": "keyturn",
}
# Policy names samtranslator's managed_policy_map needs for the names the template uses.
MANAGED_POLICIES = {
    "AWSLambdaVPCAccessExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
}
NO_VALUE = object()


class Difference(Exception):
    pass


def load_sam(path):
    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        tag = node.tag[1:]
        name = "Ref" if tag == "Ref" else "Condition" if tag == "Condition" else "Fn::" + tag
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    Loader.add_multi_constructor("!", tagged)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


def parameters_from_context(template, context):
    """SAM parameter values: cdk.json's context under the parameters' own names."""
    values = {}
    for name, spec in template.get("Parameters", {}).items():
        key = name[0].lower() + name[1:]
        if key in context:
            values[name] = str(context[key])
        elif "Default" in spec:
            values[name] = str(spec["Default"])
        else:
            raise Difference(f"SAM parameter {name} has no default and cdk.json's context no {key}")
    return values


def transform_sam(template, parameters):
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    from samtranslator.translator.transform import transform

    # As `sam package` would leave it: the code in S3 (its location is not compared).
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                properties[key] = f"s3://bucket/{logical_id}"

    class Policies:
        def load(self):
            return MANAGED_POLICIES

    return transform(template, parameters, Policies())


class Resolver:
    """Resolves a template's intrinsics for fixed parameter values."""

    def __init__(self, template, parameters):
        self.template = template
        self.resources = template["Resources"]
        self.parameters = {}
        for name, spec in template.get("Parameters", {}).items():
            value = parameters.get(name, spec.get("Default"))
            if spec.get("Type") == "CommaDelimitedList":
                value = [] if value in (None, "") else [v.strip() for v in str(value).split(",")]
            self.parameters[name] = value
        self.conditions = {}
        self.names = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = self.truth(self.template["Conditions"][name])
        return self.conditions[name]

    def truth(self, node):
        (fn, arg), = node.items()
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Not":
            return not self.truth(arg[0])
        if fn == "Fn::And":
            return all(self.truth(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.truth(a) for a in arg)
        if fn == "Fn::Equals":
            return self.value(arg[0]) == self.value(arg[1])
        raise Difference(f"condition function {fn} not understood")

    def kept(self):
        """The resources whose Condition holds."""
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    def value(self, node):
        if isinstance(node, list):
            return [v for v in (self.value(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                target, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return "{" + self.name(target) + "}." + attribute
            if fn == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Join":
                items = self.value(arg[1])
                return self.value(arg[0]).join(self.text(i) for i in items)
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                variables = {k: self.value(v) for k, v in variables.items()}
                return re.sub(r"\$\{([^}]+)\}", lambda m: self.substitute(m.group(1), variables), text)
            if fn == "Fn::Select":
                return self.value(arg[1])[int(self.value(arg[0]))]
            if fn == "Fn::Split":
                return self.text(self.value(arg[1])).split(self.value(arg[0]))
            if fn.startswith("Fn::"):
                raise Difference(f"intrinsic {fn} not understood")
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

    def text(self, value):
        if isinstance(value, list):
            return ",".join(value)
        return str(value)

    def substitute(self, name, variables):
        if name in variables:
            return self.text(variables[name])
        if "." in name and name.split(".", 1)[0] in self.resources:
            target, attribute = name.split(".", 1)
            return "{" + self.name(target) + "}." + attribute
        return self.text(self.ref(name))

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            return "{" + self.name(name) + "}"
        raise Difference(f"Ref {name} not understood")

    def name(self, logical_id):
        """What a resource is, the same in both templates."""
        if logical_id not in self.names:
            self.names[logical_id] = None  # a cycle shows as an error below
            self.names[logical_id] = self.name_of(logical_id)
        if self.names[logical_id] is None:
            raise Difference(f"cannot name {logical_id}: its name refers back to it")
        return self.names[logical_id]

    def name_of(self, logical_id):
        resource = self.resources[logical_id]
        kind = resource["Type"]
        props = resource.get("Properties", {})
        v = self.value
        if kind == "AWS::Lambda::Function":
            return "function:" + v(props["FunctionName"])
        if kind == "AWS::IAM::Role":
            for other_id, other in self.kept().items():
                other_props = other.get("Properties", {})
                if other["Type"] == "AWS::Lambda::Function" and other_props.get("Role") == {"Fn::GetAtt": [logical_id, "Arn"]}:
                    return "role:" + self.name(other_id)
                target = other_props.get("Target", {})
                if other["Type"] == "AWS::Scheduler::Schedule" and target.get("RoleArn") == {"Fn::GetAtt": [logical_id, "Arn"]}:
                    return "role:" + self.name(other_id)
            raise Difference(f"role {logical_id} serves no function or schedule")
        if kind == "AWS::Lambda::Permission":
            return "permission:{} {} {}".format(v(props["FunctionName"]), v(props["Principal"]), v(props.get("SourceArn")))
        if kind == "AWS::Scheduler::Schedule":
            return "schedule:" + v(props["Name"])
        if kind == "AWS::ApiGatewayV2::Api":
            return "api:" + v(props.get("Name") or props["Body"]["info"]["title"])
        if kind == "AWS::ApiGatewayV2::Stage":
            return "stage:{} {}".format(v(props["ApiId"]), v(props["StageName"]))
        if kind == "AWS::Lambda::EventInvokeConfig":
            return "invoke-config:{} {}".format(v(props["FunctionName"]), v(props["Qualifier"]))
        if kind == "AWS::Lambda::LayerVersion":
            return "layer:" + v(props["LayerName"])
        if kind == "AWS::Logs::LogGroup":
            return "log-group:" + v(props["LogGroupName"])
        if kind == "AWS::SQS::Queue":
            return "queue:" + v(props["QueueName"])
        if kind == "AWS::SQS::QueuePolicy":
            return "queue-policy:" + ",".join(sorted(str(v(q)) for q in props["Queues"]))
        if kind == "AWS::Scheduler::ScheduleGroup":
            return "schedule-group:" + v(props["Name"])
        if kind == "AWS::SecretsManager::RotationSchedule":
            return "rotation-schedule:" + v(props["SecretId"])
        if kind == "AWS::EC2::SecurityGroup":
            return "security-group:" + v(props["GroupDescription"])
        if kind == "AWS::EC2::VPCEndpoint":
            return "vpc-endpoint:" + v(props["ServiceName"])
        if kind == "AWS::KMS::Key":
            return "kms-key:" + v(props["Description"])
        if kind == "AWS::SNS::Topic":
            return "topic:" + v(props["TopicName"])
        if kind == "AWS::SNS::TopicPolicy":
            return "topic-policy:" + ",".join(sorted(str(v(t)) for t in props["Topics"]))
        if kind == "AWS::Events::Rule":
            return "rule:" + v(props["Name"])
        if kind == "AWS::CloudWatch::Alarm":
            return "alarm:" + v(props["AlarmName"])
        if kind == "AWS::DynamoDB::Table":
            return "table:" + str(v(props.get("TableName", "(generated)")))
        raise Difference(f"{logical_id}: no rule to name a {kind}")


# What each tool adds for itself, not part of what is deployed.
SAM_TAGS = {"lambda:createdBy", "httpapi:createdBy"}


def policy_lines(document):
    """A policy document as a set of lines: effect, action, resource, principal, condition."""
    lines = set()
    for statement in document.get("Statement", []):
        as_list = lambda x: x if isinstance(x, list) else [x]
        principal = statement.get("Principal", {})
        if isinstance(principal, dict):
            principal = {k: sorted(as_list(p)) for k, p in principal.items()}
        condition = {
            op: {k: sorted(as_list(val)) for k, val in keys.items()}
            for op, keys in statement.get("Condition", {}).items()
        }
        for action in as_list(statement.get("Action", [])):
            for resource in as_list(statement.get("Resource", "-")):
                lines.add(
                    json.dumps(
                        [statement.get("Effect"), action, resource, principal, condition], sort_keys=True
                    )
                )
    return lines


def canonical(value):
    """Lists as sorted sets, empty objects dropped, SAM's tags dropped."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = canonical(v)
            if v in ({}, []):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        items = [canonical(v) for v in value]
        items = [
            i
            for i in items
            if not (isinstance(i, dict) and (i.get("Key") in SAM_TAGS or i.get("name") in SAM_TAGS))
        ]
        return sorted(items, key=lambda i: json.dumps(i, sort_keys=True))
    # CloudFormation takes "20" for 20 (a Number parameter is text when referenced).
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    return value


def normalize(resolver, logical_id, resource):
    props = resolver.value(resource.get("Properties", {}))
    kind = resource["Type"]
    props.pop("Code", None)
    props.pop("Content", None)
    if isinstance(props.get("Tags"), dict):
        props["Tags"] = {k: v for k, v in props["Tags"].items() if k not in SAM_TAGS}
    out = {
        "Type": kind,
        # CloudFormation's defaults, where a template leaves them out.
        "DeletionPolicy": resource.get("DeletionPolicy", "Delete"),
        "UpdateReplacePolicy": resource.get("UpdateReplacePolicy", "Delete"),
    }
    if kind == "AWS::IAM::Role":
        out["Trust"] = sorted(policy_lines(props.pop("AssumeRolePolicyDocument")))
        lines = set()
        for policy in props.pop("Policies", []):
            lines |= policy_lines(policy["PolicyDocument"])
        out["Policy"] = sorted(lines)
        out["ManagedPolicyArns"] = sorted(props.pop("ManagedPolicyArns", []))
    # Resource policies as lines too: statement grouping and Sids are each tool's own.
    for key in ("PolicyDocument", "KeyPolicy"):
        if key in props and kind != "AWS::IAM::Role":
            out[key] = sorted(policy_lines(props.pop(key)))
    out["Properties"] = canonical(props)
    return out


def stack(template, parameters):
    resolver = Resolver(template, parameters)
    resources = resolver.kept()
    by_name = {}
    for logical_id, resource in resources.items():
        if resource["Type"] == "AWS::CDK::Metadata":
            continue
        name = resolver.name(logical_id)
        if name in by_name:
            raise Difference(f"two resources are {name}")
        by_name[name] = (logical_id, normalize(resolver, logical_id, resource))
    return by_name


def outputs(template, parameters):
    """The outputs whose Condition holds: value, description and export name, resolved."""
    resolver = Resolver(template, parameters)
    kept = {}
    for name, output in template.get("Outputs", {}).items():
        if "Condition" in output and not resolver.condition(output["Condition"]):
            continue
        kept[name] = {
            "Value": resolver.value(output["Value"]),
            "Description": output.get("Description"),
            "Export": resolver.value(output["Export"]["Name"]) if "Export" in output else None,
        }
    return kept


def output_differences(sam, parameters, cdk):
    a, b = outputs(sam, parameters), outputs(cdk, {})
    for name in sorted(set(a) | set(b)):
        if name not in b:
            yield f"output {name}: only in SAM"
        elif name not in a:
            yield f"output {name}: only in CDK"
        else:
            for difference in differences(a[name], b[name]):
                yield f"output {name}{difference}"


def differences(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a:
                yield f"{path}.{key}: only in CDK: {json.dumps(b[key])}"
            elif key not in b:
                yield f"{path}.{key}: only in SAM: {json.dumps(a[key])}"
            else:
                yield from differences(a[key], b[key], f"{path}.{key}")
    elif a != b:
        yield f"{path}: SAM {json.dumps(a)} / CDK {json.dumps(b)}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sam", required=True)
    parser.add_argument("--cdk", required=True)
    parser.add_argument("--context", required=True, help="cdk.json, whose context holds the values")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a context value replaced")
    args = parser.parse_args()

    with open(args.context) as f:
        context = json.load(f)["context"]
    for setting in args.set:
        key, _, value = setting.partition("=")
        context[key] = value
    sam_source = load_sam(args.sam)
    parameters = parameters_from_context(sam_source, context)
    sam = transform_sam(sam_source, parameters)
    with open(args.cdk) as f:
        cdk = json.load(f)
    # The CDK template's parameters are CDK's own (the bootstrap version); it takes the
    # values from context at synth.
    sam_stack = stack(sam, parameters)
    cdk_stack = stack(cdk, {})

    found = []
    sam_types = Counter(r["Type"] for _, r in sam_stack.values())
    cdk_types = Counter(r["Type"] for _, r in cdk_stack.values())
    for kind in sorted(set(sam_types) | set(cdk_types)):
        if sam_types[kind] != cdk_types[kind]:
            found.append(f"{kind}: {sam_types[kind]} in SAM, {cdk_types[kind]} in CDK")
    for name in sorted(set(sam_stack) | set(cdk_stack)):
        if name not in cdk_stack:
            found.append(f"{name} ({sam_stack[name][0]}): only in SAM")
            continue
        if name not in sam_stack:
            found.append(f"{name} ({cdk_stack[name][0]}): only in CDK")
            continue
        (sam_id, a), (cdk_id, b) = sam_stack[name], cdk_stack[name]
        if a["Type"] == "AWS::IAM::Role":
            actions = lambda r: {json.loads(line)[1] for line in r["Policy"]}
            for action in sorted(actions(a) - actions(b)):
                found.append(f"{name}: action {action} only in SAM")
            for action in sorted(actions(b) - actions(a)):
                found.append(f"{name}: action {action} only in CDK")
            for key in ("Policy", "Trust"):
                for line in sorted(set(a[key]) - set(b[key])):
                    found.append(f"{name}: {key} only in SAM: {line}")
                for line in sorted(set(b[key]) - set(a[key])):
                    found.append(f"{name}: {key} only in CDK: {line}")
            a = {k: v for k, v in a.items() if k not in ("Policy", "Trust")}
            b = {k: v for k, v in b.items() if k not in ("Policy", "Trust")}
        for difference in differences(a, b):
            found.append(f"{name} ({sam_id} / {cdk_id}){difference}")

    found.extend(output_differences(sam, parameters, cdk))

    roles = sum(1 for _, r in sam_stack.values() if r["Type"] == "AWS::IAM::Role")
    if found:
        print(f"cdk-compare: {len(found)} differences between infra/template.yaml and the CDK app:")
        for line in found:
            print("  " + line)
        return 1
    print(
        f"cdk-compare: the same {len(sam_stack)} resources ({len(sam_types)} types), "
        f"the same grants in {roles} roles, every property the same, the same {len(outputs(cdk, {}))} outputs"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Difference as e:
        print(f"cdk-compare: {e}", file=sys.stderr)
        sys.exit(1)
