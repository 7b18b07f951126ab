-- 0008_table_stats: planner statistics that keep up with a growing table.
--
-- The apply path looks rows up by id lists (= ANY($1::text[])). PostgreSQL
-- picks an index for that from the table's statistics; a table with none
-- (never analysed) is costed with default selectivities, which make
-- "status = 'cancelled'" look a hundred times more selective than a list of
-- prospect ids: a new database then scans every pending follow-up for each
-- batch. Autovacuum analyses a table once a minute at most, and only after
-- 10% of it changed; a database filled from empty at thousands of events a
-- second spends its first minutes with plans made for empty tables.
--
-- crm_analyze_grown(tables, min_changes) analyses each of `tables` (in the
-- current schema) that has changed, since it was last analysed, by at
-- least as many rows as it then held, and by at least `min_changes`: a
-- table is analysed when it has doubled, so a few times over its life, and
-- an update-heavy one about once per rewrite. Returns the tables analysed.
-- One caller at a time: a second instance finds the lock taken and returns
-- nothing. SECURITY DEFINER: only a table's owner may analyse it, and in
-- production that is the migrator (deploy/sql/roles.sql), not the runtime
-- role the daemon runs as; the search path is the one the migration ran
-- with, so the names below cannot be redirected. Tables the owner does not
-- own are left to autovacuum.
CREATE FUNCTION crm_analyze_grown(tables text[], min_changes bigint)
  RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
  t text;
BEGIN
  -- ASCII "crm-stat", like the key migrations take (db/migrations.cc).
  IF NOT pg_try_advisory_xact_lock(x'63726d2d73746174'::bigint) THEN
    RETURN;
  END IF;
  FOR t IN
    SELECT s.relname FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY (tables)
      AND pg_has_role(c.relowner, 'USAGE')
      AND s.n_mod_since_analyze >= GREATEST(min_changes, c.reltuples::bigint)
    ORDER BY s.relname
  LOOP
    EXECUTE format('ANALYZE %I', t);
    RETURN NEXT t;
  END LOOP;
END
$$;
