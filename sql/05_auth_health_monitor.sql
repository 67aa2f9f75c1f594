-- hera-guard 05: authentication health monitor (the plan's four checks). Idempotent.
--
-- Users come from Supabase's auth.users when that table exists, else from the schema's
-- app_users (the sample's stand-in). SECURITY DEFINER because monitors must not need read
-- access to auth.users itself; it only returns counts.
-- Fixed from the plan: its pg_cron command "INSERT INTO system_health_log SELECT now(), *
-- FROM check_authentication_system_health()" put now() into the uuid id column and failed
-- every 15 minutes; record_authentication_health() names its columns. The 15-minute
-- schedule itself is created by `guard install` (see guard/schedule.py for where pg_cron lives).

CREATE OR REPLACE FUNCTION guard_users_table()
RETURNS regclass
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $$ SELECT coalesce(to_regclass('auth.users'), to_regclass('app_users')) $$;

CREATE OR REPLACE FUNCTION check_authentication_system_health()
RETURNS TABLE(
    check_name text,
    status text,
    severity text,
    details text,
    affected_count bigint,
    resolution_action text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
#variable_conflict use_column
DECLARE
    users_table regclass := guard_users_table();
    n bigint;
BEGIN
    IF users_table IS NULL THEN
        RAISE EXCEPTION 'no users table: neither auth.users nor app_users exists'
            USING ERRCODE = 'HG120';
    END IF;

    -- Check 1: users without an active organization membership
    EXECUTE format(
        'SELECT count(*) FROM %s au WHERE NOT EXISTS ('
        ' SELECT 1 FROM core_relationships cr WHERE cr.from_entity_id = au.id::text'
        ' AND cr.relationship_type = %L AND cr.is_active)', users_table, 'USER_MEMBER_OF_ORG')
        INTO n;
    RETURN QUERY SELECT
        'missing_org_memberships'::text,
        CASE WHEN n = 0 THEN 'HEALTHY' ELSE 'CRITICAL' END,
        CASE WHEN n = 0 THEN 'INFO' ELSE 'CRITICAL' END,
        format('%s users without organization membership', n),
        n,
        'Use emergency_auth_recovery() function to restore access'::text;

    -- Check 2: inactive USER_MEMBER_OF_ORG relationships
    SELECT count(*) INTO n FROM core_relationships
    WHERE relationship_type = 'USER_MEMBER_OF_ORG' AND NOT is_active;
    RETURN QUERY SELECT
        'inactive_auth_relationships'::text,
        CASE WHEN n = 0 THEN 'HEALTHY' ELSE 'WARNING' END,
        CASE WHEN n = 0 THEN 'INFO' ELSE 'WARNING' END,
        format('%s inactive USER_MEMBER_OF_ORG relationships', n),
        n,
        'Activate relationships: UPDATE core_relationships SET is_active = true WHERE relationship_type = ''USER_MEMBER_OF_ORG'''::text;

    -- Check 3: relationships whose smart code matches none of the v3 patterns
    EXECUTE format('SELECT count(*) FROM core_relationships '
                   'WHERE smart_code IS NOT NULL AND NOT (%s)', smart_code_v3_expression())
        INTO n;
    RETURN QUERY SELECT
        'invalid_smart_codes'::text,
        CASE WHEN n = 0 THEN 'HEALTHY' ELSE 'WARNING' END,
        CASE WHEN n = 0 THEN 'INFO' ELSE 'WARNING' END,
        format('%s relationships with invalid smart codes', n),
        n,
        'Update smart codes to comply with current constraints'::text;

    -- Check 4: active memberships without role dynamic data
    SELECT count(*) INTO n FROM core_relationships cr
    WHERE cr.relationship_type = 'USER_MEMBER_OF_ORG' AND cr.is_active
      AND NOT EXISTS (SELECT 1 FROM core_dynamic_data dd
                      WHERE dd.entity_id = cr.from_entity_id
                        AND dd.organization_id = cr.organization_id
                        AND dd.field_name IN ('role', 'salon_role'));
    RETURN QUERY SELECT
        'missing_user_roles'::text,
        CASE WHEN n = 0 THEN 'HEALTHY' ELSE 'WARNING' END,
        CASE WHEN n = 0 THEN 'INFO' ELSE 'WARNING' END,
        format('%s active users without role data', n),
        n,
        'Create role dynamic data for affected users'::text;
END;
$$;

CREATE OR REPLACE FUNCTION record_authentication_health()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    written bigint;
BEGIN
    INSERT INTO system_health_log (check_time, check_name, status, severity, details,
                                   affected_count, resolution_action)
    SELECT now(), h.check_name, h.status, h.severity, h.details, h.affected_count,
           h.resolution_action
    FROM check_authentication_system_health() AS h;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END;
$$;
