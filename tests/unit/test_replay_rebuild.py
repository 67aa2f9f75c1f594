"""The pure state rebuild over a ``changes`` relation built in memory."""

from __future__ import annotations

import json
from typing import Any

from replay.rebuild import Window, rebuild
from replay.tables import TableId
from tests.replay_fixtures import REL_TYPES, History, memory_history

TABLE = TableId("public", "rel")


def row(i: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"00000000-0000-0000-0000-{i:012d}", "org": "10000000-0000-0000-0000-000000000001",
        "kind": "USER_MEMBER_OF_ORG", "is_active": True, "n": i, "big": str(10**12 + i),
        "amount": "1.50", "data": '{"role": "staff", "z": [1, 2]}', "tags": "{auth,\"a b\"}",
        "at": "2025-03-01 12:00:00.123456+00"}
    base.update(over)
    return base


def state(h: History, upto: int, after: int | None = None) -> dict[str, dict[str, Any]]:
    conn = memory_history(h)
    rel = rebuild(conn, TABLE, Window(upto_lsn=upto, after_lsn=after or h.epoch_lsn,
                                      snapshot_lsn=h.epoch_lsn), ["id"])
    return {json.loads(k)[0]: json.loads(r) for k, r, _ in rel.fetchall()}


def test_snapshot_rows_are_the_state_at_the_epoch() -> None:
    h = History()
    h.snapshot([row(1), row(2)])
    assert state(h, h.epoch_lsn) == {row(1)["id"]: row(1), row(2)["id"]: row(2)}


def test_changes_apply_in_wal_order_up_to_the_point_inclusive() -> None:
    h = History()
    h.snapshot([row(1), row(2)])
    _, l1, _ = h.commit([("c", None, row(3)), ("u", row(1), row(1, is_active=False))])
    _, l2, _ = h.commit([("d", row(2), None), ("u", row(3), row(3, n=33))])
    at1 = state(h, l1)
    assert at1 == {row(1)["id"]: row(1, is_active=False), row(2)["id"]: row(2),
                   row(3)["id"]: row(3)}
    assert state(h, l2 - 1) == at1
    assert state(h, l2) == {row(1)["id"]: row(1, is_active=False),
                            row(3)["id"]: row(3, n=33)}


def test_an_update_of_the_primary_key_removes_the_old_key() -> None:
    h = History()
    h.snapshot([row(1)])
    moved = row(9, n=1)
    _, lsn, _ = h.commit([("u", row(1), moved)])
    assert state(h, lsn) == {moved["id"]: moved}


def test_a_key_change_is_seen_when_the_new_key_also_appears_inside_the_old_row() -> None:
    h = History()
    inner = {"id": row(9)["id"]}  # a nested "id" equal to the new key: not the row's key
    h.snapshot([row(1, data=inner), row(2)])
    moved = row(9, data=inner)
    _, lsn, _ = h.commit([("u", row(1, data=inner), moved), ("u", row(2), row(2, n=5))])
    assert state(h, lsn) == {moved["id"]: moved, row(2)["id"]: row(2, n=5)}


def test_truncate_empties_the_table_at_its_lsn() -> None:
    h = History()
    h.snapshot([row(1), row(2)])
    _, lt, _ = h.commit([("c", None, row(3)), ("t", None, None), ("c", None, row(4))])
    _, l2, _ = h.commit([("c", None, row(5))])
    assert state(h, lt) == {row(4)["id"]: row(4)}
    assert state(h, l2) == {row(4)["id"]: row(4), row(5)["id"]: row(5)}


def test_a_deleted_then_reinserted_key_is_present_with_its_new_row() -> None:
    h = History()
    h.snapshot([row(1)])
    h.commit([("d", row(1), None)])
    _, lsn, _ = h.commit([("c", None, row(1, n=100))])
    assert state(h, lsn) == {row(1)["id"]: row(1, n=100)}


def test_values_keep_their_exact_encoding() -> None:
    h = History()
    h.snapshot([row(1, amount="1.500", big="9223372036854775807", data='{"b": 1, "a": null}')])
    (got,) = state(h, h.epoch_lsn).values()
    assert got["amount"] == "1.500"
    assert got["big"] == "9223372036854775807"
    assert got["data"] == '{"b": 1, "a": null}'


def test_schema_version_1_rows_come_back_in_the_version_2_encoding() -> None:
    h = History(version=1, types={**REL_TYPES, "raw": "bytea"})
    h.snapshot([row(1, data={"b": 1, "a": [None, "x"]}, raw="00ff10"),
                row(2, data=None, raw="\\x0a")])
    h.version = 2
    _, lsn, _ = h.commit([("c", None, row(3, data='{"q": 1.50}', raw="\\x00"))])
    got = state(h, lsn)
    assert got[row(1)["id"]]["data"] == '{"b":1,"a":[null,"x"]}'
    assert got[row(1)["id"]]["raw"] == "\\x00ff10"
    assert got[row(2)["id"]]["data"] is None and got[row(2)["id"]]["raw"] == "\\x0a"
    assert got[row(3)["id"]]["data"] == '{"q": 1.50}' and got[row(3)["id"]]["raw"] == "\\x00"


def test_an_event_archived_twice_yields_each_row_once() -> None:
    h = History()
    h.snapshot([row(1), row(2)])
    h.commit([("u", row(1), row(1, n=11)), ("c", None, row(3))])
    _, lsn, _ = h.commit([("d", row(2), None), ("u", row(3), row(9, n=3))])
    conn = memory_history(h)
    # A writer crash window can leave the same events in two segments.
    conn.execute("INSERT INTO changes SELECT * FROM changes")
    rel = rebuild(conn, TABLE, Window(upto_lsn=lsn, after_lsn=h.epoch_lsn,
                                      snapshot_lsn=h.epoch_lsn), ["id"])
    rows = rel.fetchall()
    assert len(rows) == 2
    assert {json.loads(k)[0]: json.loads(r) for k, r, _ in rows} == {
        row(1)["id"]: row(1, n=11), row(9)["id"]: row(9, n=3)}


def test_key_changes_are_seen_whether_or_not_the_key_is_the_first_column() -> None:
    h = History()
    first = row(1)
    later = {"a": 0, **row(2)}  # the key column is not the first member of the row text
    h.snapshot([first, later])
    _, lsn, _ = h.commit([("u", first, row(7)), ("u", later, {"a": 0, **row(8)}),
                          ("u", row(7), row(7, n=70))])
    assert state(h, lsn) == {row(7)["id"]: row(7, n=70), row(8)["id"]: {"a": 0, **row(8)}}
