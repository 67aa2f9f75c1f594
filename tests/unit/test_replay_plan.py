"""The pure planner: wanted state + live rows (+ what a transaction left) -> plan."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from replay.plan import CONFLICT, DELETE, INSERT, UPDATE, Scope, plan_changes
from replay.tables import TableId

T = TableId("public", "rel")
COLS = ["id", "org", "n", "data"]


def row(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"id": f"k{i}", "org": "o1", "n": i, "data": '{"a": 1, "b": [1.5]}'}
    r.update(over)
    return r


def keyed(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({"key": [json.dumps([r["id"]]) for r in rows],
                     "row": [json.dumps(r) for r in rows]})


def live(rows: list[dict[str, Any]], spaced: bool = False) -> pa.Table:
    sep = (", ", ": ") if spaced else (",", ":")
    return pa.table({"row": [json.dumps(r, separators=sep) for r in rows]})


def plan(wanted: list[dict[str, Any]], current: list[dict[str, Any]], **kw: Any) -> Any:
    return plan_changes(duckdb.connect(), T, ["id"], COLS, keyed(wanted), live(current), **kw)


def test_restore_reinserts_missing_rows_reverts_changed_and_removes_new() -> None:
    p = plan([row(1), row(2), row(3)], [row(1), row(2, n=20), row(4)])
    assert p.counts() == {INSERT: 1, UPDATE: 1, DELETE: 1}
    assert p.rows(INSERT)[0]["row"] == row(3)
    assert p.rows(UPDATE)[0]["row"] == row(2) and p.rows(UPDATE)[0]["current"] == row(2, n=20)
    assert p.rows(DELETE)[0]["row"] == row(4)


def test_equal_rows_in_other_key_order_and_spacing_need_nothing() -> None:
    reordered = [{"data": '{"a": 1, "b": [1.5]}', "n": 1, "org": "o1", "id": "k1"}]
    p = plan_changes(duckdb.connect(), T, ["id"], COLS, keyed([row(1)]),
                     live(reordered, spaced=True))
    assert p.counts() == {}


def test_a_scope_limits_the_restore_to_rows_that_were_or_are_in_it() -> None:
    p = plan([row(1), row(2, org="o2")], [row(3), row(4, org="o2"), row(1, org="o2")],
             scope=Scope((("org", "o2"),)))
    got = sorted((a, o["key"][0]) for a in (INSERT, UPDATE, DELETE) for o in p.rows(a))
    assert got == [(DELETE, "k4"), (INSERT, "k2"), (UPDATE, "k1")]


def test_a_revert_conflicts_where_the_live_row_is_not_what_the_transaction_left() -> None:
    before = [row(1), row(2)]           # what the transaction found
    after = [row(1, n=10), row(3)]      # what it left: updated 1, deleted 2, inserted 3
    now = [row(1, n=11), row(3)]        # someone changed row 1 again later
    keys = pa.table({"key": [json.dumps([k]) for k in ("k1", "k2", "k3")]})
    p = plan(before, now, expected=keyed(after), keys=keys)
    assert p.counts() == {CONFLICT: 1, INSERT: 1, DELETE: 1}
    (c,) = p.rows(CONFLICT)
    assert c["key"] == ["k1"] and c["current"] == row(1, n=11) and c["expected"] == row(1, n=10)
    assert p.without_conflicts().counts() == {INSERT: 1, DELETE: 1}


def test_a_revert_touches_only_the_transactions_keys() -> None:
    keys = pa.table({"key": [json.dumps(["k1"])]})
    p = plan([row(1)], [row(1, n=10), row(9)], expected=keyed([row(1, n=10)]), keys=keys)
    assert p.counts() == {UPDATE: 1}


def test_a_row_already_back_to_the_wanted_state_is_not_a_conflict() -> None:
    keys = pa.table({"key": [json.dumps(["k1"])]})
    p = plan([row(1)], [row(1)], expected=keyed([row(1, n=10)]), keys=keys)
    assert p.counts() == {}


def test_values_compare_on_their_exact_postgresql_text() -> None:
    # jsonb 1.50 is not 1.5 as text, a json with other spacing differs, bytea compares as
    # its hex text; an integer key written natively equals the same key as text.
    p = plan([row(1, data='{"a": 1.50}'), row(2, data='{"a":1}'), row(3, data="\\x00ff")],
             [row(1, data='{"a": 1.5}'), row(2, data='{"a": 1}'), row(3, data="\\x00ff")])
    assert p.counts() == {UPDATE: 2}
    numeric_key = plan_changes(duckdb.connect(), T, ["n"], COLS, pa.table({
        "key": ['["7"]'], "row": [json.dumps(row(7, n="7"))]}), live([row(7)]))
    assert numeric_key.counts() == {}


def test_a_revert_keeps_later_changes_of_columns_the_transaction_did_not_touch() -> None:
    keys = pa.table({"key": [json.dumps(["k1"])]})
    # the transaction changed n (1 -> 10); later someone changed org only
    p = plan([row(1)], [row(1, n=10, org="o9")], expected=keyed([row(1, n=10)]), keys=keys)
    assert p.counts() == {UPDATE: 1}
    assert p.rows(UPDATE)[0]["row"] == row(1, org="o9")


def test_jsonb_archived_as_version_1_compares_as_json_not_as_text() -> None:
    # schema_version 1 kept jsonb parsed; its text is a compact re-serialisation
    archived, live_text = row(1, data='{"a":1,"b":[1.5]}'), row(1, data='{"a": 1, "b": [1.5]}')
    assert plan([archived], [live_text]).counts() == {UPDATE: 1}  # v2: exact text
    compat = plan_changes(duck := duckdb.connect(), T, ["id"], COLS, keyed([archived]),
                          live([live_text]), compat=("data",))
    assert compat.counts() == {}
    duck.close()
