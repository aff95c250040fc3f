-- The PostgreSQL admin keyturn needs on a self-managed server (15 to 17), with nothing more.
-- Run it as a superuser, then store the admin's login as the admin secret that the roles
-- file's admin_secret (dynamic users) or a secret's masterarn (alternating users) names.
-- On RDS and Aurora the admin they create (their master user) already has all of this: see docs/database-admins.md.
--
--   psql -v admin=keyturn_admin -f postgres-admin.sql
--   psql -c '\password keyturn_admin'
--
-- psql's \password computes the SCRAM verifier on your machine, so the password reaches
-- neither the server's log nor pg_stat_activity; the script itself sets none.

-- LOGIN:      keyturn logs in as it.
-- CREATEROLE: creates, alters and drops the users it issues or rotates. Not a superuser:
--             it cannot create or change superusers, nor touch roles that hold
--             REPLICATION or BYPASSRLS.
CREATE ROLE :"admin" WITH LOGIN NOSUPERUSER INHERIT CREATEROLE NOREPLICATION NOBYPASSRLS;

-- Ends the sessions of a revoked or expired user (pg_terminate_backend), which a
-- CREATEROLE role cannot do on its own.
GRANT pg_signal_backend TO :"admin";

-- PostgreSQL 16 and later: a CREATEROLE role may grant only the roles it holds with ADMIN
-- OPTION. It holds it on the roles it creates itself; for each group role made by someone
-- else that keyturn hands out (a role's `groups` in the roles file, or a rotated user's
-- memberships), and for each user made by someone else that alternating-users rotation
-- clones, grant it:
--   GRANT app_readers TO :"admin" WITH ADMIN OPTION;
-- (PostgreSQL 15 and earlier: CREATEROLE may grant any role that is not a superuser.)
--
-- Every database where dynamic users may connect and create objects must allow the admin
-- to connect (PUBLIC may by default), since keyturn drops what a revoked user owns there.
