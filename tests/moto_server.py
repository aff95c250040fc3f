"""Runs moto in server mode as `moto_server` does (same arguments), with one bridge.

DynamoDB runs each request, transactions included, in isolation: a conditional write and a
TransactWriteItems either see another write's result or conflict with it. moto's threaded
server runs DynamoDB requests concurrently on shared Python objects, with no lock: with
concurrent conditional TransactWriteItems, more succeed than their conditions allow and
`ADD` updates are lost (observed with moto 5.2.5: 40 concurrent issues capped at 10 gave 12
successes and a counter of 10). The lease store's exact `max_leases` relies on the isolation,
so DynamoDB's requests are served one at a time here; every other service stays concurrent.
"""
import sys
import threading

from werkzeug.serving import run_simple

from moto import server


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
    # moto_server's own argument parsing and signal handling, then its app behind the lock.
    def run(host, port, app, **kwargs):
        run_simple(host, port, DynamoDBOneAtATime(app), **kwargs)

    server.run_simple = run
    server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
