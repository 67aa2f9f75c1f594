"""Exact values at the Kafka-event level, for both plugins: every value in ``after`` /
``before`` / ``key`` is PostgreSQL's own text of it (its output function under capture's
SESSION_OPTIONS; ``col::text`` except where a cast differs, as inet's adds the netmask) in the
event encoding, and both plugins give the same event bytes (apart from ``ts_ms``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import psycopg
import pytest

from capture.decoding.choice import wal2json_exact
from capture.encoding import SESSION_OPTIONS, from_pg_text
from capture.event import ChangeEvent, Op
from capture.snapshot import output_text
from devstack.broker import Broker
from tests.capture_fixtures import PLUGINS, read_topic, running_capture, wait_for_events
from tests.conftest import HeraDB

TABLE = "exact_probe"
SPECIAL = frozenset({"NaN", "Infinity", "-Infinity"})
FLOATISH = frozenset({"numeric", "real", "double precision"})

SCHEMA = f"""
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE {TABLE} (
    id int, k text, n numeric, f4 real, f8 double precision, jb jsonb, j json, big bigint,
    ts timestamptz, b bytea, a text[], iv interval, ip inet, m mood, d posint, doc text,
    flag boolean, s smallint,
    PRIMARY KEY (id, k));
"""

# (id, k, n, f4, f8, jb, j, big, ts, b, a, iv, ip, m, d)
ROWS: list[tuple[object, ...]] = [
    (1, "nan", "NaN", "NaN", "NaN", '{"a": 1}', '{"a":1}', "1", "2031-02-03 04:05:06.789012+05:30",
     "\\x00ff10", ["a\"b", None, "c\\d", "x,y", ""], "1 year 2 mons 3 days 04:05:06.789",
     "10.0.0.1/8", "happy", 5),
    (2, "inf", "Infinity", "Infinity", "-Infinity",
     '{"a": 123456789012345678901234567890, "b": 1.50, "c": [[1, [2, []]], []], "u": "é✓"}',
     '{"b" : 1,  "a": 2, "a": 3}', "9223372036854775807", "infinity", "\\x", ["{}", "NULL"],
     "-1 day", "::1", "sad", 1),
    (3, "neg", "-Infinity", "-0", "-0", "null", "null", "-9223372036854775807", "-infinity",
     "\\x5c", [], "00:00:00.000001", "192.168.0.1", "happy", 2147483647),
    (4, "digits", "1234567890123456789012345678901234567890.0123456789012345678901234567890",
     "1.5", "1e308", '[1e-7, 0.1, 1E+2, -0]', '  [1e-400,  "x" ] ', "0",
     "1999-12-31 23:59:59.999999+00", "\\xdeadbeef", ["é", " spaced "], "1 mon", "10.1.2.3",
     "sad", 3),
]


def _insert(conn: psycopg.Connection[tuple[object, ...]], rows: Sequence[tuple[object, ...]],
            big_doc: str | None = None) -> None:
    for r in rows:
        conn.execute(
            f"INSERT INTO {TABLE} (id, k, n, f4, f8, jb, j, big, ts, b, a, iv, ip, m, d, doc, "  # noqa: S608
            "flag, s) VALUES (%s, %s, %s::numeric, %s::real, %s::float8, %s::jsonb, %s::json, "
            "%s::bigint, %s::timestamptz, %s::bytea, %s::text[], %s::interval, %s::inet, "
            "%s::mood, %s::posint, %s, %s, %s)", (*r, big_doc, int(str(r[0])) % 2 == 0,
                                                 -int(str(r[0]))))


def _pg_rows(dsn: str) -> dict[tuple[object, ...], dict[str, object]]:
    """PostgreSQL's own text of every value, in the event encoding, keyed by primary key."""
    with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
        cols = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
            "attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (TABLE,)).fetchall()
        output_text(conn)
        select = ", ".join(f'"{c}"' for c, _ in cols)
        rows = conn.execute(f"SELECT {select} FROM {TABLE}").fetchall()  # noqa: S608
    out: dict[tuple[object, ...], dict[str, object]] = {}
    for values in rows:
        row: dict[str, object] = {str(c): from_pg_text(str(t), None if v is None else str(v))
               for (c, t), v in zip(cols, values, strict=True)}
        out[(row["id"], row["k"])] = row
    return out


def _expected(row: dict[str, object], types: dict[str, str], exact_special: bool
              ) -> dict[str, object]:
    """wal2json < 2.6's one documented exception: NaN/±Infinity of numeric, real and double
    precision arrive as null. Everything else, and everything with pgoutput, is exact."""
    if exact_special:
        return row
    return {c: None if types[c] in FLOATISH and v in SPECIAL else v for c, v in row.items()}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_value_is_postgresqls_own_text_in_snapshot_insert_update_and_delete(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        plugin: str) -> None:
    with empty_db.connect() as conn:
        conn.execute(SCHEMA)
        _insert(conn, ROWS[:2])  # read by the snapshot
        # 300 kB that does not compress: stored out of line (TOAST).
        (big_doc,) = conn.execute("SELECT string_agg(md5(g::text), '') FROM "
                                  "generate_series(1, 9400) g").fetchone() or ("",)
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=(f"public.{TABLE}",), plugin=plugin) as svc, \
            empty_db.connect() as conn:
        _insert(conn, ROWS[2:], big_doc=str(big_doc))
        inserted = _pg_rows(empty_db.dsn)
        # The TOASTed doc is left unchanged by this UPDATE: it must still be in `after`.
        conn.execute(f"UPDATE {TABLE} SET m = 'sad', flag = NOT flag WHERE id IN (3, 4)")  # noqa: S608
        conn.execute(f"UPDATE {TABLE} SET big = big - 1, s = 7 WHERE id = 1")  # noqa: S608
        updated = _pg_rows(empty_db.dsn)
        conn.execute(f"DELETE FROM {TABLE} WHERE id = 2")  # noqa: S608
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op == Op.DELETE for e in evs), table=TABLE)
        exact_special = svc.dec.caps.exact_special_values
    with empty_db.connect() as conn:
        server_wal2json_exact, _why = wal2json_exact(conn)
    assert exact_special == (plugin == "pgoutput" or server_wal2json_exact)
    by_op: dict[Op, list[ChangeEvent]] = {}
    for ev in events:
        by_op.setdefault(ev.op, []).append(ev)
    assert {op: len(evs) for op, evs in by_op.items()} == {
        Op.READ: 2, Op.CREATE: 2, Op.UPDATE: 3, Op.DELETE: 1}
    for ev in events:
        assert ev.types is not None
        row = ev.after if ev.after is not None else ev.before
        assert row is not None and ev.key is not None
        pk = (row["id"], row["k"])
        if ev.op == Op.READ:  # the snapshot reads col::text: exact whatever the plugin
            assert ev.after == inserted[pk]
        elif ev.op == Op.CREATE:
            assert ev.after == _expected(inserted[pk], ev.types, exact_special)
        elif ev.op == Op.UPDATE:
            assert ev.before == _expected(inserted[pk], ev.types, exact_special)
            assert ev.after == _expected(updated[pk], ev.types, exact_special)
        else:
            assert ev.before == _expected(updated[pk], ev.types, exact_special)
        assert ev.key == {"id": pk[0], "k": pk[1]}
    toasted = [e for e in by_op[Op.UPDATE] if e.after is not None and e.after["doc"]]
    assert len(toasted) == 2 and all(e.after and e.after["doc"] == big_doc for e in toasted)


# capture's clock and the topic prefix (different per capture by construction) blanked out.
_VARYING = re.compile(rb'"ts_ms":\d+,"source":\{"version":"[^"]*","connector":"[^"]*",'
                      rb'"name":"[^"]*"')


def _stream_events(bootstrap: str, prefix: str) -> list[bytes]:
    out = []
    for rec in read_topic(bootstrap, f"{prefix}.public.{TABLE}"):
        doc = json.loads(rec.value)
        if doc["op"] == "r":
            continue
        blanked, n = _VARYING.subn(b"-", rec.value)
        assert n == 1
        out.append(((doc["commit_lsn"], doc["position"]), blanked))
    return [b for _, b in sorted(out)]


def test_both_plugins_give_identical_events_for_one_workload(
        empty_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str) -> None:
    # No NaN/Infinity: wal2json 2.5 prints them as null (its known exception, tested above).
    exactly_common = [(3, "neg", "-0.000", *ROWS[2][3:]), ROWS[3]]
    with empty_db.connect() as conn:
        conn.execute(SCHEMA)
        (big_doc,) = conn.execute("SELECT string_agg(md5(g::text), '') FROM "
                                  "generate_series(1, 9400) g").fetchone() or ("",)
    common = {"tables": (f"public.{TABLE}",)}
    with running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix + "w",
                         slot_name + "w", plugin="wal2json", **common), \
            running_capture(empty_db.dsn, broker.bootstrap_servers, topic_prefix + "p",
                            slot_name + "p", plugin="pgoutput", **common), \
            empty_db.connect() as conn:
        _insert(conn, exactly_common, big_doc=str(big_doc))
        conn.execute(f"UPDATE {TABLE} SET m = 'sad', flag = NOT flag")  # noqa: S608
        conn.execute(f"DELETE FROM {TABLE} WHERE id = 3")  # noqa: S608
        conn.execute(f"TRUNCATE {TABLE}")
        for prefix in (topic_prefix + "w", topic_prefix + "p"):
            wait_for_events(broker.bootstrap_servers, prefix,
                            lambda evs: any(e.op == Op.TRUNCATE for e in evs), table=TABLE)
    wal2json = _stream_events(broker.bootstrap_servers, topic_prefix + "w")
    pgoutput = _stream_events(broker.bootstrap_servers, topic_prefix + "p")
    assert len(wal2json) == 6
    for a, b in zip(wal2json, pgoutput, strict=True):
        assert a == b
