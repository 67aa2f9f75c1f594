"""Replay's answers around re-reads, on hand-made archive relations: where a table added to
--tables later starts (replay/rereads.py joined_start), and which columns of a revert's
before-image the re-read may supply (replay/revert_reread.py)."""

from __future__ import annotations

import duckdb
import pytest

from replay.errors import NotCovered
from replay.rereads import joined_start
from replay.revert_reread import _identifiers, _why_unknown
from replay.schema import Col, SchemaChange, Step
from replay.tables import TableId

T = TableId("public", "added")


def archive(tables_later: list[str]) -> duckdb.DuckDBPyConnection:
    """An epoch at 100 whose snapshot held public.rr; public.added re-read from 200 to 300."""
    conn = duckdb.connect()
    conn.execute("CREATE TABLE markers (status VARCHAR, slot VARCHAR, epoch_lsn UBIGINT, "
                 "lsn UBIGINT, tables VARCHAR[])")
    conn.execute("INSERT INTO markers VALUES ('SNAPSHOT_START', 's', 100, 100, ['public.rr']),"
                 "('PROGRESS', 's', 100, 250, ['public.rr', 'public.added']),"
                 "('PROGRESS', 's', 100, 400, $later)", {"later": tables_later})
    conn.execute('CREATE TABLE rereads (slot VARCHAR, epoch_lsn UBIGINT, "table" VARCHAR, '
                 "requested_lsn UBIGINT, end_lsn UBIGINT)")
    conn.execute("INSERT INTO rereads VALUES ('s', 100, 'public.added', 200, 300)")
    return conn


def test_a_table_in_the_epochs_snapshot_starts_with_the_epoch() -> None:
    assert joined_start(archive(["public.rr"]), TableId("public", "rr"), "s", 100, 500) is None


def test_a_joined_table_starts_where_its_reread_was_requested_from_its_end_on() -> None:
    both = ["public.rr", "public.added"]
    assert joined_start(archive(both), T, "s", 100, 300) == 200
    assert joined_start(archive(both), T, "s", 100, 500) == 200


def test_a_point_before_the_joined_tables_reread_ended_is_refused_naming_the_end() -> None:
    with pytest.raises(NotCovered, match="exact from 0/12C"):
        joined_start(archive(["public.rr", "public.added"]), T, "s", 100, 299)


def test_a_point_after_capture_ran_without_the_joined_table_is_refused() -> None:
    with pytest.raises(NotCovered, match="ran without it"):
        joined_start(archive(["public.rr"]), T, "s", 100, 500)


def _step(ddl: str, recorded: bool = True) -> tuple[Step, list[Col]]:
    change = SchemaChange(500, 1, 9, ddl, recorded, (Col("v", "numeric"), Col("big", "text")))
    return Step(change, [], ["lost"], lost=("v",)), [Col("v", "integer"), Col("big", "text")]


def test_a_column_the_transaction_did_not_change_comes_from_the_reread() -> None:
    lossy = [_step("ALTER TABLE rr ALTER COLUMN v TYPE numeric USING v + 0.5")]
    assert _why_unknown("v", {"big"}, lossy, deleted=False) is None


def test_a_rewritten_column_the_transaction_changed_or_read_by_the_rewrite_is_refused() -> None:
    lossy = [_step("ALTER TABLE rr ALTER COLUMN v TYPE numeric USING v + length(big)")]
    assert "changed by the transaction and rewritten" in str(
        _why_unknown("v", {"v"}, lossy, deleted=False))
    assert "names it" in str(_why_unknown("v", {"big"}, lossy, deleted=False))
    assert _why_unknown("v", set(), lossy, deleted=True) is not None


def test_an_unrecorded_change_that_did_more_than_add_columns_is_refused_when_rows_changed(
        ) -> None:
    retyped = [_step("", recorded=False)]  # v integer -> numeric: maybe computed from big
    assert "more than add columns" in str(_why_unknown("v", {"big"}, retyped, deleted=False))
    assert _why_unknown("v", set(), retyped, deleted=False) is None


def test_identifiers_fold_unquoted_names_and_keep_quoted_ones() -> None:
    assert {"v", "Big", "length"} <= _identifiers('ALTER TABLE t ALTER v TYPE int USING '
                                                  'length("Big") + V')
