"""Logs in to PostgreSQL or MariaDB with one Python driver, as an application would, over
TLS that verifies the server's certificate against CA_FILE and its name against HOST.

usage: login.py DRIVER HOST PORT USER DATABASE CA_FILE QUERY
  DRIVER    psycopg, pg8000, asyncpg (PostgreSQL) or pymysql (MariaDB/MySQL)
  DATABASE  may be empty (MariaDB)
The password comes from the environment variable KEYTURN_CLIENT_PASSWORD, never argv.

In one session it runs QUERY, then asks the server whether that session is encrypted
(pg_stat_ssl, or the session's Ssl_cipher), and prints one line:
  ok driver=DRIVER value=<QUERY's first column> tls=<TLS version or cipher, "none" if plain>
Exit status: 0 logged in; 3 the server refused the login (invalid password, access
denied); 1 anything else (TLS, network, driver), with the driver's error on stderr.
"""

import asyncio
import os
import ssl
import sys

PG_TLS = "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"
# An issued user's sessions act as its group, and pg_stat_ssl shows a session's TLS to
# that session's own role only: back to the login role first.
PG_AS_LOGIN = "SET ROLE NONE"
MARIADB_TLS = "SHOW SESSION STATUS LIKE 'Ssl_cipher'"
TIMEOUT = 10


class Refused(Exception):
    """The server refused the credentials."""


def context(ca_file):
    # Verifies the chain against ca_file alone and the name against the host asked for.
    ctx = ssl.create_default_context(cafile=ca_file)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


def psycopg_login(host, port, user, password, database, ca_file, query):
    import psycopg

    try:
        conn = psycopg.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            dbname=database,
            sslmode="verify-full",
            sslrootcert=ca_file,
            connect_timeout=TIMEOUT,
        )
    except psycopg.OperationalError as e:
        # libpq reports a refused login as text only (no SQLSTATE before a session).
        if "password authentication failed" in str(e):
            raise Refused(str(e)) from e
        raise
    with conn:
        value = conn.execute(query).fetchone()[0]
        conn.execute(PG_AS_LOGIN)
        row = conn.execute(PG_TLS).fetchone()
    return value, row and row[0]


def pg8000_login(host, port, user, password, database, ca_file, query):
    import pg8000.native

    try:
        conn = pg8000.native.Connection(
            user,
            host=host,
            port=port,
            password=password,
            database=database,
            ssl_context=context(ca_file),
            timeout=TIMEOUT,
        )
    except pg8000.native.DatabaseError as e:
        if e.args and isinstance(e.args[0], dict) and e.args[0].get("C") == "28P01":
            raise Refused(e.args[0].get("M", "")) from e
        raise
    try:
        value = conn.run(query)[0][0]
        conn.run(PG_AS_LOGIN)
        rows = conn.run(PG_TLS)
    finally:
        conn.close()
    return value, rows[0][0] if rows else None


def asyncpg_login(host, port, user, password, database, ca_file, query):
    import asyncpg

    async def run():
        try:
            conn = await asyncpg.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                database=database,
                ssl=context(ca_file),
                timeout=TIMEOUT,
            )
        except asyncpg.InvalidPasswordError as e:
            raise Refused(str(e)) from e
        try:
            value = await conn.fetchval(query)
            await conn.execute(PG_AS_LOGIN)
            return value, await conn.fetchval(PG_TLS)
        finally:
            await conn.close()

    return asyncio.run(run())


def pymysql_login(host, port, user, password, database, ca_file, query):
    import pymysql

    try:
        conn = pymysql.connect(
            host=host,
            port=port,
            user=user,
            password=password,
            database=database or None,
            ssl_ca=ca_file,
            ssl_verify_cert=True,
            ssl_verify_identity=True,
            connect_timeout=TIMEOUT,
        )
    except pymysql.err.OperationalError as e:
        if e.args and e.args[0] == 1045:
            raise Refused(str(e)) from e
        raise
    with conn:
        with conn.cursor() as cur:
            cur.execute(query)
            value = cur.fetchone()[0]
            cur.execute(MARIADB_TLS)
            row = cur.fetchone()
    return value, row and row[1]


DRIVERS = {
    "psycopg": psycopg_login,
    "pg8000": pg8000_login,
    "asyncpg": asyncpg_login,
    "pymysql": pymysql_login,
}


def main(argv):
    if len(argv) != 8 or argv[1] not in DRIVERS:
        print(__doc__, file=sys.stderr)
        return 64
    driver, host, port, user, database, ca_file, query = argv[1:]
    password = os.environ.get("KEYTURN_CLIENT_PASSWORD")
    if password is None:
        print("error: KEYTURN_CLIENT_PASSWORD is not set", file=sys.stderr)
        return 64
    try:
        value, tls = DRIVERS[driver](host, int(port), user, password, database, ca_file, query)
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    except Exception as e:  # the driver's own error, whatever its kind
        print(f"error: {type(e).__module__}.{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"ok driver={driver} value={value} tls={tls or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
