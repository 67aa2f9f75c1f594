-- hera-guard 01: emergency backup of core_relationships + core_dynamic_data, with the WAL
-- position replay continues from, and a retention policy. Idempotent.
--
-- WHY A LOCK, AND WHICH LSN (the contract `replay --base-snapshot` relies on):
--   Replay restores a backup table, then applies every archived transaction whose
--   commit_lsn > system_backups.wal_lsn. That is exact only if, for the backed-up tables,
--     (a) every transaction with commit_lsn <= wal_lsn is visible in the copy, and
--     (b) every transaction with commit_lsn >  wal_lsn is not.
--   Reading pg_current_wal_lsn() inside the copy's snapshot (the plan's idea, even in one
--   REPEATABLE READ snapshot) does NOT guarantee (a): a backend writes its commit record to
--   WAL first and only afterwards leaves the proc array. A snapshot taken in that window
--   treats the transaction as still running (invisible), yet its commit record lies below any
--   LSN read afterwards -> replay would skip it and its changes would be lost. The same holds
--   for a transaction that commits between the snapshot and the LSN read.
--   Fix: take SHARE ROW EXCLUSIVE on core_relationships and SHARE on core_dynamic_data first.
--   Those modes conflict with every writer's ROW EXCLUSIVE, and a backend releases its locks
--   only after it has left the proc array. Once granted: every earlier writer of these tables
--   is completely committed (visible, commit record already in WAL) or aborted, and no new
--   writer can change them until we commit. Then the copies and the LSN are read; (a) holds.
--   Any later writer commits after our lock is released, i.e. after our own commit record,
--   hence strictly above wal_lsn; (b) holds. Transactions touching only other tables may
--   interleave, which is irrelevant: the LSN is a bound for these two tables only.
--   pg_current_wal_insert_lsn() rather than pg_current_wal_lsn(): the latter is the *write*
--   position, which can lag behind commit records already inserted (synchronous_commit=off),
--   which would make a visible transaction look newer than the backup and be applied twice.
--   Cost: writers of the two tables wait while the copies run (about a second per ~500k rows);
--   lock_timeout bounds how long the backup queues behind a long-running writer (new writers
--   queue behind a waiting lock request, so the wait must be short).
--   Isolation: in READ COMMITTED (pg_cron, `guard backup`) each statement after the LOCK sees
--   the frozen state, so both copies are consistent. In REPEATABLE READ/SERIALIZABLE the
--   snapshot is taken at the transaction's first query, so the caller must take the same locks
--   BEFORE its first query; the function refuses to run if they are not already held.

-- Backup tables hold every relationship: nobody but the owner may read them. On Supabase the
-- default privileges grant new tables in public to anon/authenticated (the REST API), so
-- revoking from PUBLIC is not enough; RLS without policies closes the table to the API too.
CREATE OR REPLACE FUNCTION guard_lock_down(target regclass)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    r text;
BEGIN
    EXECUTE format('REVOKE ALL ON TABLE %s FROM PUBLIC', target);
    FOR r IN SELECT rolname FROM pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', target, r);
    END LOOP;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
END;
$$;

CREATE OR REPLACE FUNCTION prune_emergency_backups(
    retention interval DEFAULT NULL,
    keep_min integer DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
AS $$
DECLARE
    keep_for interval := coalesce(retention, (
        SELECT (value || ' days')::interval FROM guard_settings
        WHERE key = 'backup_retention_days'), interval '7 days');
    keep_n integer := coalesce(keep_min, (
        SELECT value::integer FROM guard_settings WHERE key = 'backup_keep_min'), 4);
    grp record;
    dropped integer := 0;
    t text;
BEGIN
    IF keep_n < 1 THEN
        RAISE EXCEPTION 'keep_min must be at least 1 (got %)', keep_n
            USING ERRCODE = '22023';
    END IF;
    FOR grp IN
        SELECT backup_group
        FROM system_backups
        WHERE backup_group IS NOT NULL
        GROUP BY backup_group
        ORDER BY max(created_at) DESC
        OFFSET keep_n
    LOOP
        IF (SELECT max(created_at) FROM system_backups
            WHERE backup_group = grp.backup_group) >= now() - keep_for THEN
            CONTINUE;
        END IF;
        -- Only tables this function family created: registered AND named like a backup.
        FOR t IN
            SELECT table_name FROM system_backups
            WHERE backup_group = grp.backup_group
              AND table_name ~ '^emergency_(relationships|dynamic_data)_backup_[0-9_]+$'
        LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I', t);
        END LOOP;
        DELETE FROM system_backups WHERE backup_group = grp.backup_group;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;

CREATE OR REPLACE FUNCTION emergency_relationship_backup()
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path FROM CURRENT
SET lock_timeout = '30s'
AS $$
DECLARE
    stamp text := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY_MM_DD_HH24_MI_SS');
    suffix text := '';
    attempt integer := 0;
    backup_table_name text;
    dynamic_backup_table_name text;
    backup_count bigint;
    dynamic_count bigint;
    lsn pg_lsn;
    grp uuid := gen_random_uuid();
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' AND (
        NOT EXISTS (SELECT 1 FROM pg_locks
                    WHERE pid = pg_backend_pid() AND granted
                      AND relation = 'core_relationships'::regclass
                      AND mode IN ('ShareRowExclusiveLock', 'ExclusiveLock',
                                   'AccessExclusiveLock'))
        OR NOT EXISTS (SELECT 1 FROM pg_locks
                       WHERE pid = pg_backend_pid() AND granted
                         AND relation = 'core_dynamic_data'::regclass
                         AND mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                                      'AccessExclusiveLock'))) THEN
        RAISE EXCEPTION 'emergency_relationship_backup() in a % transaction needs the table locks taken before the first query',
            current_setting('transaction_isolation')
            USING ERRCODE = 'HG201',
                  HINT = 'Call it in READ COMMITTED, or start with LOCK TABLE core_relationships IN SHARE ROW EXCLUSIVE MODE; LOCK TABLE core_dynamic_data IN SHARE MODE.';
    END IF;
    -- SHARE ROW EXCLUSIVE is self-conflicting: concurrent backups run one after the other.
    LOCK TABLE core_relationships IN SHARE ROW EXCLUSIVE MODE;
    LOCK TABLE core_dynamic_data IN SHARE MODE;

    -- Two backups in the same second get _1, _2, ... (the plan's names would clash).
    LOOP
        backup_table_name := 'emergency_relationships_backup_' || stamp || suffix;
        dynamic_backup_table_name := 'emergency_dynamic_data_backup_' || stamp || suffix;
        EXIT WHEN to_regclass(quote_ident(backup_table_name)) IS NULL
              AND to_regclass(quote_ident(dynamic_backup_table_name)) IS NULL
              AND NOT EXISTS (SELECT 1 FROM system_backups
                              WHERE table_name IN (backup_table_name,
                                                   dynamic_backup_table_name));
        attempt := attempt + 1;
        suffix := '_' || attempt;
    END LOOP;

    EXECUTE format('CREATE TABLE %I AS SELECT * FROM core_relationships', backup_table_name);
    GET DIAGNOSTICS backup_count = ROW_COUNT;
    EXECUTE format('CREATE TABLE %I AS SELECT * FROM core_dynamic_data',
                   dynamic_backup_table_name);
    GET DIAGNOSTICS dynamic_count = ROW_COUNT;
    PERFORM guard_lock_down(quote_ident(backup_table_name)::regclass);
    PERFORM guard_lock_down(quote_ident(dynamic_backup_table_name)::regclass);
    -- Read while the locks are held, after both copies (see the header for why).
    lsn := pg_current_wal_insert_lsn();

    INSERT INTO system_backups (backup_type, table_name, record_count, created_at, wal_lsn,
                                backup_group, source_table)
    VALUES ('EMERGENCY_RELATIONSHIPS', backup_table_name, backup_count, now(), lsn, grp,
            'core_relationships'),
           ('EMERGENCY_DYNAMIC_DATA', dynamic_backup_table_name, dynamic_count, now(), lsn, grp,
            'core_dynamic_data');

    PERFORM prune_emergency_backups();

    RETURN format('Emergency backup created: %s (%s relationships)', backup_table_name,
                  backup_count);
END;
$$;

COMMENT ON FUNCTION emergency_relationship_backup() IS
    'Consistent copy of core_relationships and core_dynamic_data, logged in system_backups '
    'with the WAL insert LSN replay continues from (commit_lsn > wal_lsn). Role: operator.';
