-- hera-guard: what `capture status` needs to tell the lag in seconds exactly.
--
-- The age of the oldest commit capture has not confirmed is read from the WAL itself
-- (pg_walinspect's pg_get_wal_records_info from the slot's confirmed position), never
-- estimated. Creating the extension needs a superuser; without it `capture status` says
-- "unknown" and why. Calling its functions needs superuser or pg_read_server_files.
-- Idempotent.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_walinspect') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_walinspect') THEN
        RAISE NOTICE 'pg_walinspect is not available (PostgreSQL 15+ contrib): capture status '
                     'reports lag_seconds as unknown';
    ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        CREATE EXTENSION pg_walinspect;
    ELSE
        RAISE NOTICE 'pg_walinspect not created (needs a superuser): capture status reports '
                     'lag_seconds as unknown until CREATE EXTENSION pg_walinspect';
    END IF;
END;
$$;
