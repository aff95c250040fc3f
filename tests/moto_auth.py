"""Turns on IAM authentication in a running moto server, after creating an administrator
whose key the tests then sign with. Prints that key's id and secret, one per line.

With authentication on, moto checks every signature against its own IAM users and their
policies, so a key keyturn revoked is really refused.
"""
import json
import sys
import urllib.request

import boto3

endpoint = sys.argv[1]
session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
iam = session.client("iam", endpoint_url=endpoint)
iam.create_user(UserName="keyturn-test-admin")
iam.put_user_policy(
    UserName="keyturn-test-admin",
    PolicyName="everything",
    PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
)
key = iam.create_access_key(UserName="keyturn-test-admin")["AccessKey"]

# The body is the number of further requests served before authentication starts.
request = urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}, method="POST"
)
urllib.request.urlopen(request).read()
print(key["AccessKeyId"])
print(key["SecretAccessKey"])
