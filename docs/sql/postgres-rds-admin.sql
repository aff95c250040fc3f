-- A dedicated keyturn admin on RDS or Aurora PostgreSQL (15 to 17), made by the master user
-- RDS created, with only what keyturn needs: for teams that keep the master user out of
-- keyturn's hands. Run it as the master user (it is not a superuser, and needs not be):
--
--   psql "host=<endpoint> dbname=postgres user=<master> sslmode=verify-full sslrootcert=global-bundle.pem" \
--        -v admin=keyturn_admin -f postgres-rds-admin.sql
--   psql "<same connection>" -c '\password keyturn_admin'
--
-- psql's \password computes the SCRAM verifier on your machine, so the password reaches
-- neither the server's log nor pg_stat_activity; the script itself sets none. Then store
-- the admin's login as the admin secret (docs/database-admins.md shows the JSON) and name
-- it in the roles file's admin_secret (dynamic users) or a secret's masterarn (alternating
-- users).

-- LOGIN:      keyturn logs in as it.
-- CREATEROLE: creates, alters and drops the users it issues or rotates. Not a superuser
--             (the master user cannot make one): it cannot create or change superusers,
--             nor touch roles that hold REPLICATION or BYPASSRLS.
CREATE ROLE :"admin" WITH LOGIN NOSUPERUSER INHERIT CREATEROLE NOREPLICATION NOBYPASSRLS;

-- Ends the sessions of a revoked or expired user (pg_terminate_backend), which a
-- CREATEROLE role cannot do on its own. Narrower than rds_superuser, which would also do.
-- PostgreSQL 16 and later: only a role holding pg_signal_backend WITH ADMIN OPTION may
-- grant it. keyturn's tests model the master user without that option (and are refused
-- here: "permission denied to grant role"); where your master user is refused too, use
-- the master user itself as keyturn's admin (its RDS-managed secret as it is).
GRANT pg_signal_backend TO :"admin";

-- PostgreSQL 16 and later: a CREATEROLE role may grant only the roles it holds with ADMIN
-- OPTION. The group roles keyturn hands out (a role's `groups` in the roles file) that the
-- master user made are administered by the master user: grant each to the admin, as the
-- master user,
--   GRANT app_readers TO :"admin" WITH ADMIN OPTION;
-- or make the groups as the new admin. (PostgreSQL 15: CREATEROLE may grant any role that
-- is not a superuser.)
