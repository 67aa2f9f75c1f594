-- hera-guard 00: the tables every other script uses. Idempotent: safe to re-run.
--
-- Installed by `guard install`, which sets search_path to "<schema>, pg_temp" for the session
-- first: objects land in the HERA schema, and every function below pins that path with
-- `SET search_path FROM CURRENT`, so a caller's search_path can never redirect them.

-- The plan's backup log, plus what exact replay needs (see 01_emergency_backup.sql):
-- one row per copied table; the two copies of one backup share backup_group.
CREATE TABLE IF NOT EXISTS system_backups (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    backup_type text NOT NULL,
    table_name text NOT NULL,
    record_count bigint,
    created_at timestamp with time zone DEFAULT now()
);
ALTER TABLE system_backups ADD COLUMN IF NOT EXISTS wal_lsn pg_lsn;
ALTER TABLE system_backups ADD COLUMN IF NOT EXISTS backup_group uuid;
ALTER TABLE system_backups ADD COLUMN IF NOT EXISTS source_table text;
-- Rows written by the plan's original function (before hera-guard) have no LSN. '0/0' marks
-- them: they are NOT usable as a replay base snapshot (replay must refuse wal_lsn = '0/0').
UPDATE system_backups SET wal_lsn = '0/0' WHERE wal_lsn IS NULL;
ALTER TABLE system_backups ALTER COLUMN wal_lsn SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS system_backups_table_name_key ON system_backups (table_name);
CREATE INDEX IF NOT EXISTS system_backups_created_at_idx ON system_backups (created_at);

-- The plan's alert table, unchanged (the detector consumer inserts into it too).
CREATE TABLE IF NOT EXISTS critical_system_alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    alert_type text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('INFO', 'WARNING', 'CRITICAL', 'EMERGENCY')),
    message text NOT NULL,
    metadata jsonb DEFAULT '{}',
    created_at timestamp with time zone DEFAULT now(),
    acknowledged_at timestamp with time zone,
    acknowledged_by text
);
CREATE INDEX IF NOT EXISTS critical_system_alerts_created_at_idx
    ON critical_system_alerts (created_at);

-- The plan's health log (created BEFORE the job that writes it: the plan scheduled first).
CREATE TABLE IF NOT EXISTS system_health_log (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    check_time timestamp with time zone NOT NULL,
    check_name text NOT NULL,
    status text NOT NULL,
    severity text NOT NULL,
    details text,
    affected_count bigint,
    resolution_action text,
    created_at timestamp with time zone DEFAULT now()
);

-- Tunables. Kept in a table (not a GUC) on purpose: anyone may SET a GUC, so a GUC threshold
-- would be an unlogged bypass of the guardian; only the guard owner can change this table.
CREATE TABLE IF NOT EXISTS guard_settings (
    key text PRIMARY KEY,
    value text NOT NULL,
    description text NOT NULL
);
INSERT INTO guard_settings (key, value, description) VALUES
    ('mass_change_threshold', '100',
     'a statement (or a transaction, cumulatively) removing more core_relationships rows than '
     'this is blocked unless it sets hera_guard.allow_mass_change'),
    ('mass_change_alert_threshold', '10',
     'removals per statement from which the per-statement alert is EMERGENCY-worthy (WARNING)'),
    ('backup_retention_days', '7', 'emergency backups older than this are dropped'),
    ('backup_keep_min', '4', 'the newest N backups are always kept, whatever their age')
ON CONFLICT (key) DO NOTHING;

-- Rows restore_relationships_from_backup() could not restore, with the reason.
CREATE TABLE IF NOT EXISTS restore_failures (
    id bigserial PRIMARY KEY,
    restore_id uuid NOT NULL,
    backup_table text NOT NULL,
    relationship_id uuid,
    error text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now()
);
