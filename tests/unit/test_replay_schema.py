"""Schema changes applied at their place in WAL: the state before, at and after each DDL is
what PostgreSQL's own table holds then (the expected rows below are what PostgreSQL gives
for the same statements), and what replay cannot know is refused, naming the DDL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from capture.event import ColumnDef, format_lsn
from replay.schema import SchemaChangeRefused, conversion, same_type
from replay.state import state_at
from replay.tables import TableId
from tests.replay_fixtures import History, memory_history

TABLE = TableId("public", "rel")
TYPES = {"id": "uuid", "n": "integer", "kind": "text"}


def cols(*spec: tuple[int, str, str] | ColumnDef) -> list[ColumnDef]:
    return [c if isinstance(c, ColumnDef) else ColumnDef(attnum=c[0], name=c[1], type=c[2])
            for c in spec]


BASE = cols((1, "id", "uuid"), (2, "n", "integer"), (3, "kind", "text"))


def row(i: int, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"id": f"00000000-0000-0000-0000-{i:012d}", "n": i, "kind": "k"}
    r.update(over)
    return {k: v for k, v in r.items() if v != "-"}


def rows_at(h: History, lsn: int, **kw: Any) -> dict[int, dict[str, Any]]:
    state = state_at(memory_history(h), TABLE, lsn, **kw)
    out = {}
    for (text,) in state.rel.project("row").fetchall():
        r = json.loads(text)
        out[int(r["id"][-3:])] = r
    return out


def history() -> History:
    h = History(types=dict(TYPES))
    h.snapshot([row(1), row(2)])
    return h


def test_add_column_with_a_default_gives_every_existing_row_the_default() -> None:
    h = history()
    _, before, _ = h.commit([("u", row(1), row(1, kind="k1"))])
    x = ColumnDef(attnum=4, name="x", type="text", default="'a'::text", missing="a",
                  has_missing=True)
    _, at, _ = h.alter("ALTER TABLE rel ADD COLUMN x text DEFAULT 'a'", [*BASE, x])
    _, after, _ = h.commit([("u", row(2, x="a"), row(2, x="b")), ("c", None, row(3, x=None))])
    h.progress()
    assert rows_at(h, before) == {1: row(1, kind="k1"), 2: row(2)}
    assert rows_at(h, at) == {1: row(1, kind="k1", x="a"), 2: row(2, x="a")}
    assert rows_at(h, after) == {1: row(1, kind="k1", x="a"), 2: row(2, x="b"),
                                 3: row(3, x=None)}
    assert list(state_at(memory_history(h), TABLE, after).types) == ["id", "n", "kind", "x"]
    assert list(state_at(memory_history(h), TABLE, before).types) == ["id", "n", "kind"]


def test_add_column_without_a_default_is_null_in_existing_rows() -> None:
    h = history()
    _, at, _ = h.alter("ALTER TABLE rel ADD COLUMN x integer",
                       [*BASE, ColumnDef(attnum=4, name="x", type="integer")])
    h.progress()
    assert rows_at(h, at) == {1: row(1, x=None), 2: row(2, x=None)}


def test_a_volatile_default_refuses_points_after_it_naming_the_ddl() -> None:
    h = history()
    _, before, _ = h.commit([("u", row(1), row(1, n=10))])
    ts = ColumnDef(attnum=4, name="seen", type="timestamp with time zone", default="now()")
    ddl = "ALTER TABLE rel ADD COLUMN seen timestamptz DEFAULT now()"
    _, at, _ = h.alter(ddl, [*BASE, ts])
    h.progress()
    assert rows_at(h, before) == {1: row(1, n=10), 2: row(2)}
    with pytest.raises(SchemaChangeRefused) as err:
        rows_at(h, at)
    assert ddl in str(err.value) and format_lsn(at) in str(err.value)
    assert "column seen got DEFAULT now() without a recorded value" in str(err.value)


def test_rows_written_after_a_volatile_default_are_known_and_a_later_drop_forgets_it() -> None:
    h = History(types=dict(TYPES))
    h.snapshot([])
    ts = ColumnDef(attnum=4, name="seen", type="timestamp with time zone", default="now()")
    _, at, _ = h.alter("ALTER TABLE rel ADD COLUMN seen timestamptz DEFAULT now()",
                       [*BASE, ts], [("c", None, row(5, seen="2025-03-01 12:00:00+00"))])
    assert rows_at(h, at) == {5: row(5, seen="2025-03-01 12:00:00+00")}
    h2 = history()
    h2.alter("ALTER TABLE rel ADD COLUMN seen timestamptz DEFAULT now()", [*BASE, ts])
    _, dropped, _ = h2.alter("ALTER TABLE rel DROP COLUMN seen", BASE)
    h2.progress()
    assert rows_at(h2, dropped) == {1: row(1), 2: row(2)}


def test_drop_column_removes_it_and_rename_keeps_the_values() -> None:
    h = history()
    _, dropped, _ = h.alter("ALTER TABLE rel DROP COLUMN kind", BASE[:2])
    renamed_cols = cols((1, "id", "uuid"), (2, "num", "integer"))
    _, renamed, _ = h.alter("ALTER TABLE rel RENAME n TO num", renamed_cols,
                            [("u", {"id": row(1)["id"], "num": 1},
                              {"id": row(1)["id"], "num": 11})])
    h.progress()
    assert rows_at(h, dropped) == {1: row(1, kind="-"), 2: row(2, kind="-")}
    assert rows_at(h, renamed) == {1: {"id": row(1)["id"], "num": 11},
                                   2: {"id": row(2)["id"], "num": 2}}


def test_the_first_rename_is_matched_by_the_statement_without_earlier_attnums() -> None:
    h = history()
    _, lsn, _ = h.alter('ALTER TABLE rel RENAME COLUMN kind TO "Kind"',
                        cols((1, "id", "uuid"), (2, "n", "integer"), (3, "Kind", "text")))
    h.progress()
    assert rows_at(h, lsn) == {1: {"id": row(1)["id"], "n": 1, "Kind": "k"},
                               2: {"id": row(2)["id"], "n": 2, "Kind": "k"}}


def test_drop_and_add_of_the_same_name_is_a_new_column() -> None:
    h = history()
    _, lsn, _ = h.alter("ALTER TABLE rel DROP COLUMN kind, ADD COLUMN kind text",
                        cols((1, "id", "uuid"), (2, "n", "integer"), (4, "kind", "text")))
    h.progress()
    assert rows_at(h, lsn) == {1: row(1, kind=None), 2: row(2, kind=None)}


def test_alter_type_converts_untouched_rows_the_way_postgresql_does() -> None:
    h = history()
    _, lsn, _ = h.alter("ALTER TABLE rel ALTER n TYPE bigint, ALTER kind TYPE varchar(10)",
                        cols((1, "id", "uuid"), (2, "n", "bigint"),
                             (3, "kind", "character varying(10)")),
                        [("u", row(2, n="2"), row(2, n="20"))])
    h.progress()
    # bigint is text in the event encoding: the old native 1 becomes "1", like new events
    assert rows_at(h, lsn) == {1: row(1, n="1"), 2: row(2, n="20")}


def test_an_integer_key_changed_to_bigint_stays_one_key() -> None:
    h = History(types={"id": "integer", "v": "text"})
    h.snapshot([{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    _, lsn, _ = h.alter("ALTER TABLE rel ALTER id TYPE bigint",
                        cols((1, "id", "bigint"), (2, "v", "text")),
                        [("u", {"id": "1", "v": "a"}, {"id": "1", "v": "z"})])
    h.progress()
    state = state_at(memory_history(h), TABLE, lsn)
    got = sorted(json.loads(r)["v"] for (r,) in state.rel.project("row").fetchall())
    assert got == ["b", "z"]


def test_a_type_change_with_using_refuses_points_after_it() -> None:
    h = history()
    ddl = "ALTER TABLE rel ALTER kind TYPE integer USING length(kind)"
    _, lsn, _ = h.alter(ddl, cols((1, "id", "uuid"), (2, "n", "integer"),
                                  (3, "kind", "integer")))
    h.progress()
    with pytest.raises(SchemaChangeRefused, match="USING expression"):
        rows_at(h, lsn)


def test_conversions_replay_can_do_exactly_and_those_it_refuses() -> None:
    assert conversion("numeric(5,2)", "numeric(7,3)", None)[0] is not None
    assert conversion("integer", "numeric", None)[0] == "{t}"
    assert conversion("numeric(7,3)", "numeric(5,2)", None)[0] is None
    assert conversion("real", "double precision", None)[0] is None  # 0.1::real::float8
    assert conversion("character(4)", "text", None)[0] == "rtrim({t}, ' ')"
    assert conversion("timestamp with time zone", "timestamp without time zone",
                      None)[0] is None
    h = history()
    _, lsn, _ = h.alter("ALTER TABLE rel ALTER n TYPE numeric(6,2)",
                        cols((1, "id", "uuid"), (2, "n", "numeric(6,2)"), (3, "kind", "text")))
    h.progress()
    assert rows_at(h, lsn)[1]["n"] == "1.00"


def test_an_unrecorded_schema_change_refuses_points_after_it() -> None:
    h = history()
    _, before, _ = h.commit([("u", row(1), row(1, n=10))])
    _, at, _ = h.alter(None, cols((1, "id", "uuid"), (2, "n", "integer")), recorded=False)
    h.progress()
    assert rows_at(h, before) == {1: row(1, n=10), 2: row(2)}
    with pytest.raises(SchemaChangeRefused, match="unrecorded schema change"):
        rows_at(h, at)


def test_forward_brings_rows_of_an_earlier_point_to_todays_columns() -> None:
    h = history()
    _, before, _ = h.commit([("u", row(1), row(1, n=10))])
    x = ColumnDef(attnum=4, name="x", type="text", default="'a'::text", missing="a",
                  has_missing=True)
    h.alter("ALTER TABLE rel ADD COLUMN x text DEFAULT 'a'", [*BASE, x])
    h.alter("ALTER TABLE rel RENAME n TO num",
            cols((1, "id", "uuid"), (2, "num", "integer"), (3, "kind", "text"), x))
    h.progress()
    state = state_at(memory_history(h), TABLE, before, forward=True)
    assert list(state.types) == ["id", "num", "kind", "x"]
    got = {json.loads(r)["num"]: json.loads(r) for (r,) in state.rel.project("row").fetchall()}
    assert got[10] == {"id": row(1)["id"], "num": 10, "kind": "k", "x": "a"}


def test_an_archive_without_schema_changes_whose_columns_changed_is_refused() -> None:
    h = history()
    _, before, _ = h.commit([("u", row(1), row(1, n=10))])
    h.types = {"id": "uuid", "n": "integer", "kind": "text", "x": "text"}  # a silent DDL
    _, after, _ = h.commit([("u", row(2), row(2, x="b"))])
    h.progress()
    assert rows_at(h, before) == {1: row(1, n=10), 2: row(2)}
    with pytest.raises(SchemaChangeRefused, match=f"changed at {format_lsn(after)}.*no schema "
                                                   "change"):
        rows_at(h, after)


def test_the_epochs_recorded_definition_matches_a_first_rename_the_statement_hides() -> None:
    # The DDL ran inside a migration function: its text names no column, only the attnums of
    # the epoch's starting definition (SNAPSHOT_START) tell a rename from a drop and an add.
    h = History(types=dict(TYPES), definition=tuple(BASE))
    h.snapshot([row(1), row(2)])
    renamed = cols((1, "id", "uuid"), (2, "n", "integer"), (3, "Kind", "text"))
    _, lsn, _ = h.alter("SELECT run_migration(42)", renamed)
    h.progress()
    assert rows_at(h, lsn) == {1: {"id": row(1)["id"], "n": 1, "Kind": "k"},
                               2: {"id": row(2)["id"], "n": 2, "Kind": "k"}}


def test_a_type_spelled_with_and_without_its_schema_is_the_same_type() -> None:
    # Archives written before capture fixed its spelling hold ``mood`` where the schema log
    # and today's events hold ``public.mood``.
    assert same_type("mood", "public.mood") and same_type("public.mood[]", "mood[]")
    assert conversion("mood", "public.mood", None) == ("{t}", "")
    assert not same_type("mood", "public.feeling")
    assert not same_type("integer", "bigint")
