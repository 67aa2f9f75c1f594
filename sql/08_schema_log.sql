-- hera-guard 08: the schema log. Idempotent.
--
-- Why: logical decoding carries rows, not DDL. After ALTER TABLE ... ADD COLUMN x DEFAULT 'a'
-- the rows written before it read 'a' without ever being rewritten (atthasmissing), a RENAME
-- looks like a dropped plus an added column, and the catalog a client can query later is
-- today's, not the one at the DDL's LSN. So every ALTER TABLE emits, in its own transaction,
-- the table's whole new definition as a transactional logical message
--     pg_logical_emit_message(true, 'hera-guard.schema', <json>)
-- which capture turns into a SchemaChangeEvent at its place in WAL order (contract:
-- docs/schema-log.md; fields = capture.event.ColumnDef). A DDL that rolls back emits nothing.
--
-- <json> = {"schema", "table", "relid" (pg_class.oid: a captured table renamed is still the
-- captured table, capture/decoding/names.py), "command_tag", "ddl" (current_query(): the client's statement
-- text, which may hold several commands), "columns": [{"attnum", "name", "type"
-- (format_type), "not_null", "default" (pg_get_expr or null), "missing" (attmissingval's
-- element as PostgreSQL text, or null), "has_missing"}]} -- live columns only, attnum order.
--
-- Which tables: every ordinary or partitioned table the ALTER TABLE touched, and their
-- inheritance/partition descendants (ADD/DROP/RENAME COLUMN and ALTER TYPE propagate to
-- them). Not only the captured ones: this script does not know capture's --tables, DDL is
-- rare and a message is a few hundred bytes of WAL; capture ignores messages for tables it
-- does not stream. Views, sequences, indexes, foreign and temporary tables are skipped.
-- Unlogged tables are not: ALTER TABLE ... SET UNLOGGED on a captured table takes it out of
-- logical decoding, and that DDL must be on the record too.
--
-- Privileges: CREATE EVENT TRIGGER needs a superuser. Installed by anyone else, this script
-- creates the function, warns, and leaves no trigger: capture then still notices column-set
-- changes but marks them unrecorded, and replay refuses points after them.
-- The function is NOT security definer: it runs with the rights of whoever runs the DDL, and
-- needs only catalog reads and pg_logical_emit_message(), which PostgreSQL grants to PUBLIC.
-- Should a hardened server revoke that, an ALTER TABLE by such a role fails (and rolls back)
-- instead of changing a table unrecorded. EXECUTE is revoked from PUBLIC anyway (an
-- event-trigger function cannot be called directly; firing needs no grant).
--
-- Text output: values in "missing" and "default" are printed by PostgreSQL's output functions,
-- which depend on the session (TimeZone, DateStyle, ...). The function pins the same settings
-- capture uses on its own connections (capture/snapshot.py SESSION_OPTIONS), so a missing
-- timestamptz reads the same as that value would in a change event. search_path is pinned to
-- pg_catalog: nothing a caller creates can shadow the functions used below.

CREATE OR REPLACE FUNCTION hera_guard_schema_log()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
SET lc_monetary = 'C'
AS $$
DECLARE
    rel record;
BEGIN
    FOR rel IN
        WITH RECURSIVE touched AS (
            SELECT DISTINCT c.objid AS relid, c.command_tag
            FROM pg_event_trigger_ddl_commands() c
            WHERE c.classid = 'pg_class'::regclass
          UNION
            SELECT i.inhrelid, t.command_tag
            FROM touched t JOIN pg_inherits i ON i.inhparent = t.relid
        )
        SELECT DISTINCT ON (t.relid) t.relid, t.command_tag, n.nspname, k.relname
        FROM touched t
        JOIN pg_class k ON k.oid = t.relid
        JOIN pg_namespace n ON n.oid = k.relnamespace
        WHERE k.relkind IN ('r', 'p') AND k.relpersistence <> 't'
        ORDER BY t.relid
    LOOP
        PERFORM pg_logical_emit_message(true, 'hera-guard.schema', json_build_object(
            'schema', rel.nspname,
            'table', rel.relname,
            'relid', rel.relid::bigint,
            'command_tag', rel.command_tag,
            'ddl', current_query(),
            'columns', (
                SELECT coalesce(json_agg(json_build_object(
                           'attnum', a.attnum,
                           'name', a.attname,
                           'type', format_type(a.atttypid, a.atttypmod),
                           'not_null', a.attnotnull,
                           'default', pg_get_expr(d.adbin, d.adrelid),
                           'missing', CASE WHEN a.atthasmissing
                                           THEN (a.attmissingval::text::text[])[1] END,
                           'has_missing', a.atthasmissing)
                       ORDER BY a.attnum), '[]'::json)
                FROM pg_attribute a
                LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                WHERE a.attrelid = rel.relid AND a.attnum > 0 AND NOT a.attisdropped)
        )::text);
    END LOOP;
END;
$$;

REVOKE ALL ON FUNCTION hera_guard_schema_log() FROM PUBLIC;
DO $$
DECLARE
    r text;
BEGIN
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION hera_guard_schema_log() FROM %I', r);
    END LOOP;
END;
$$;

-- One trigger per database, pointing at this schema's function, enabled ALWAYS (a session
-- with session_replication_role = replica still records its DDL). Left alone when it already
-- is exactly that; re-created when it points elsewhere or was disabled.
DO $$
DECLARE
    fn oid := 'hera_guard_schema_log()'::regprocedure;
    current_trigger record;
BEGIN
    SELECT evtfoid, evtenabled, evtevent, evttags INTO current_trigger
    FROM pg_event_trigger WHERE evtname = 'hera_guard_schema_log';
    IF FOUND AND current_trigger.evtfoid = fn AND current_trigger.evtenabled = 'A'
            AND current_trigger.evtevent = 'ddl_command_end'
            AND current_trigger.evttags = ARRAY['ALTER TABLE'] THEN
        RETURN;
    END IF;
    BEGIN
        DROP EVENT TRIGGER IF EXISTS hera_guard_schema_log;
        EXECUTE format('CREATE EVENT TRIGGER hera_guard_schema_log ON ddl_command_end '
                       'WHEN TAG IN (''ALTER TABLE'') EXECUTE FUNCTION %I.%I()',
                       (SELECT nspname FROM pg_namespace n JOIN pg_proc p
                          ON p.pronamespace = n.oid WHERE p.oid = fn),
                       'hera_guard_schema_log');
        ALTER EVENT TRIGGER hera_guard_schema_log ENABLE ALWAYS;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'schema log not installed: creating the event trigger '
                      'hera_guard_schema_log needs a superuser; without it capture marks '
                      'schema changes unrecorded and replay refuses points after them '
                      '(run guard install as a superuser)';
    END;
END;
$$;
