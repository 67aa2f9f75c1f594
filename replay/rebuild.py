"""The pure state rebuild: a table's rows at a point, from a ``changes``-shaped relation.

No I/O beyond the DuckDB connection it is given: the caller decides the window (which
snapshot, which LSN range) after checking coverage. The result is a relation with
``key`` (the primary key values as a canonical JSON array text) and ``row`` (JSON text of
the row in the change-event encoding, see ``capture/event.py``).

Rules, in WAL order ``(commit_lsn, position)``:
- snapshot rows (op ``r``) of the chosen epoch, or the rows of a base snapshot, are the start;
  rows of an online re-read (op ``r`` inside a transaction: they have an xid) are changes;
- ``c``/``u`` set the key's row to ``after``; an UPDATE that changes the primary key also
  removes the old key (taken from ``before``, else ``key``);
- ``d`` removes the key; ``t`` (TRUNCATE) removes every row that came before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb

from replay.tables import TableId, first, quote_duck
from replay.values import key_sql, paths, v1_to_v2_sql

# (commit_lsn, position) as one sortable number; positions are below 2**31.
_ORD = "(commit_lsn::HUGEINT * 4294967296 + position::HUGEINT)"


# An UPDATE's old key comes from ``before``. Parsing every before-image costs as much as the
# rest of the rebuild, so for a one-column key string tests settle the common cases exactly:
# - the row text starts with '{"id":<the new key's JSON>' followed by ',' or '}': its first
#   top-level member is the key column with the same value (the usual case: the key is the
#   first column), read off the first bytes only;
# - in compact JSON the text '"id":' can only be an object key (a quote inside a string is
#   escaped), the top-level key is always there (REPLICA IDENTITY FULL), so if it occurs
#   exactly once it IS the top-level key, and its value is then read off the text.
# Anything else (several occurrences, other spacing or escaping) parses ``before``.
_OLD_KEY = f"coalesce({key_sql('before')}, k)"
_OLD_KEY_FAST = f"""CASE WHEN before IS NULL THEN {_OLD_KEY}
    WHEN starts_with(before, '{{' || $pat || json_extract(k, '$[0]')::VARCHAR || ',')
         OR before = '{{' || $pat || json_extract(k, '$[0]')::VARCHAR || '}}'
    THEN k
    WHEN strpos(before, $pat) > 0
    AND strpos(substr(before, strpos(before, $pat) + 1), $pat) = 0
    AND (contains(before, $pat || json_extract(k, '$[0]')::VARCHAR || ',')
         OR contains(before, $pat || json_extract(k, '$[0]')::VARCHAR || '}}'))
    THEN k ELSE {_OLD_KEY} END"""


@dataclass(frozen=True)
class Window:
    """Which archived changes make up the state at ``upto_lsn`` (inclusive).

    ``snapshot_lsn``: take the snapshot rows recorded at that epoch LSN as the start (None
    with a base snapshot). Stream changes with ``after_lsn < commit_lsn <= upto_lsn`` follow.
    """

    upto_lsn: int
    after_lsn: int
    snapshot_lsn: int | None = None


def pk_paths(columns: list[str]) -> list[str]:
    """JSON paths (``$."col"``) of the primary-key columns, in key order."""
    return paths(columns)


def primary_key_columns(
    conn: duckdb.DuckDBPyConnection, table: TableId, changes: str = "changes"
) -> list[str] | None:
    """The table's primary-key columns as the archive's ``key`` records them (None: no rows)."""
    found = first(conn.execute(
        f"SELECT json_keys(key) FROM {quote_duck(raw_source(conn, changes))} "  # noqa: S608 - own relation name
        "WHERE table_schema = $s AND table_name = $t AND key IS NOT NULL LIMIT 1",
        {"s": table.schema, "t": table.name},
    ))
    return list(found[0]) if found else None


def raw_source(conn: duckdb.DuckDBPyConnection, changes: str = "changes") -> str:
    """``raw_changes`` (the reader's relation before its dedup view) when it exists.

    The reader's ``changes`` view deduplicates on (commit_lsn, position) over every column,
    which costs more than the rebuild itself. The rebuild does not need it: duplicates are
    the same event at the same (commit_lsn, position), so the last event per key and the
    last TRUNCATE come out the same.
    """
    if changes != "changes":
        return changes
    found = conn.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'raw_changes'"
                         ).fetchall()
    return "raw_changes" if found and found[0][0] else changes


def has_duplicate_events(conn: duckdb.DuckDBPyConnection, src: str, where: str,
                         params: dict[str, object]) -> bool:
    """Whether some (commit_lsn, position) occurs twice in the window (a crash window of
    the writer, overlapping segments): only then does the rebuild pay for deduplicating."""
    found = first(conn.execute(
        f"SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT commit_lsn, position "  # noqa: S608 - own relation
        f"FROM {src} WHERE {where})) FROM {src} WHERE {where}", params))
    return bool(found and found[0])


def v1_columns(conn: duckdb.DuckDBPyConnection, src: str, where: str,
               params: dict[str, object]) -> tuple[list[str], list[str]] | None:
    """json/jsonb and bytea columns of the window's schema_version 1 events (None: the
    window holds no v1 event, the rows need no rewriting)."""
    rows = conn.execute(
        f"SELECT DISTINCT types::VARCHAR FROM {src} WHERE {where} "  # noqa: S608 - own relation
        "AND schema_version = 1 AND types IS NOT NULL", params).fetchall()
    if not rows:
        return None
    json_cols: dict[str, None] = {}
    bytea_cols: dict[str, None] = {}
    for (text,) in rows:
        for col, pg_type in json.loads(text).items():
            if pg_type in ("json", "jsonb"):
                json_cols[col] = None
            elif pg_type == "bytea":
                bytea_cols[col] = None
    return list(json_cols), list(bytea_cols)


def window_where(table: TableId, window: Window) -> tuple[str, dict[str, object]]:
    snapshot_filter = "FALSE" if window.snapshot_lsn is None else "commit_lsn = $snap"
    where = f"""table_schema = $s AND table_name = $t AND commit_lsn <= $upto
              AND ((snapshot AND {snapshot_filter})
                   OR ((NOT snapshot OR xid IS NOT NULL) AND commit_lsn > $after))"""
    params: dict[str, object] = {"s": table.schema, "t": table.name,
                                 "upto": window.upto_lsn, "after": window.after_lsn}
    if window.snapshot_lsn is not None:
        params["snap"] = window.snapshot_lsn
    return where, params


def window_v1_columns(conn: duckdb.DuckDBPyConnection, table: TableId, window: Window,
                      changes: str = "changes") -> tuple[list[str], list[str]] | None:
    """``v1_columns`` of the window a rebuild reads."""
    where, params = window_where(table, window)
    return v1_columns(conn, quote_duck(raw_source(conn, changes)), where, params)


def rebuild(
    conn: duckdb.DuckDBPyConnection,
    table: TableId,
    window: Window,
    pk: list[str],
    *,
    changes: str = "changes",
    base: str | None = None,
    base_keyed: bool = False,
) -> duckdb.DuckDBPyRelation:
    """The rows of ``table`` at ``window.upto_lsn``: relation ``(key VARCHAR, row VARCHAR,
    ord HUGEINT)`` (``row``: JSON text in the v2 event encoding; ``ord``: the order
    ``commit_lsn * 2^32 + position`` of the event that wrote the row, 0 for base rows).

    ``base`` names a relation with a ``row JSON`` column (the rows of a base snapshot at
    ``window.after_lsn``); it replaces the archive's snapshot rows. ``base_keyed``: it also
    has the canonical ``key`` (a checkpoint's), so no row is parsed to find its key.

    Two passes, because carrying every row's ``after`` text through the per-key
    aggregation costs several times the rest (strings copied at each update): first the
    last event per key from the narrow columns (key, op, position; ``before`` only for
    updates), then the winning events' ``after`` fetched by (commit_lsn, position).
    """
    src = quote_duck(raw_source(conn, changes))
    where, params = window_where(table, window)
    # Duplicates of a winning event would join twice; keep one (rare: costs a grouping).
    dedup = has_duplicate_events(conn, src, where, params)
    v1 = v1_columns(conn, src, where, params)
    after = "s.after::VARCHAR" if v1 is None or not (v1[0] or v1[1]) else (
        f"CASE WHEN s.schema_version = 1 THEN {v1_to_v2_sql('s.after', *v1)} "
        "ELSE s.after::VARCHAR END")
    base_key = "key" if base_keyed else key_sql("row")
    # Base rows (ord 0) survive exactly when no TRUNCATE is in the window and no event of the
    # window touches their key: an anti-join against the window's keys, so the per-key
    # aggregation covers the window's events only, not every row of the base.
    base_rows = (
        ""
        if base is None
        else f"""UNION ALL
        SELECT b.k, b.row, 0::HUGEINT FROM (
            SELECT {base_key} AS k, row::VARCHAR AS row
            FROM {quote_duck(base)}) b ANTI JOIN win w ON b.k = w.k
        WHERE (SELECT t FROM cut) < 0"""  # noqa: S608
    )
    old_key = _OLD_KEY_FAST if len(pk) == 1 else _OLD_KEY
    stream_rows = f"""
        SELECT w.k, {after} AS row, w.ord
        FROM win w JOIN {{src}} s
          ON s.commit_lsn = (w.ord >> 32)::UBIGINT
         AND s.position = (w.ord & 4294967295)::INTEGER
        WHERE w.present AND w.ord > 0 AND {{where}}"""  # noqa: S608 - own names, bound values
    if dedup:
        stream_rows = f"SELECT k, any_value(row) AS row, any_value(ord) AS ord FROM ({stream_rows}) GROUP BY k"  # noqa: S608, E501
    query = f"""
        WITH ev AS (
            SELECT {_ORD} AS ord, op, {key_sql('key')} AS k,
                   CASE WHEN op = 'u' THEN before::VARCHAR END AS before
            FROM {src}
            WHERE {where}
        ),
        cut AS (SELECT coalesce(max(ord), -1::HUGEINT) AS t FROM ev WHERE op = 't'),
        touch AS (
            SELECT ord, k, (op <> 'd')::INTEGER AS present FROM ev
            WHERE op IN ('c', 'r', 'u', 'd')
            UNION ALL
            SELECT ord, old_k, 0 FROM (
                SELECT ord, k, {old_key} AS old_k FROM (SELECT * FROM ev WHERE op = 'u')
            ) WHERE old_k IS DISTINCT FROM k
        ),
        -- One aggregate: the presence rides in the lowest bit of the event's order.
        win AS (
            SELECT k, m >> 1 AS ord, (m & 1) = 1 AS present FROM (
                SELECT k, max(ord * 2 + present) AS m
                FROM touch, cut WHERE ord > cut.t
                GROUP BY k)
        ),
        rows AS (
            {stream_rows.format(src=src, where=_qualified(where))}
            {base_rows}
        )
        SELECT k AS key, row, ord FROM rows WHERE row IS NOT NULL
    """  # noqa: S608 - relation names are ours; every value is a bound parameter
    params["pk"] = pk_paths(pk)
    if len(pk) == 1:
        params["pat"] = json.dumps(pk[0]) + ":"
    return conn.sql(query, params=params)


def _qualified(where: str) -> str:
    """The window filter on the changes relation aliased ``s``."""
    for col in ("table_schema", "table_name", "commit_lsn", "snapshot"):
        where = where.replace(col, f"s.{col}")
    return where
