"""The SQL of the archive's views and table macros (``reader.connect_history``).

The reader defines four raw relations first (``raw_changes``, ``raw_transactions``,
``raw_markers``, ``raw_schema_changes``: the rows of each kind as stored, LSNs cast back to
UBIGINT) and then runs ``VIEW_SQL`` over them. Every view deduplicates: changes and schema
changes on (commit_lsn, position), transactions on commit_lsn, markers on their whole
content. The writer already drops the duplicates it sees; the views are the safety net for
any table written otherwise (a migration, another tool).
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb

from consumers.archive.segments import ADDED_COLUMNS, SCHEMAS


def sql_string(value: str) -> str:
    """A SQL string literal: DuckDB table functions and views take no bind parameters."""
    return "'" + value.replace("'", "''") + "'"


_DUCK_TYPES = {"string": "VARCHAR", "uint64": "UBIGINT", "int32": "INTEGER", "int64": "BIGINT",
               "bool": "BOOLEAN", "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
               "list<item: string>": "VARCHAR[]"}


def duck_type(kind: str, column: str) -> str:
    return _DUCK_TYPES[str(SCHEMAS[kind].field(column).type)]


def raw_relation_sql(name: str, kind: str, source: str | None,
                     present: Collection[str] | None = None) -> str:
    """``CREATE VIEW name`` over ``source`` (a FROM clause made of our own, escaped literals),
    with the kind's columns in their reader types; no source: a typed, empty relation.
    ``present``: the source's columns, when it may lack some added since (``ADDED_COLUMNS``:
    those read NULL)."""
    cols = SCHEMAS[kind].names
    if source is None:
        empty = ", ".join(f"NULL::{duck_type(kind, c)} AS {c}" for c in cols)
        return f"CREATE OR REPLACE VIEW {name} AS SELECT {empty} WHERE false"
    casts = ", ".join(
        f"CAST({c} AS {duck_type(kind, c)}) AS {c}"
        if present is None or c in present or c not in ADDED_COLUMNS
        else f"NULL::{duck_type(kind, c)} AS {c}" for c in cols)
    return f"CREATE OR REPLACE VIEW {name} AS SELECT {casts} FROM {source}"  # noqa: S608 - own literals


def define_raw(con: duckdb.DuckDBPyConnection, name: str, kind: str,
               source: str | None) -> None:
    """``raw_relation_sql`` over Parquet ``source``, its columns read from the files: files
    written before a column was added (``ADDED_COLUMNS``) lack it, and a set of files that
    all predate it would otherwise fail to bind the column instead of reading NULL."""
    present = None
    if source is not None:
        described = con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()  # noqa: S608 - own literals
        present = {str(r[0]) for r in described}
    con.execute(raw_relation_sql(name, kind, source, present))


def parquet_source(files: list[str]) -> str | None:
    if not files:
        return None
    listed = ", ".join(sql_string(f) for f in files)
    return f"read_parquet([{listed}], union_by_name = true)"


VIEW_SQL = r"""
CREATE OR REPLACE MACRO lsn_text(lsn) AS
    printf('%X/%X', (lsn >> 32)::UBIGINT, (lsn & 4294967295)::UBIGINT);

CREATE OR REPLACE VIEW changes AS
SELECT table_schema, table_name, op, commit_lsn, position, xid, commit_ts,
       CAST(key AS JSON) AS key, CAST(before AS JSON) AS before, CAST(after AS JSON) AS after,
       CAST(types AS JSON) AS types, snapshot, event_ts, schema_version,
       -- a row of capture's online re-read: why the table was re-read (NULL otherwise)
       reread
FROM (SELECT DISTINCT ON (commit_lsn, position) * FROM raw_changes);

-- The author (capture.event.Author, sql/10_author.sql): NULL columns for a transaction
-- without one (written before the author existed, or its message missing or refused).
-- context is JSON: the application's object, or its text as a JSON string.
CREATE OR REPLACE VIEW transactions AS
SELECT xid, commit_lsn, commit_ts, event_count,
       CAST(data_collections AS JSON) AS data_collections,
       author ->> 'db_user' AS db_user, author ->> 'session_user' AS session_user,
       author ->> 'application_name' AS application_name,
       author ->> 'client_addr' AS client_addr,
       CAST(author ->> 'client_port' AS INTEGER) AS client_port,
       CAST(author ->> 'backend_pid' AS INTEGER) AS backend_pid,
       author ->> 'actor' AS actor,
       CASE author ->> 'context_format'
           WHEN 'json' THEN CAST(author ->> 'context' AS JSON)
           WHEN 'text' THEN to_json(author ->> 'context') END AS context,
       CASE WHEN author IS NOT NULL
            THEN coalesce(CAST(author -> 'capped' AS VARCHAR[]), []) END AS author_capped
FROM (SELECT DISTINCT ON (commit_lsn) * FROM raw_transactions);

CREATE OR REPLACE VIEW markers AS
SELECT DISTINCT status, slot, db, epoch_lsn, lsn, ts, tables, system_identifier, plugin,
       CAST(definitions AS JSON) AS definitions, commit_ts, CAST(rereads AS JSON) AS rereads
FROM raw_markers;

-- Every online re-read that ended, one row each (from its REREAD_END marker): the table, why,
-- where it was requested and where it ended (from there every row of the table is known).
CREATE OR REPLACE VIEW rereads AS
SELECT DISTINCT m.slot, m.epoch_lsn, r."table" AS "table", r.reason,
       r.requested_lsn, lsn_text(r.requested_lsn) AS requested, m.lsn AS end_lsn,
       lsn_text(m.lsn) AS ended, r.chunks, r."rows" AS "rows", r.dropped AS rows_superseded,
       make_timestamptz(r.started_ms * 1000) AS started,
       make_timestamptz(r.done_ms * 1000) AS finished
FROM markers m, unnest(from_json(m.rereads, '[{"table": "VARCHAR", "reason": "VARCHAR",
        "requested_lsn": "UBIGINT", "started_ms": "BIGINT", "chunks": "BIGINT",
        "rows": "BIGINT", "dropped": "BIGINT", "done_lsn": "UBIGINT",
        "done_ms": "BIGINT"}]')) AS u(r)
WHERE m.status = 'REREAD_END' AND r.done_lsn = m.lsn
  AND list_contains(json_keys(m.definitions), r."table");

CREATE OR REPLACE VIEW schema_changes AS
SELECT table_schema, table_name, commit_lsn, position, xid, commit_ts, lsn,
       CAST(columns AS JSON) AS columns, command_tag, ddl, recorded, schema_version
FROM (SELECT DISTINCT ON (commit_lsn, position) * FROM raw_schema_changes);

-- For analysts: readable names, the LSN as PostgreSQL prints it, WAL order.
CREATE OR REPLACE VIEW change_log AS
SELECT commit_ts, lsn_text(commit_lsn) AS lsn, xid,
       table_schema || '.' || table_name AS "table",
       CASE op WHEN 'c' THEN 'insert' WHEN 'u' THEN 'update' WHEN 'd' THEN 'delete'
               -- op r inside a transaction: a row of capture's online re-read
               WHEN 'r' THEN CASE WHEN xid IS NULL THEN 'snapshot' ELSE 're-read' END
               WHEN 't' THEN 'truncate' END AS operation,
       key, before, after, commit_lsn, position,
       t.db_user, t.session_user, t.application_name, t.client_addr, t.actor, t.context,
       reread AS reread_reason
FROM changes LEFT JOIN (
    SELECT commit_lsn AS t_lsn, db_user, session_user, application_name, client_addr, actor,
           context
    FROM transactions) t ON t.t_lsn = changes.commit_lsn;

-- One row per transaction (the snapshot of an epoch counts as one, xid NULL):
-- counts per op, and per table and op as {"schema.table": {"c": n, "d": m}}.
CREATE OR REPLACE VIEW transaction_summary AS
WITH per_op AS (
    SELECT commit_lsn, xid, table_schema || '.' || table_name AS tbl, op,
           count(*) AS n, min(commit_ts) AS commit_ts
    FROM changes GROUP BY ALL
), per_table AS (
    SELECT commit_lsn, xid, tbl, json_group_object(op, n) AS ops, sum(n) AS n,
           sum(n) FILTER (WHERE op = 'c') AS c, sum(n) FILTER (WHERE op = 'u') AS u,
           sum(n) FILTER (WHERE op = 'd') AS d, sum(n) FILTER (WHERE op = 't') AS t,
           -- op r: the initial snapshot's rows (no xid) or an online re-read's (in a txn)
           sum(n) FILTER (WHERE op = 'r' AND xid IS NULL) AS r,
           sum(n) FILTER (WHERE op = 'r' AND xid IS NOT NULL) AS rr,
           min(commit_ts) AS commit_ts
    FROM per_op GROUP BY ALL
)
SELECT xid, lsn_text(commit_lsn) AS lsn, min(commit_ts) AS commit_ts,
       sum(n)::BIGINT AS changes,
       coalesce(sum(c), 0)::BIGINT AS inserts, coalesce(sum(u), 0)::BIGINT AS updates,
       coalesce(sum(d), 0)::BIGINT AS deletes, coalesce(sum(t), 0)::BIGINT AS truncates,
       coalesce(sum(r), 0)::BIGINT AS snapshot_rows,
       json_group_object(tbl, ops) AS per_table, commit_lsn,
       any_value(t.db_user) AS db_user, any_value(t.session_user) AS session_user,
       any_value(t.application_name) AS application_name,
       any_value(t.client_addr) AS client_addr, any_value(t.actor) AS actor,
       any_value(t.context) AS context, coalesce(sum(rr), 0)::BIGINT AS reread_rows
FROM per_table LEFT JOIN (
    SELECT commit_lsn AS t_lsn, db_user, session_user, application_name, client_addr, actor,
           context
    FROM transactions) t ON t.t_lsn = per_table.commit_lsn
GROUP BY commit_lsn, xid;

-- Every change of one row of a table (by its "id" primary key), and the table's TRUNCATEs.
CREATE OR REPLACE MACRO row_timeline(tbl, row_id) AS TABLE
SELECT commit_ts, lsn_text(commit_lsn) AS lsn, xid, op, before, after, commit_lsn, position,
       reread
FROM changes
WHERE (table_schema || '.' || table_name = tbl OR table_name = tbl)
  AND (key ->> 'id' = CAST(row_id AS VARCHAR) OR op = 't')
ORDER BY commit_lsn, position;

CREATE OR REPLACE MACRO relationship_timeline(rel_id) AS TABLE
SELECT * FROM row_timeline('public.core_relationships', rel_id);

-- The rows of a table as of a point, by replay's rebuild rules (replay/rebuild.py; a DuckDB
-- macro cannot call it, so they are restated here): in WAL order, c/r/u set the key's row,
-- d removes it, an UPDATE that changes the primary key also removes the OLD key (from
-- ``before``), and a TRUNCATE removes every row before it. Keys compare as the list of their
-- column values' JSON texts, so the new key and one read off ``before`` compare exactly.
-- Points inside a gap between capture epochs are not detected here; `replay` checks coverage.
CREATE OR REPLACE MACRO _key_of(names, doc) AS
    CAST(list_transform(names, lambda x: json_extract(doc, '$."' || x || '"')::VARCHAR)
         AS VARCHAR);

CREATE OR REPLACE MACRO _table_until(tbl, max_lsn, max_ts) AS TABLE
WITH c AS (
    SELECT *, json_keys(key) AS names FROM changes
    WHERE (table_schema || '.' || table_name = tbl OR table_name = tbl)
      AND commit_lsn <= max_lsn AND commit_ts <= max_ts
), cut AS (
    SELECT coalesce(max(commit_lsn::HUGEINT * 4294967296 + position), -1::HUGEINT) AS t
    FROM c WHERE op = 't'
), touch AS (
    SELECT _key_of(names, key) AS k, commit_lsn, position, op <> 'd' AS present, key,
           after, op, commit_ts
    FROM c WHERE op IN ('c', 'r', 'u', 'd')
    UNION ALL
    SELECT k_old, commit_lsn, position, false, NULL, NULL, op, commit_ts FROM (
        SELECT _key_of(names, before) AS k_old, _key_of(names, key) AS k_new, *
        FROM c WHERE op = 'u' AND before IS NOT NULL)
    WHERE k_old IS DISTINCT FROM k_new
), last AS (
    SELECT DISTINCT ON (k) * FROM touch, cut
    WHERE commit_lsn::HUGEINT * 4294967296 + position > cut.t
    ORDER BY k, commit_lsn DESC, position DESC
)
SELECT key, after AS row, op AS last_op, commit_ts, lsn_text(commit_lsn) AS lsn, commit_lsn
FROM last WHERE present;

CREATE OR REPLACE MACRO table_as_of_lsn(tbl, at_lsn) AS TABLE
SELECT * FROM _table_until(tbl, CAST(at_lsn AS UBIGINT), 'infinity'::TIMESTAMPTZ);

CREATE OR REPLACE MACRO table_as_of(tbl, at_ts) AS TABLE
SELECT * FROM _table_until(tbl, 18446744073709551615::UBIGINT, CAST(at_ts AS TIMESTAMPTZ));
"""
