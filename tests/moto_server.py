"""Runs moto in server mode as `moto_server` does (same arguments), with four bridges.

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

CreateUser with a PermissionsBoundary gives the user that boundary, and GetUser reports it;
moto 5.2.5 drops a user's boundary (roles keep theirs). Here the boundary is kept and
reported, so that a test can see it was asked for (moto still does not enforce it).

IAM authorizes an action on a user (PutUserPolicy, UpdateUser, CreateAccessKey, ...)
against that user's ARN; moto 5.2.5 does so for roles only and checks every user action
against `*`, so a statement whose Resource names a user would never apply. Here an action
naming an existing user (`UserName`) is checked against its ARN, except the group
membership actions, whose resource is the group.
"""
import sys
import threading
from datetime import datetime, timezone

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


def evaluate_current_time():
    original = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self, *args, **kwargs):
        if not time_conditions_hold(self._statement):
            return PermissionResult.NEUTRAL
        return original(self, *args, **kwargs)

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


def main(argv):
    evaluate_current_time()
    keep_user_boundaries()
    user_resources()

    # moto_server's own argument parsing and signal handling, then its app behind the lock.
    def run(host, port, app, **kwargs):
        run_simple(host, port, DynamoDBOneAtATime(app), **kwargs)

    server.run_simple = run
    server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
