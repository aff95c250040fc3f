"""Runs moto in server mode as `moto_server` does (same arguments), with eight bridges.

DynamoDB runs each request, transactions included, in isolation: a conditional write and a
TransactWriteItems either see another write's result or conflict with it. moto's threaded
server runs DynamoDB requests concurrently on shared Python objects, with no lock: with
concurrent conditional TransactWriteItems, more succeed than their conditions allow and
`ADD` updates are lost (observed with moto 5.2.5: 40 concurrent issues capped at 10 gave 12
successes and a counter of 10). The lease store's exact `max_leases` relies on the isolation,
so DynamoDB's requests are served one at a time here; every other service stays concurrent.

IAM evaluates `DateGreaterThan` / `DateLessThan` on `aws:CurrentTime` against the time of
the request, and a statement whose condition does not hold neither allows nor denies. With
authentication on, moto 5.2.5 evaluates no condition operator but `StringEquals` (any other
counts as satisfied), and answers "denied" for a statement of either effect whose condition
fails. So the Deny that ends a keyturn IAM user's lease ("Deny * when aws:CurrentTime is
after the expiry") would deny from the start. Here a statement with such a time condition
that does not hold is left out, as AWS leaves it out; the rest of moto's evaluation is
unchanged.

IAM evaluates `Null` on `aws:ResourceTag/<key>` (or `iam:ResourceTag/<key>`) against the
tags of the resource acted on: `"false"` holds when it carries the key. moto 5.2.5 counts it
as satisfied, so a lease user's expiry policy ("deny IAM writes on every user tagged
keyturn:lease-id") would deny them on every user. Here, for a user resource, such a
statement whose `Null` does not hold is left out, as AWS leaves it out; on any other
resource the key is absent.

CreateUser with a PermissionsBoundary gives the user that boundary, and GetUser reports it;
moto 5.2.5 drops a user's boundary (roles keep theirs). Here the boundary is kept and
reported, so that a test can see it was asked for (moto still does not enforce it).

IAM authorizes an action on a user (PutUserPolicy, UpdateUser, CreateAccessKey, ...)
against that user's ARN; moto 5.2.5 does so for roles only and checks every user action
against `*`, so a statement whose Resource names a user would never apply. Here an action
naming an existing user (`UserName`) is checked against its ARN, except the group
membership actions, whose resource is the group.

Secrets Manager removes versions that carry no staging label once a secret has more than
about 100 versions; moto never removes one, and AWS has no call to do it. Here
`POST /keyturn-test/secretsmanager/remove-version` with a JSON body `{"SecretId",
"VersionId", "AfterNextList"}` removes an unlabelled version as the service would: at once,
or (`AfterNextList: true`) right after the next ListSecretVersionIds of that secret has
listed it, as when the service removes it between a reader's listing and its read. A
version that carries a label is refused (409), as the service never removes one.

RDS gives an instance or cluster an endpoint under rds.amazonaws.com; moto 5.2.5 makes one up
there too, where nothing listens. Here `POST /keyturn-test/rds/endpoint` with a JSON body
`{"DBInstanceIdentifier" or "DBClusterIdentifier", "Address"}` makes DescribeDBInstances or
DescribeDBClusters report that address instead (`localhost`: the harness's servers, whose
certificate names it), as RDS reports the address of the server it runs; the port is the one
given at creation, as in RDS.

Lambda's GetLayerVersion gives a presigned URL to download a layer version's zip; moto
5.2.5 gives `s3://` and no download (and its `/moto-api/data.json` fails once a function
exists, as it asks Docker about it). Here `GET /keyturn-test/lambda/layer-content?arn=ARN`
answers `{"ZipFile": base64}` with the zip that version was published with.
"""
import json
import sys
import threading
from datetime import datetime, timezone
from io import BytesIO

from werkzeug.serving import run_simple

from moto import server
from moto.iam.access_control import IAMPolicyStatement, PermissionResult
from moto.iam.responses import IamResponse

TIME_OPERATORS = {
    "DateGreaterThan": lambda now, at: now > at,
    "DateLessThan": lambda now, at: now < at,
}


def time_conditions_hold(statement):
    """Whether every DateGreaterThan / DateLessThan on aws:CurrentTime in the statement holds
    now (a list of values holds when one of them does, as in IAM)."""
    conditions = statement.get("Condition") or {}
    now = datetime.now(timezone.utc)
    for operator, compare in TIME_OPERATORS.items():
        for key, values in (conditions.get(operator) or {}).items():
            if key.lower() != "aws:currenttime":
                continue
            values = values if isinstance(values, list) else [values]
            at = [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in values]
            if not any(compare(now, t) for t in at):
                return False
    return True


RESOURCE_TAG_PREFIXES = ("aws:resourcetag/", "iam:resourcetag/")


def resource_tag_keys(resource):
    """The tag keys of the IAM user whose ARN is `resource` (none for anything else)."""
    from moto.iam.models import iam_backends

    parts = resource.split(":", 5) if isinstance(resource, str) else []
    if len(parts) != 6 or parts[2] != "iam" or not parts[5].startswith("user/"):
        return set()
    try:
        backend = iam_backends[parts[4]][parts[1]]
    except KeyError:
        return set()
    return {tag["Key"] for tag in backend.tagger.list_tags_for_resource(resource)["Tags"]}


def null_conditions_hold(statement, resource):
    """Whether every Null on a resource tag in the statement holds for `resource`."""
    conditions = statement.get("Condition") or {}
    for key, value in (conditions.get("Null") or {}).items():
        prefix = next((p for p in RESOURCE_TAG_PREFIXES if key.lower().startswith(p)), None)
        if prefix is None:
            continue
        absent = key[len(prefix):] not in resource_tag_keys(resource)
        if absent != (str(value).lower() == "true"):
            return False
    return True


def evaluate_conditions():
    original = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self, action, resource="*", *args, **kwargs):
        if not time_conditions_hold(self._statement) or not null_conditions_hold(self._statement, resource):
            return PermissionResult.NEUTRAL
        return original(self, action, resource, *args, **kwargs)

    IAMPolicyStatement.is_action_permitted = is_action_permitted


def keep_user_boundaries():
    original = IamResponse.create_user

    def create_user(self):
        result = original(self)
        boundary = self._get_param("PermissionsBoundary")
        if boundary:
            # Serialized as the User shape's PermissionsBoundary member.
            self.backend.get_user(self._get_param("UserName")).permissions_boundary = {
                "PermissionsBoundaryType": "PermissionsBoundaryPolicy",
                "PermissionsBoundaryArn": boundary,
            }
        return result

    IamResponse.create_user = create_user


# Actions with a UserName whose resource is not the user.
NOT_USER_RESOURCES = {"AddUserToGroup", "RemoveUserFromGroup"}


def user_resources():
    original = IamResponse._determine_resource

    def _determine_resource(self):
        resource = original(self)
        names = self.data.get("UserName")
        if resource != "*" or not names or self._get_action() in NOT_USER_RESOURCES:
            return resource
        try:
            return self.backend.get_user(names[0]).arn
        except Exception:  # no such user: the action answers NoSuchEntity itself
            return "*"

    IamResponse._determine_resource = _determine_resource


REMOVE_VERSION_PATH = "/keyturn-test/secretsmanager/remove-version"


def secrets_backend(region):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.secretsmanager.models import secretsmanager_backends

    return secretsmanager_backends[DEFAULT_ACCOUNT_ID][region]


class SecretVersionRemoval:
    """WSGI middleware: the remove-version route, and the removals that wait for a listing."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        # (region, secret name) -> version ids to remove after its next listing
        self.after_list = {}

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == REMOVE_VERSION_PATH and environ.get("REQUEST_METHOD") == "POST":
            return self.remove(environ, start_response)
        if environ.get("HTTP_X_AMZ_TARGET") != "secretsmanager.ListSecretVersionIds":
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = BytesIO(body)
        response = self.app(environ, start_response)
        try:
            listed = [b"".join(response)]
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        try:
            secret = secrets_backend(region_of(environ)).secrets.get(json.loads(body or b"{}").get("SecretId", ""))
        except (ValueError, KeyError):
            secret = None
        if secret is not None:
            with self.lock:
                waiting = self.after_list.pop((region_of(environ), secret.name), [])
            for version_id in waiting:
                secret.versions.pop(version_id, None)
        return listed

    def remove(self, environ, start_response):
        def answer(status, message):
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps({"message": message}).encode()]

        try:
            request = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            region = request.get("Region", "us-east-1")
            secret = secrets_backend(region).secrets.get(request["SecretId"])
            version_id = request["VersionId"]
        except (ValueError, KeyError, TypeError) as e:
            return answer("400 Bad Request", f"bad request: {e}")
        if secret is None or version_id not in secret.versions:
            return answer("404 Not Found", "no such secret or version")
        if secret.versions[version_id].get("version_stages"):
            return answer("409 Conflict", "the version carries a staging label; the service keeps it")
        if request.get("AfterNextList"):
            with self.lock:
                self.after_list.setdefault((region, secret.name), []).append(version_id)
        else:
            del secret.versions[version_id]
        return answer("200 OK", "removed")


RDS_ENDPOINT_PATH = "/keyturn-test/rds/endpoint"


def rds_endpoints():
    """Instances and clusters report the address the endpoint route gave them, if any."""
    from moto.rds.models import DBCluster, DBInstance

    for cls, name in ((DBInstance, "address"), (DBCluster, "endpoint")):
        original = getattr(cls, name)

        def reported(self, original=original):
            return getattr(self, "_keyturn_address", None) or original.fget(self)

        setattr(cls, name, property(reported))


class RdsEndpoints:
    """WSGI middleware: the endpoint route."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != RDS_ENDPOINT_PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.rds.models import rds_backends

        def answer(status, message):
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps({"message": message}).encode()]

        try:
            request = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            backend = rds_backends[DEFAULT_ACCOUNT_ID][request.get("Region", "us-east-1")]
            if "DBInstanceIdentifier" in request:
                target = backend.databases.get(request["DBInstanceIdentifier"])
            else:
                target = backend.clusters.get(request["DBClusterIdentifier"])
            address = request["Address"]
        except (ValueError, KeyError, TypeError) as e:
            return answer("400 Bad Request", f"bad request: {e}")
        if target is None:
            return answer("404 Not Found", "no such DB instance or cluster")
        target._keyturn_address = address
        return answer("200 OK", "set")


WITHHOLD_KEY_PATH = "/keyturn-test/iam/withhold-key"

INVALID_CLIENT_TOKEN = (
    b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
    b"<Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid."
    b"</Message></Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


class WithheldKeys:
    """WSGI middleware: the withhold-key route, and the refusal of requests signed with a
    withheld key."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.withheld = set()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == WITHHOLD_KEY_PATH and environ.get("REQUEST_METHOD") == "POST":
            return self.withhold(environ, start_response)
        with self.lock:
            refused = access_key_of(environ) in self.withheld
        if refused:
            start_response("403 Forbidden", [("Content-Type", "text/xml")])
            return [INVALID_CLIENT_TOKEN]
        return self.app(environ, start_response)

    def withhold(self, environ, start_response):
        try:
            request = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            key, withheld = request["AccessKeyId"], request["Withheld"]
        except (ValueError, KeyError, TypeError) as e:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [f"bad request: {e}".encode()]
        with self.lock:
            (self.withheld.add if withheld else self.withheld.discard)(key)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def access_key_of(environ):
    """The access key id a signed request names in its credential scope (None when unsigned)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split("Credential=", 1)[1].split("/")[0]
    except IndexError:
        return None


def region_of(environ):
    """The region a signed request names in its credential scope (us-east-1 when unsigned)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        return auth.split("Credential=", 1)[1].split("/")[2]
    except IndexError:
        return "us-east-1"


class DynamoDBOneAtATime:
    """WSGI middleware: requests whose X-Amz-Target names DynamoDB hold one lock while the
    application runs and while its response body is produced."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            response = self.app(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()


LAYER_CONTENT_PATH = "/keyturn-test/lambda/layer-content"


class LayerContent:
    """WSGI middleware: the layer-content route."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != LAYER_CONTENT_PATH or environ.get("REQUEST_METHOD") != "GET":
            return self.app(environ, start_response)
        import base64
        from urllib.parse import parse_qs

        from moto.awslambda.models import lambda_backends
        from moto.awslambda_simple.models import lambda_simple_backends

        arn = parse_qs(environ.get("QUERY_STRING", "")).get("arn", [""])[0]
        parts = arn.split(":")
        version = None
        # Lambda's requests go to the simple backend once use_docker is off (moto_setup.py).
        for backends in (lambda_simple_backends, lambda_backends):
            try:
                version = version or backends[parts[4]][parts[3]].layers_versions_by_arn(arn)
            except (IndexError, KeyError, ValueError):
                pass
        if version is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such layer version"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"ZipFile": base64.b64encode(version.code_bytes).decode()}).encode()]


def main(argv):
    evaluate_conditions()
    keep_user_boundaries()
    user_resources()
    rds_endpoints()

    # moto_server's own argument parsing and signal handling, then its app behind the lock,
    # the version removal, the withheld keys, the RDS endpoints and the layer content.
    def run(host, port, app, **kwargs):
        app = LayerContent(RdsEndpoints(WithheldKeys(SecretVersionRemoval(DynamoDBOneAtATime(app)))))
        run_simple(host, port, app, **kwargs)

    server.run_simple = run
    server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
