-- hera-guard 06: emergency recovery kit. Idempotent.
--
-- emergency_auth_recovery(): the plan's function, plus input checks: the user must exist in
-- auth.users (or app_users) and the organization in core_organizations (when that table
-- exists); otherwise it raises and changes nothing (the plan happily created memberships for
-- typos).
-- restore_relationships_from_backup(): set-based. The plan looped row by row with one
-- exception block (= one subtransaction) per row and accepted ANY table name that
-- information_schema knew, in any schema. Here:
--   * the name must be a core_relationships backup registered in system_backups;
--   * one INSERT ... SELECT ... ON CONFLICT (id) DO NOTHING restores everything missing;
--   * only if that statement fails (a row violating a constraint that was added since the
--     backup, ...) are the missing rows retried in chunks of 1000, and a failing chunk row by
--     row: the failures go to restore_failures with their error, the rest is restored;
--   * it reports restored / already present / failed, and writes one alert.
-- Restores only INSERT, so the deletion guardian lets them through without any opt-in.

DROP FUNCTION IF EXISTS restore_relationships_from_backup(text);

CREATE OR REPLACE FUNCTION emergency_auth_recovery(
    user_id text,
    org_id uuid,
    user_role text DEFAULT 'owner',
    permissions text[] DEFAULT ARRAY['admin:full', 'salon:all']
)
RETURNS TABLE(
    recovery_status text,
    relationship_id uuid,
    dynamic_data_created bigint,
    message text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_variable
DECLARE
    users_table regclass := guard_users_table();
    user_exists boolean;
    new_relationship_id uuid;
    dynamic_count bigint := 0;
BEGIN
    IF user_id IS NULL OR btrim(user_id) = '' OR org_id IS NULL THEN
        RAISE EXCEPTION 'User ID and Organization ID are required' USING ERRCODE = 'HG130';
    END IF;
    IF user_role IS NULL OR btrim(user_role) = '' THEN
        RAISE EXCEPTION 'the role must not be empty' USING ERRCODE = 'HG130';
    END IF;
    IF users_table IS NOT NULL THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE id::text = $1)', users_table)
            INTO user_exists USING user_id;
        IF NOT user_exists THEN
            RAISE EXCEPTION 'user % does not exist in %', user_id, users_table
                USING ERRCODE = 'HG131';
        END IF;
    END IF;
    IF to_regclass('core_organizations') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM core_organizations o WHERE o.id = org_id) THEN
        RAISE EXCEPTION 'organization % does not exist in core_organizations', org_id
            USING ERRCODE = 'HG132';
    END IF;

    SELECT cr.id INTO new_relationship_id
    FROM core_relationships cr
    WHERE cr.from_entity_id = user_id
      AND cr.to_entity_id = org_id::text
      AND cr.relationship_type = 'USER_MEMBER_OF_ORG'
    ORDER BY cr.is_active DESC, cr.updated_at DESC
    LIMIT 1;

    IF new_relationship_id IS NULL THEN
        INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id,
                                        relationship_type, smart_code, is_active,
                                        relationship_data)
        VALUES (org_id, user_id, org_id::text, 'USER_MEMBER_OF_ORG',
                'HERA.EMERGENCY.AUTH.RECOVERY.v1', true,
                jsonb_build_object('role', user_role, 'permissions', permissions,
                                   'emergency_created', now(),
                                   'recovery_reason', 'emergency_auth_recovery_function'))
        RETURNING id INTO new_relationship_id;
    ELSE
        UPDATE core_relationships cr
        SET is_active = true,
            updated_at = now(),
            relationship_data = jsonb_set(coalesce(cr.relationship_data, '{}'),
                                          '{emergency_reactivated}', to_jsonb(now()))
        WHERE cr.id = new_relationship_id;
    END IF;

    INSERT INTO core_dynamic_data (organization_id, entity_id, field_name, field_type,
                                   field_value_text, smart_code)
    VALUES (org_id, user_id, 'role', 'text', user_role, 'HERA.EMERGENCY.USER.ROLE.v1')
    ON CONFLICT (organization_id, entity_id, field_name)
    DO UPDATE SET field_value_text = EXCLUDED.field_value_text, updated_at = now();
    dynamic_count := dynamic_count + 1;

    INSERT INTO core_dynamic_data (organization_id, entity_id, field_name, field_type,
                                   field_value_json, smart_code)
    VALUES (org_id, user_id, 'permissions', 'json', to_jsonb(permissions),
            'HERA.EMERGENCY.USER.PERMISSIONS.v1')
    ON CONFLICT (organization_id, entity_id, field_name)
    DO UPDATE SET field_value_json = EXCLUDED.field_value_json, updated_at = now();
    dynamic_count := dynamic_count + 1;

    INSERT INTO critical_system_alerts (alert_type, severity, message, metadata)
    VALUES ('EMERGENCY_AUTH_RECOVERY', 'INFO',
            format('Emergency authentication recovery completed for user %s in org %s',
                   user_id, org_id),
            jsonb_build_object('user_id', user_id, 'org_id', org_id,
                               'relationship_id', new_relationship_id, 'role', user_role,
                               'permissions', permissions, 'session_user', session_user));

    RETURN QUERY SELECT 'SUCCESS'::text, new_relationship_id, dynamic_count,
        format('Emergency recovery complete. User %s can now access organization %s',
               user_id, org_id);
END;
$$;

CREATE FUNCTION restore_relationships_from_backup(backup_table_name text)
RETURNS TABLE(
    restoration_status text,
    relationships_restored bigint,
    auth_relationships_restored bigint,
    errors_encountered bigint,
    already_present bigint
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_variable
DECLARE
    src regclass;
    cols text;
    total bigint;
    restored bigint := 0;
    auth bigint := 0;
    failed bigint := 0;
    pending bigint;
    got bigint;
    got_auth bigint;
    restore_id uuid := gen_random_uuid();
    lo bigint;
    i bigint;
    chunk constant bigint := 1000;
BEGIN
    IF backup_table_name IS NULL OR NOT EXISTS (
        SELECT 1 FROM system_backups sb
        WHERE sb.table_name = backup_table_name
          AND sb.source_table = 'core_relationships') THEN
        RAISE EXCEPTION 'unknown backup %: not a core_relationships backup listed in system_backups',
            backup_table_name
            USING ERRCODE = 'HG140',
                  HINT = 'SELECT table_name FROM system_backups WHERE source_table = ''core_relationships'' ORDER BY created_at DESC';
    END IF;
    src := to_regclass(quote_ident(backup_table_name));
    IF src IS NULL THEN
        RAISE EXCEPTION 'backup % is listed in system_backups but its table is gone',
            backup_table_name USING ERRCODE = 'HG141';
    END IF;
    -- The columns both tables have (a backup taken before a column was added still restores).
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a
    WHERE a.attrelid = 'core_relationships'::regclass AND a.attnum > 0
      AND NOT a.attisdropped AND a.attgenerated = ''
      AND EXISTS (SELECT 1 FROM pg_attribute b
                  WHERE b.attrelid = src AND b.attname = a.attname AND NOT b.attisdropped);
    EXECUTE format('SELECT count(*) FROM %s', src) INTO total;

    BEGIN
        EXECUTE format('WITH ins AS (INSERT INTO core_relationships (%1$s) '
                       'SELECT %1$s FROM %2$s ON CONFLICT (id) DO NOTHING '
                       'RETURNING relationship_type) '
                       'SELECT count(*), count(*) FILTER (WHERE relationship_type = %3$L) '
                       'FROM ins', cols, src, 'USER_MEMBER_OF_ORG')
            INTO restored, auth;
    EXCEPTION WHEN OTHERS THEN
        -- Slow path, only for what could not go in at once.
        restored := 0;
        auth := 0;
        DROP TABLE IF EXISTS pg_temp.hera_guard_restore_pending;
        EXECUTE format('CREATE TEMP TABLE hera_guard_restore_pending ON COMMIT DROP AS '
                       'SELECT row_number() OVER () AS hg_rn, b.* FROM %s b '
                       'WHERE NOT EXISTS (SELECT 1 FROM core_relationships c '
                       'WHERE c.id = b.id)', src);
        CREATE INDEX ON pg_temp.hera_guard_restore_pending (hg_rn);
        SELECT count(*) INTO pending FROM pg_temp.hera_guard_restore_pending;
        lo := 1;
        WHILE lo <= pending LOOP
            BEGIN
                EXECUTE format('WITH ins AS (INSERT INTO core_relationships (%1$s) '
                               'SELECT %1$s FROM pg_temp.hera_guard_restore_pending '
                               'WHERE hg_rn BETWEEN $1 AND $2 ON CONFLICT (id) DO NOTHING '
                               'RETURNING relationship_type) SELECT count(*), '
                               'count(*) FILTER (WHERE relationship_type = %2$L) FROM ins',
                               cols, 'USER_MEMBER_OF_ORG')
                    INTO got, got_auth USING lo, lo + chunk - 1;
                restored := restored + got;
                auth := auth + got_auth;
            EXCEPTION WHEN OTHERS THEN
                FOR i IN lo .. least(lo + chunk - 1, pending) LOOP
                    BEGIN
                        EXECUTE format('WITH ins AS (INSERT INTO core_relationships (%1$s) '
                                       'SELECT %1$s FROM pg_temp.hera_guard_restore_pending '
                                       'WHERE hg_rn = $1 ON CONFLICT (id) DO NOTHING '
                                       'RETURNING relationship_type) SELECT count(*), '
                                       'count(*) FILTER (WHERE relationship_type = %2$L) '
                                       'FROM ins', cols, 'USER_MEMBER_OF_ORG')
                            INTO got, got_auth USING i;
                        restored := restored + got;
                        auth := auth + got_auth;
                    EXCEPTION WHEN OTHERS THEN
                        failed := failed + 1;
                        INSERT INTO restore_failures (restore_id, backup_table,
                                                      relationship_id, error)
                        SELECT restore_id, backup_table_name, p.id, SQLERRM
                        FROM pg_temp.hera_guard_restore_pending p WHERE p.hg_rn = i;
                    END;
                END LOOP;
            END;
            lo := lo + chunk;
        END LOOP;
        DROP TABLE IF EXISTS pg_temp.hera_guard_restore_pending;
    END;

    INSERT INTO critical_system_alerts (alert_type, severity, message, metadata)
    VALUES ('BULK_RELATIONSHIP_RESTORATION',
            CASE WHEN failed = 0 THEN 'INFO' ELSE 'WARNING' END,
            format('Bulk restoration from %s: %s restored, %s already present, %s errors',
                   backup_table_name, restored, total - restored - failed, failed),
            jsonb_build_object('backup_table', backup_table_name, 'restore_id', restore_id,
                               'total_restored', restored, 'auth_restored', auth,
                               'already_present', total - restored - failed,
                               'errors', failed, 'session_user', session_user));

    RETURN QUERY SELECT
        CASE WHEN failed = 0 THEN 'SUCCESS' ELSE 'PARTIAL_SUCCESS' END::text,
        restored, auth, failed, total - restored - failed;
END;
$$;
