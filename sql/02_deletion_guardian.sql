-- hera-guard 02: the deletion guardian on core_relationships. Idempotent.
--
-- What it protects against, per STATEMENT (the plan used a row trigger: one alert row per
-- deleted row, and TRUNCATE was never seen):
--   * DELETE, and UPDATE that removes a membership in effect (deactivates an active row,
--     retypes it, moves it to another user, or changes its id);
--   * the last active USER_MEMBER_OF_ORG membership of a user: blocked with the plan's error
--     text unless the transaction sets  SET LOCAL hera_guard.allow_orphaning = '<reason>';
--   * mass changes: more removed rows than guard_settings.mass_change_threshold in one
--     statement, or cumulatively in one transaction (a row-by-row loop is still a mass
--     deletion), are blocked unless  SET LOCAL hera_guard.allow_mass_change = '<reason>';
--     the mass opt-in does NOT bypass the orphan protection;
--   * TRUNCATE (row triggers never fire for it): blocked unless
--     SET LOCAL hera_guard.allow_truncate = '<reason>'.
-- Exactly one row in critical_system_alerts per statement that removes rows (with counts,
-- rows per relationship_type, up to 20 ids and the opt-in reason), none for other statements.
-- INSERTs and re-activations never need an opt-in (restores pass freely).
--
-- The opt-ins are a break-glass with an audit trail, not an authorisation boundary: anyone
-- allowed to DELETE can SET them; what they cannot do is remove data silently.
-- Blocked statements roll back, and with them any row they would write: the plan's
-- "BLOCKED_USER_ORPHANING" alert row was rolled back together with its RAISE and never
-- existed. What survives a rollback here: the client error, the server log line (ERROR with
-- SQLSTATE HG001 mass change, HG002 orphaning, HG003 truncate) and the non-transactional
-- counter sequence guard_blocked_statements, which `guard postdeploy` reports.
--
-- Concurrency: two transactions each deleting one of a user's two memberships would both see
-- the other membership still present (write skew) and together orphan the user. The guardian
-- therefore locks (FOR SHARE) the user's remaining active memberships before checking: the
-- second deleter waits for the first, and then (READ COMMITTED) sees the committed deletion
-- and is blocked, or (REPEATABLE READ/SERIALIZABLE) fails with a serialization error, or one of
-- them is aborted as a deadlock victim. In every case the user keeps a membership.
--
-- Triggers are ENABLE ALWAYS: session_replication_role = replica does not switch them off.

CREATE SEQUENCE IF NOT EXISTS guard_blocked_statements;

-- How many statements the guardian has blocked since install (survives their rollback).
CREATE OR REPLACE FUNCTION guard_blocked_statements_total()
RETURNS bigint
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$ SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM guard_blocked_statements $$;

CREATE OR REPLACE FUNCTION guard_opt_in(setting_name text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$ SELECT nullif(btrim(current_setting(setting_name, true)), '') $$;

CREATE OR REPLACE FUNCTION guard_evaluate_removal(
    op text,
    removed bigint,
    removed_auth bigint,
    auth_users text[],
    by_type jsonb,
    sample_ids uuid[]
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    mass_reason text := guard_opt_in('hera_guard.allow_mass_change');
    orphan_reason text := guard_opt_in('hera_guard.allow_orphaning');
    threshold bigint := coalesce((SELECT value::bigint FROM guard_settings
                                  WHERE key = 'mass_change_threshold'), 100);
    alert_threshold bigint := coalesce((SELECT value::bigint FROM guard_settings
                                        WHERE key = 'mass_change_alert_threshold'), 10);
    txn_removed bigint;
    orphans text[] := '{}';
    kind text;
    sev text;
    msg text;
BEGIN
    IF removed = 0 THEN
        RETURN;
    END IF;
    txn_removed := coalesce(nullif(current_setting('hera_guard.removed_in_txn', true), '')
                            ::bigint, 0) + removed;
    PERFORM set_config('hera_guard.removed_in_txn', txn_removed::text, true);

    IF removed_auth > 0 THEN
        -- See the header: lock the survivors first, then look (write skew).
        PERFORM 1 FROM core_relationships c
        WHERE c.from_entity_id = ANY (auth_users)
          AND c.relationship_type = 'USER_MEMBER_OF_ORG' AND c.is_active
        FOR SHARE;
        orphans := ARRAY(
            SELECT u FROM unnest(auth_users) AS u
            WHERE NOT EXISTS (
                SELECT 1 FROM core_relationships c
                WHERE c.from_entity_id = u
                  AND c.relationship_type = 'USER_MEMBER_OF_ORG' AND c.is_active)
            ORDER BY u);
        IF cardinality(orphans) > 0 AND orphan_reason IS NULL THEN
            PERFORM nextval('guard_blocked_statements');
            RAISE EXCEPTION 'CRITICAL PROTECTION: Cannot delete last organization membership for user %. This would orphan the user.', orphans[1]
                USING ERRCODE = 'HG002',
                      DETAIL = format('%s %s would leave %s user(s) without an active USER_MEMBER_OF_ORG membership: %s',
                                      op, 'statement', cardinality(orphans),
                                      array_to_string(orphans[1:10], ', ')),
                      HINT = 'To remove a user''s last membership on purpose: SET LOCAL hera_guard.allow_orphaning = ''<reason>''';
        END IF;
    END IF;

    IF (removed > threshold OR txn_removed > threshold) AND mass_reason IS NULL THEN
        PERFORM nextval('guard_blocked_statements');
        RAISE EXCEPTION 'MASS CHANGE BLOCKED: % would remove % core_relationships rows (% in this transaction); the limit is %',
                op, removed, txn_removed, threshold
            USING ERRCODE = 'HG001',
                  HINT = 'If this is intended: SET LOCAL hera_guard.allow_mass_change = ''<reason>'' in the same transaction (it is logged).';
    END IF;

    IF cardinality(orphans) > 0 THEN
        kind := 'USER_ORPHANING_ALLOWED';
        sev := 'WARNING';
        msg := format('%s removed the last membership of %s user(s) with hera_guard.allow_orphaning: %s',
                      op, cardinality(orphans), orphan_reason);
    ELSIF mass_reason IS NOT NULL THEN
        kind := 'MASS_CHANGE_OPT_IN';
        sev := 'WARNING';
        msg := format('%s removed %s relationships with hera_guard.allow_mass_change: %s',
                      op, removed, mass_reason);
    ELSIF removed >= alert_threshold THEN
        kind := 'MASS_RELATIONSHIP_DELETION_DETECTED';
        sev := 'WARNING';
        msg := format('%s removed %s relationships in one statement', op, removed);
    ELSIF removed_auth > 0 THEN
        kind := 'CRITICAL_AUTH_DELETION';
        sev := 'WARNING';
        msg := format('%s removed %s user organization membership(s); every user keeps one',
                      op, removed_auth);
    ELSE
        kind := 'RELATIONSHIP_DELETION';
        sev := 'INFO';
        msg := format('%s removed %s relationship(s)', op, removed);
    END IF;

    INSERT INTO critical_system_alerts (alert_type, severity, message, metadata)
    VALUES (kind, sev, msg, jsonb_strip_nulls(jsonb_build_object(
        'operation', op,
        'removed', removed,
        'removed_auth_memberships', removed_auth,
        'removed_in_transaction', txn_removed,
        'threshold', threshold,
        'by_relationship_type', by_type,
        'sample_ids', to_jsonb(sample_ids),
        'orphaned_users', CASE WHEN cardinality(orphans) > 0 THEN to_jsonb(orphans[1:100]) END,
        'allow_mass_change', mass_reason,
        'allow_orphaning', CASE WHEN cardinality(orphans) > 0 THEN orphan_reason END,
        'txid', txid_current(),
        'session_user', session_user,
        'application_name', current_setting('application_name', true))));
END;
$$;

CREATE OR REPLACE FUNCTION guard_relationship_delete()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    removed bigint;
    removed_auth bigint;
    users text[];
    by_type jsonb;
    sample uuid[];
BEGIN
    SELECT coalesce(sum(n), 0), coalesce(sum(a), 0), jsonb_object_agg(t, n)
      INTO removed, removed_auth, by_type
      FROM (SELECT relationship_type AS t, count(*) AS n,
                   count(*) FILTER (WHERE relationship_type = 'USER_MEMBER_OF_ORG'
                                     AND is_active) AS a
            FROM old_rows GROUP BY relationship_type) s;
    IF removed = 0 THEN
        RETURN NULL;
    END IF;
    IF removed_auth > 0 THEN
        users := ARRAY(SELECT DISTINCT from_entity_id FROM old_rows
                       WHERE relationship_type = 'USER_MEMBER_OF_ORG' AND is_active);
    END IF;
    sample := ARRAY(SELECT id FROM old_rows LIMIT 20);
    PERFORM guard_evaluate_removal('DELETE', removed, removed_auth, users, by_type, sample);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION guard_relationship_update()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    removed bigint;
    removed_auth bigint;
    users text[];
    by_type jsonb;
    sample uuid[];
BEGIN
    -- Fast path: an UPDATE that touches no active row cannot remove anything (re-activations).
    IF NOT EXISTS (SELECT 1 FROM old_rows WHERE is_active) THEN
        RETURN NULL;
    END IF;
    WITH gone AS MATERIALIZED (
        SELECT o.id, o.relationship_type, o.from_entity_id
        FROM old_rows o LEFT JOIN new_rows n ON n.id = o.id
        WHERE o.is_active
          AND (n.id IS NULL OR NOT n.is_active
               OR n.relationship_type IS DISTINCT FROM o.relationship_type
               OR n.from_entity_id IS DISTINCT FROM o.from_entity_id)),
    per_type AS (
        SELECT relationship_type AS t, count(*) AS n,
               count(*) FILTER (WHERE relationship_type = 'USER_MEMBER_OF_ORG') AS a
        FROM gone GROUP BY relationship_type)
    SELECT (SELECT coalesce(sum(n), 0) FROM per_type),
           (SELECT coalesce(sum(a), 0) FROM per_type),
           (SELECT jsonb_object_agg(t, n) FROM per_type),
           ARRAY(SELECT DISTINCT from_entity_id FROM gone
                 WHERE relationship_type = 'USER_MEMBER_OF_ORG'),
           ARRAY(SELECT id FROM gone LIMIT 20)
      INTO removed, removed_auth, by_type, users, sample;
    IF removed = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM guard_evaluate_removal('UPDATE', removed, removed_auth, users, by_type, sample);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION guard_relationship_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    reason text := guard_opt_in('hera_guard.allow_truncate');
    row_count bigint;
BEGIN
    IF reason IS NULL THEN
        PERFORM nextval('guard_blocked_statements');
        RAISE EXCEPTION 'TRUNCATE of core_relationships blocked by hera-guard'
            USING ERRCODE = 'HG003',
                  HINT = 'If this is intended: SET LOCAL hera_guard.allow_truncate = ''<reason>'' in the same transaction (it is logged).';
    END IF;
    SELECT count(*) INTO row_count FROM core_relationships;
    INSERT INTO critical_system_alerts (alert_type, severity, message, metadata)
    VALUES ('TRUNCATE_ALLOWED', 'WARNING',
            format('TRUNCATE core_relationships (%s rows) with hera_guard.allow_truncate: %s',
                   row_count, reason),
            jsonb_build_object('operation', 'TRUNCATE', 'removed', row_count,
                               'allow_truncate', reason, 'txid', txid_current(),
                               'session_user', session_user,
                               'application_name', current_setting('application_name', true)));
    RETURN NULL;
END;
$$;

-- The plan's row-level trigger is replaced (it alerted per row and missed TRUNCATE).
DROP TRIGGER IF EXISTS relationship_deletion_guardian ON core_relationships;

CREATE OR REPLACE TRIGGER hera_guard_delete
    AFTER DELETE ON core_relationships
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION guard_relationship_delete();
CREATE OR REPLACE TRIGGER hera_guard_update
    AFTER UPDATE ON core_relationships
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION guard_relationship_update();
CREATE OR REPLACE TRIGGER hera_guard_truncate
    BEFORE TRUNCATE ON core_relationships
    FOR EACH STATEMENT EXECUTE FUNCTION guard_relationship_truncate();
ALTER TABLE core_relationships ENABLE ALWAYS TRIGGER hera_guard_delete;
ALTER TABLE core_relationships ENABLE ALWAYS TRIGGER hera_guard_update;
ALTER TABLE core_relationships ENABLE ALWAYS TRIGGER hera_guard_truncate;
