-- hera-guard 03: the constraint impact validator, without the plan's SQL injection. Idempotent.
--
-- The plan spliced the caller's text into three SELECTs ('... AND NOT (%s)'), so
-- "true) OR (SELECT pg_sleep(60)) IS NULL OR (true" or "...; DROP TABLE ..." ran as written.
-- Here the text must first be something PostgreSQL itself accepts as a CHECK constraint on
-- core_relationships, and only PostgreSQL's own re-printing of the parsed expression is used:
--   1. no ';' at all (no second statement can ride along);
--   2. in a subtransaction that is always rolled back: an empty temporary copy of the table
--      gets  ADD CONSTRAINT ... CHECK (<text>) NOT VALID  -- CHECK refuses subqueries,
--      aggregates, window functions and references to other tables; exactly one constraint
--      and no other change may result (so ") NOT VALID, ADD COLUMN ..." is refused);
--   3. the parsed expression, re-printed by pg_get_expr(), must also be accepted as a STORED
--      generated column, which PostgreSQL only allows for IMMUTABLE expressions (refuses
--      random(), now(), pg_sleep(), nextval(), ...);
--   4. the violations are counted with that re-printed expression, in a READ ONLY
--      subtransaction, with the caller's privileges (SECURITY INVOKER: no escalation).
-- Violations are rows where the expression is FALSE, exactly what VALIDATE CONSTRAINT would
-- reject (the plan only looked at rows with a non-NULL smart_code, hiding the others).

CREATE OR REPLACE FUNCTION guard_checked_constraint_expression(proposed_constraint text)
RETURNS text
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path FROM CURRENT
AS $$
DECLARE
    deparsed text;
    constraints_added integer;
    columns_now integer;
    columns_table integer;
BEGIN
    IF proposed_constraint IS NULL OR btrim(proposed_constraint) = '' THEN
        RAISE EXCEPTION 'the constraint expression is empty' USING ERRCODE = 'HG110';
    END IF;
    IF position(';' IN proposed_constraint) > 0 THEN
        RAISE EXCEPTION 'the constraint expression contains ";": statement separators are not allowed'
            USING ERRCODE = 'HG110';
    END IF;
    SELECT count(*) INTO columns_table FROM pg_attribute
    WHERE attrelid = 'core_relationships'::regclass AND attnum > 0 AND NOT attisdropped;
    BEGIN
        CREATE TEMP TABLE hera_guard_constraint_probe (LIKE core_relationships);
        EXECUTE format('ALTER TABLE pg_temp.hera_guard_constraint_probe '
                       'ADD CONSTRAINT hera_guard_probe_ck CHECK (%s) NOT VALID',
                       proposed_constraint);
        SELECT count(*) INTO constraints_added FROM pg_constraint
        WHERE conrelid = 'pg_temp.hera_guard_constraint_probe'::regclass;
        SELECT count(*) INTO columns_now FROM pg_attribute
        WHERE attrelid = 'pg_temp.hera_guard_constraint_probe'::regclass
          AND attnum > 0 AND NOT attisdropped;
        SELECT pg_get_expr(conbin, conrelid) INTO deparsed FROM pg_constraint
        WHERE conrelid = 'pg_temp.hera_guard_constraint_probe'::regclass
          AND conname = 'hera_guard_probe_ck' AND contype = 'c';
        IF constraints_added <> 1 OR columns_now <> columns_table OR deparsed IS NULL THEN
            RAISE EXCEPTION 'the text is more than one CHECK expression'
                USING ERRCODE = 'HG111';
        END IF;
        EXECUTE format('ALTER TABLE pg_temp.hera_guard_constraint_probe '
                       'ADD COLUMN hera_guard_probe boolean GENERATED ALWAYS AS (%s) STORED',
                       deparsed);
        RAISE EXCEPTION 'probe done' USING ERRCODE = 'HG199';  -- roll the probe back
    EXCEPTION
        WHEN SQLSTATE 'HG199' THEN
            NULL;
        WHEN SQLSTATE 'HG111' THEN
            RAISE EXCEPTION 'not a single CHECK expression on core_relationships'
                USING ERRCODE = 'HG110';
        WHEN OTHERS THEN
            RAISE EXCEPTION 'not an acceptable CHECK expression on core_relationships: %',
                            SQLERRM
                USING ERRCODE = 'HG110';
    END;
    RETURN deparsed;
END;
$$;

CREATE OR REPLACE FUNCTION validate_smart_code_constraint_impact(proposed_constraint text)
RETURNS TABLE(
    impact_level text,
    affected_relationships bigint,
    affected_auth_relationships bigint,
    sample_violations text[],
    risk_assessment text,
    recommendation text
)
LANGUAGE plpgsql
SECURITY INVOKER
SET search_path FROM CURRENT
AS $$
DECLARE
    expr text := guard_checked_constraint_expression(proposed_constraint);
    total_violations bigint;
    auth_violations bigint;
    sample_data text[];
    risk_level text;
BEGIN
    BEGIN
        SET LOCAL transaction_read_only = on;
        EXECUTE format('SELECT count(*), count(*) FILTER (WHERE relationship_type = %L) '
                       'FROM core_relationships WHERE NOT (%s)', 'USER_MEMBER_OF_ORG', expr)
            INTO total_violations, auth_violations;
        EXECUTE format('SELECT ARRAY(SELECT DISTINCT coalesce(smart_code, %L) '
                       'FROM core_relationships WHERE NOT (%s) LIMIT 10)', 'NULL', expr)
            INTO sample_data;
        RAISE EXCEPTION 'counted' USING ERRCODE = 'HG199';  -- leave read-only mode
    EXCEPTION
        WHEN SQLSTATE 'HG199' THEN
            NULL;
    END;

    risk_level := CASE
        WHEN total_violations = 0 THEN 'SAFE'
        WHEN auth_violations > 0 THEN 'CATASTROPHIC'
        WHEN total_violations > 1000 THEN 'CRITICAL'
        WHEN total_violations > 100 THEN 'HIGH'
        WHEN total_violations > 10 THEN 'MEDIUM'
        ELSE 'LOW'
    END;
    impact_level := risk_level;
    affected_relationships := total_violations;
    affected_auth_relationships := auth_violations;
    sample_violations := sample_data;
    risk_assessment := format('%s relationships would be affected (%s auth relationships)',
                              total_violations, auth_violations);
    recommendation := CASE risk_level
        WHEN 'SAFE' THEN 'Safe to deploy constraint immediately'
        WHEN 'CATASTROPHIC' THEN 'DO NOT DEPLOY! Would break authentication system'
        WHEN 'CRITICAL' THEN 'DO NOT DEPLOY! Requires smart code migration first'
        WHEN 'HIGH' THEN 'Requires careful migration planning'
        WHEN 'MEDIUM' THEN 'Acceptable with backup and rollback plan'
        ELSE 'Low risk, but backup recommended'
    END;
    RETURN NEXT;
END;
$$;

-- The plan's v3 patterns, in one place (used by 04, the health check and `guard predeploy`).
CREATE OR REPLACE FUNCTION smart_code_v3_expression()
RETURNS text
LANGUAGE sql
IMMUTABLE
SET search_path FROM CURRENT
AS $$
SELECT 'smart_code ~ ''^HERA\.ACCOUNTING\.[A-Z]+(\.[A-Z]+)*\.v2$'' OR '
    || 'smart_code ~ ''^HERA\.UNIVERSAL\.[A-Z]+(\.[A-Z]+)*\.V1$'' OR '
    || 'smart_code ~ ''^HERA\.[A-Z]+(\.[A-Z]+)*\.v1$'' OR '
    || 'smart_code ~ ''^HERA\.WORKFLOW\.[A-Z]+(\.[A-Z]+)*\.v1$'' OR '
    || 'smart_code ~ ''^HERA\.AUTH\.[A-Z]+(\.[A-Z]+)*\.v1$'' OR '
    || 'smart_code ~ ''^HERA\.EMERGENCY\.[A-Z]+(\.[A-Z]+)*\.v1$'' OR '
    || 'smart_code IS NULL'
$$;
