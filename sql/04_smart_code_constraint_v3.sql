-- hera-guard 04: the plan's backwards-compatible smart-code constraint v3. Idempotent.
--
-- Differences from the plan, on purpose:
--   * applied only when validate_smart_code_constraint_impact() says SAFE; otherwise the
--     existing constraint is left as it is and a WARNING says why (install still succeeds);
--   * no long lock: the plan's ADD CONSTRAINT scans the whole table under ACCESS EXCLUSIVE
--     (reads and writes wait). Here it is added NOT VALID (a catalog change, brief lock, short
--     lock_timeout so it never queues for long in front of other sessions), committed, and
--     then VALIDATEd in a second transaction under SHARE UPDATE EXCLUSIVE, which lets reads
--     and writes continue while the rows are checked;
--   * nothing happens when the same constraint is already there and valid.
-- The two steps MUST be separate transactions; `guard install` runs this file as one
-- multi-statement string, so the BEGIN/COMMIT pairs below are real.

BEGIN;
SET LOCAL lock_timeout = '5s';
DO $$
DECLARE
    wanted text := guard_checked_constraint_expression(smart_code_v3_expression());
    existing text;
    impact record;
BEGIN
    SELECT pg_get_expr(conbin, conrelid) INTO existing FROM pg_constraint
    WHERE conrelid = 'core_relationships'::regclass
      AND conname = 'core_relationships_smart_code_ck';
    IF existing IS NOT DISTINCT FROM wanted THEN
        RETURN;
    END IF;
    SELECT * INTO impact FROM validate_smart_code_constraint_impact(smart_code_v3_expression());
    IF impact.impact_level <> 'SAFE' THEN
        RAISE WARNING 'smart code constraint v3 NOT applied: the validator says % (%); migrate the listed smart codes, then re-run guard install',
            impact.impact_level, impact.risk_assessment;
        RETURN;
    END IF;
    ALTER TABLE core_relationships DROP CONSTRAINT IF EXISTS core_relationships_smart_code_ck;
    EXECUTE format('ALTER TABLE core_relationships ADD CONSTRAINT '
                   'core_relationships_smart_code_ck CHECK (%s) NOT VALID',
                   smart_code_v3_expression());
END;
$$;
COMMIT;

BEGIN;
SET LOCAL lock_timeout = '5s';
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'core_relationships'::regclass
                 AND conname = 'core_relationships_smart_code_ck' AND NOT convalidated) THEN
        ALTER TABLE core_relationships VALIDATE CONSTRAINT core_relationships_smart_code_ck;
    END IF;
END;
$$;
COMMIT;
