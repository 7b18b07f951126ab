-- crm-worker's two database roles (run once, as a superuser or a role with
-- CREATEROLE, connected to the crm database):
--
--   psql -d crm -v migrator=crm_migrator -v runtime=crm_worker -f roles.sql
--
-- migrator: owns the schema; `crm-worker migrate` runs as it, before a new
--   version starts (CRM_WORKER_DATABASE_URL=postgresql://crm_migrator@.../crm).
-- runtime:  what the daemon runs as. It reads and writes rows, and nothing
--   more: no CREATE, DROP, ALTER or TRUNCATE. `crm-worker run` checks the
--   schema is current and starts; it cannot apply a migration itself.
--
-- Then give each a way to log in (a password with \password, a client
-- certificate, or peer authentication in pg_hba.conf).

\set ON_ERROR_STOP on
SELECT current_database() AS db \gset

CREATE ROLE :"migrator" LOGIN;
CREATE ROLE :"runtime" LOGIN;

GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"migrator";
GRANT CONNECT ON DATABASE :"db" TO :"runtime";

-- PostgreSQL 15 no longer lets PUBLIC create in the public schema.
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator";
GRANT USAGE ON SCHEMA public TO :"runtime";

-- Tables and sequences the migrator creates from now on...
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"runtime";
ALTER DEFAULT PRIVILEGES FOR ROLE :"migrator" IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO :"runtime";

-- ...and those that exist already (a schema migrated before the roles).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"runtime";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"runtime";
