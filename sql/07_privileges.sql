-- hera-guard 07: least privilege. Idempotent.
--
-- Who may call what (roles are NOLOGIN groups; GRANT them to login roles):
--   hera_guard_monitor   reads critical_system_alerts, system_backups, system_health_log,
--                        guard_settings; calls check_authentication_system_health() and
--                        validate_smart_code_constraint_impact() (the latter runs with the
--                        caller's rights, so monitors also get SELECT on core_relationships).
--                        Enough for `guard health`, `guard postdeploy`.
--   hera_guard_operator  everything a monitor may, plus emergency_relationship_backup(),
--                        prune_emergency_backups(), record_authentication_health(),
--                        emergency_auth_recovery(), restore_relationships_from_backup(),
--                        reading restore_failures and acknowledging alerts (UPDATE of
--                        acknowledged_at/acknowledged_by only). Enough for every `guard`
--                        command except install.
--   hera_guard_detector  INSERT (and SELECT) on critical_system_alerts: the streaming
--                        detector's alerts.
--   installer            `guard install` needs to own core_relationships (triggers, the
--                        constraint) or be a superuser; it owns every guard object.
-- SECURITY DEFINER is used only where the caller must not hold the underlying rights itself
-- (backup/restore/recovery write the core tables; the health check reads auth.users; the
-- guardian writes alerts for any deleting role). Each such function has a pinned
-- search_path and EXECUTE revoked from PUBLIC (and from Supabase's anon/authenticated, which
-- get EXECUTE through default privileges, not through PUBLIC). The guardian's trigger
-- functions need no EXECUTE grant: triggers fire regardless of it.
-- Creating the roles needs CREATEROLE; without it install warns and only revokes.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['hera_guard_monitor', 'hera_guard_operator',
                             'hera_guard_detector'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN insufficient_privilege THEN
                    RAISE WARNING 'role % not created (needs CREATEROLE); its grants are skipped', r;
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- created concurrently by another install
            END;
        END IF;
    END LOOP;
END;
$$;

DO $$
DECLARE
    definer_functions text[] := ARRAY[
        'guard_lock_down(regclass)',
        'prune_emergency_backups(interval, integer)',
        'emergency_relationship_backup()',
        'guard_evaluate_removal(text, bigint, bigint, text[], jsonb, uuid[])',
        'guard_relationship_delete()',
        'guard_relationship_update()',
        'guard_relationship_truncate()',
        'check_authentication_system_health()',
        'record_authentication_health()',
        'emergency_auth_recovery(text, uuid, text, text[])',
        'restore_relationships_from_backup(text)'];
    guard_tables text[] := ARRAY['system_backups', 'critical_system_alerts',
                                 'system_health_log', 'guard_settings', 'restore_failures'];
    f text;
    t text;
    r text;
    has_monitor boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hera_guard_monitor');
    has_operator boolean := EXISTS (SELECT 1 FROM pg_roles
                                    WHERE rolname = 'hera_guard_operator');
    has_detector boolean := EXISTS (SELECT 1 FROM pg_roles
                                    WHERE rolname = 'hera_guard_detector');
BEGIN
    FOREACH f IN ARRAY definer_functions LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', f, r);
        END LOOP;
    END LOOP;
    FOREACH t IN ARRAY guard_tables LOOP
        EXECUTE format('REVOKE ALL ON TABLE %I FROM PUBLIC', t);
        FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
            EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', t, r);
        END LOOP;
    END LOOP;
    REVOKE ALL ON SEQUENCE guard_blocked_statements FROM PUBLIC;

    IF has_monitor THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO hera_guard_monitor', current_schema());
        GRANT SELECT ON critical_system_alerts, system_backups, system_health_log,
                        guard_settings, core_relationships TO hera_guard_monitor;
        GRANT SELECT ON SEQUENCE guard_blocked_statements TO hera_guard_monitor;
        GRANT EXECUTE ON FUNCTION check_authentication_system_health() TO hera_guard_monitor;
    END IF;
    IF has_operator THEN
        IF has_monitor AND NOT pg_has_role('hera_guard_operator', 'hera_guard_monitor',
                                           'MEMBER') THEN
            BEGIN
                GRANT hera_guard_monitor TO hera_guard_operator;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'hera_guard_operator is not a member of hera_guard_monitor (needs CREATEROLE)';
            END;
        END IF;
        GRANT SELECT ON restore_failures TO hera_guard_operator;
        GRANT UPDATE (acknowledged_at, acknowledged_by) ON critical_system_alerts
            TO hera_guard_operator;
        GRANT EXECUTE ON FUNCTION emergency_relationship_backup(),
                                  prune_emergency_backups(interval, integer),
                                  record_authentication_health(),
                                  emergency_auth_recovery(text, uuid, text, text[]),
                                  restore_relationships_from_backup(text)
            TO hera_guard_operator;
    END IF;
    IF has_detector THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO hera_guard_detector', current_schema());
        GRANT SELECT, INSERT ON critical_system_alerts TO hera_guard_detector;
    END IF;
END;
$$;
