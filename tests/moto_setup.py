"""Prepares a fresh moto server for keyturn's tests and prints the rotation function's ARN.

Secrets Manager only reaches the exact pre-rotation state (a version for the token with
AWSPENDING, RotationEnabled true) when RotateSecret names a Lambda function that exists, so
register one in moto (use_docker off: moto never runs it; keyturn's steps are driven by the
tests as Secrets Manager would drive them).
"""
import io
import json
import sys
import urllib.request
import zipfile

import boto3

endpoint = sys.argv[1]
name = sys.argv[2] if len(sys.argv) > 2 else "keyturn-rotate-database"

request = urllib.request.Request(
    f"{endpoint}/moto-api/config",
    data=json.dumps({"lambda": {"use_docker": False}}).encode(),
    headers={"Content-Type": "application/json"},
    method="POST",
)
urllib.request.urlopen(request).read()

session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
iam = session.client("iam", endpoint_url=endpoint)
role = iam.create_role(
    RoleName=f"{name}-role",
    AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }),
)["Role"]["Arn"]

package = io.BytesIO()
with zipfile.ZipFile(package, "w") as z:
    z.writestr("bootstrap", "#!/bin/sh\n")
function = session.client("lambda", endpoint_url=endpoint).create_function(
    FunctionName=name, Runtime="provided.al2023", Role=role, Handler="bootstrap", Code={"ZipFile": package.getvalue()}
)
print(function["FunctionArn"])
