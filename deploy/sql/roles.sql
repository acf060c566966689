-- Least-privilege PostgreSQL roles for slotwatch. Run once per source database as a superuser
-- (or a role that may create roles and hand out REPLICATION and the predefined roles):
--
--   psql -v ON_ERROR_STOP=1 -d <database> -f deploy/sql/roles.sql
--   psql -d <database> -c '\password slotwatch'
--   psql -d <database> -c '\password slotwatch_admin'
--
-- Passwords are set separately on purpose: `\password` hashes on the client, so no password
-- appears in this file, in shell history, in the server log or in pg_stat_activity.
-- The file is idempotent: rerunning it resets both roles' attributes to what is written here.
--
-- slotwatch          the monitoring role behind SLOTWATCH_DSN, used by `slotwatch run`, `status`
--                    and `check`. pg_monitor lets it read every row of pg_stat_activity (other
--                    users' application_name and state: the `snapshotting` check), every column of
--                    pg_stat_replication (sent_lsn of the consumer's walsender), and call
--                    pg_ls_waldir(); pg_replication_slots (every slot of the server, PowerSync's
--                    and the others), pg_stat_replication_slots, pg_current_wal_lsn() and
--                    pg_control_system() (which cluster this is) are open to every role. It cannot drop a slot (no
--                    REPLICATION) or signal a backend (no pg_signal_backend), owns nothing and
--                    reads no table data.
-- slotwatch_admin    the drop role behind SLOTWATCH_ADMIN_DSN, used only by `slotwatch drop`.
--                    REPLICATION is what pg_drop_replication_slot() checks; pg_signal_backend lets
--                    `drop --terminate` end the consumer's walsender (only backends of
--                    non-superusers: never run the consumer as a superuser). It also gets
--                    pg_monitor because `drop` reads the same figures as `run` to decide and to
--                    write its audit record.
--
-- Supabase: the `postgres` role you are given is NOT a superuser, but it has REPLICATION,
-- pg_monitor, pg_read_all_data and pg_signal_backend. It can therefore serve as the drop role as it
-- is (SLOTWATCH_ADMIN_DSN with the direct endpoint, db.<ref>.supabase.co:5432), and it can read
-- everything the monitoring role needs -- but it also reads all your data, so do not use it for
-- SLOTWATCH_DSN. Whether `postgres` may create `slotwatch` with pg_monitor depends on the
-- server version (PostgreSQL 16+ needs ADMIN OPTION on pg_monitor); if this script fails there at
-- GRANT pg_monitor, ask Supabase support or run the monitoring role's GRANT as supabase_admin.
--
-- CONNECT: every role may connect to every database through PUBLIC's default CONNECT privilege.
-- Where that was revoked (REVOKE CONNECT ON DATABASE ... FROM PUBLIC, a common hardening step),
-- the roles need it explicitly; the block at the end grants it on the current database. Add
-- matching `host <db> slotwatch,slotwatch_admin <addr> scram-sha-256` lines to pg_hba.conf if
-- your pg_hba.conf lists roles by name.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'slotwatch') THEN
        CREATE ROLE slotwatch;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'slotwatch_admin') THEN
        CREATE ROLE slotwatch_admin;
    END IF;
END
$roles$;

ALTER ROLE slotwatch
    LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
-- Every poll is read-only anyway; this makes an accidental write fail at the server too.
ALTER ROLE slotwatch SET default_transaction_read_only = on;
GRANT pg_monitor TO slotwatch;

ALTER ROLE slotwatch_admin
    LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE REPLICATION NOBYPASSRLS INHERIT;
GRANT pg_monitor, pg_signal_backend TO slotwatch_admin;

DO $connect$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO slotwatch, slotwatch_admin',
                   current_database());
END
$connect$;
