// Logs in to PostgreSQL or MariaDB with one Node.js driver, as an application would, over
// TLS that verifies the server's certificate against CA_FILE and its name against HOST.
//
// usage: node login.mjs DRIVER HOST PORT USER DATABASE CA_FILE QUERY
//   DRIVER    pg (node-postgres) or mysql2
//   DATABASE  may be empty (MariaDB)
// The password comes from the environment variable KEYTURN_CLIENT_PASSWORD, never argv.
//
// In one session it runs QUERY, then asks the server whether that session is encrypted
// (pg_stat_ssl, or the session's Ssl_cipher), and prints one line:
//   ok driver=DRIVER value=<QUERY's first column> tls=<TLS version or cipher, "none" if plain>
// Exit status: 0 logged in; 3 the server refused the login (invalid password, access
// denied); 1 anything else (TLS, network, driver), with the driver's error on stderr.

import { readFileSync } from "node:fs";
import process from "node:process";

import mysql from "mysql2/promise";
import pg from "pg";

const PG_TLS = "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl";
// An issued user's sessions act as its group, and pg_stat_ssl shows a session's TLS to
// that session's own role only: back to the login role first.
const PG_AS_LOGIN = "SET ROLE NONE";
const MARIADB_TLS = "SHOW SESSION STATUS LIKE 'Ssl_cipher'";
const TIMEOUT_MS = 10_000;

class Refused extends Error {}

// The chain is verified against `ca` alone as long as rejectUnauthorized stays true.
// node-postgres then checks the name against `host` (Node's checkServerIdentity); mysql2
// checks no name at all unless told to with its own `verifyIdentity`.
function tlsOptions(caFile) {
  return { ca: readFileSync(caFile, "utf8"), rejectUnauthorized: true };
}

async function pgLogin(host, port, user, password, database, caFile, query) {
  const client = new pg.Client({
    host,
    port,
    user,
    password,
    database,
    ssl: tlsOptions(caFile),
    connectionTimeoutMillis: TIMEOUT_MS,
  });
  try {
    await client.connect();
  } catch (e) {
    if (e.code === "28P01") throw new Refused(e.message);
    throw e;
  }
  try {
    const value = (await client.query({ text: query, rowMode: "array" })).rows[0][0];
    await client.query(PG_AS_LOGIN);
    const tls = (await client.query({ text: PG_TLS, rowMode: "array" })).rows[0]?.[0];
    return [value, tls];
  } finally {
    await client.end();
  }
}

async function mysql2Login(host, port, user, password, database, caFile, query) {
  let conn;
  try {
    conn = await mysql.createConnection({
      host,
      port,
      user,
      password,
      database: database || undefined,
      ssl: { ...tlsOptions(caFile), verifyIdentity: true },
      connectTimeout: TIMEOUT_MS,
    });
  } catch (e) {
    if (e.errno === 1045) throw new Refused(e.message);
    throw e;
  }
  try {
    const [rows] = await conn.query({ sql: query, rowsAsArray: true });
    const [status] = await conn.query({ sql: MARIADB_TLS, rowsAsArray: true });
    return [rows[0][0], status[0]?.[1]];
  } finally {
    await conn.end();
  }
}

const DRIVERS = { pg: pgLogin, mysql2: mysql2Login };

async function main(argv) {
  if (argv.length !== 7 || !(argv[0] in DRIVERS)) {
    console.error("usage: node login.mjs DRIVER HOST PORT USER DATABASE CA_FILE QUERY");
    return 64;
  }
  const [driver, host, port, user, database, caFile, query] = argv;
  const password = process.env.KEYTURN_CLIENT_PASSWORD;
  if (password === undefined) {
    console.error("error: KEYTURN_CLIENT_PASSWORD is not set");
    return 64;
  }
  try {
    const [value, tls] = await DRIVERS[driver](host, Number(port), user, password, database, caFile, query);
    console.log(`ok driver=${driver} value=${value} tls=${tls || "none"}`);
    return 0;
  } catch (e) {
    if (e instanceof Refused) {
      console.error(`refused: ${e.message}`);
      return 3;
    }
    console.error(`error: ${e.name}${e.code ? ` ${e.code}` : ""}: ${e.message}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
