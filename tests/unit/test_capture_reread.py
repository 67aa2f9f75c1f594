"""The re-read's window rules (capture/reread.py) with a chunk set by hand: what the stream
changes between the watermarks wins over the chunk; a foreign or stale chunk publishes
nothing; the empty chunk ends the re-read at its high watermark; requests do not pile up."""

from __future__ import annotations

import json
from typing import Any

from capture.decoding import Message
from capture.reread import WATERMARK_PREFIX, Chunk, Rereads, TableShape


def rereads() -> Rereads:
    def shape(table: str) -> TableShape:
        return TableShape("public", "t", (("a", "integer"), ("b", "text"), ("v", "text")),
                          ("a", "b"))

    r = Rereads("dbname=unused", 10, shape, clock=lambda: 1_700_000_000.0)
    r.request("public.t", "requested", 100)
    return r


def chunk(r: Rereads, rows: list[tuple[int, str, str]], last: list[str | None] | None
          ) -> Chunk:
    c = Chunk(1, ("public", "t"), ("a", "b"), {"a": "integer", "b": "text", "v": "text"},
              {(a, b): {"a": a, "b": b, "v": v} for a, b, v in rows}, last)
    r.chunk = c
    return c


def mark(r: Rereads, kind: str, run: str | None = None, number: int = 1) -> Message:
    return Message(200, WATERMARK_PREFIX, json.dumps(
        {"run": run or r.run, "chunk": number, "kind": kind, "table": "public.t"}), True)


def close(r: Rereads, commit_lsn: int = 300) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    r.watermark(mark(r, "high"), commit_lsn,
                lambda s, t, row, key, types, reason: out.append(row))
    return out


def test_rows_the_stream_changes_inside_the_window_are_dropped_the_rest_published() -> None:
    r = rereads()
    chunk(r, [(1, "x", "old"), (2, "x", "old"), (3, "y", "old"), (4, "y", "old")], ["4", "y"])
    r.changed("public", "t", None, {"a": 1, "b": "x", "v": "new"})  # before the low mark
    r.watermark(mark(r, "low"), 300, lambda *a: None)
    r.changed("public", "t", {"a": 2, "b": "x", "v": "old"}, {"a": 9, "b": "x", "v": "old"})
    r.changed("public", "t", {"a": 3, "b": "y", "v": "old"}, None)
    r.changed("public", "other", {"a": 4, "b": "y", "v": "old"}, None)
    published = close(r)
    assert [(row["a"], row["b"]) for row in published] == [(1, "x"), (4, "y")]
    state = r.states[0]
    assert (state.chunks, state.rows, state.dropped, state.last_key) == (1, 2, 2, ["4", "y"])
    assert not state.finished and r.chunk is None


def test_a_change_before_the_low_mark_by_a_transaction_the_select_could_not_see_wins() -> None:
    # Committed in the WAL before the low mark, not yet visible to the chunk's snapshot:
    # the chunk holds the row from before it, so the stream's version must win.
    r = rereads()
    c = chunk(r, [(1, "x", "old"), (2, "x", "old")], ["2", "x"])
    c.invisible = frozenset({77})
    r.changed("public", "t", {"a": 1, "b": "x", "v": "old"}, {"a": 1, "b": "x", "v": "new"},
              xid=77)
    r.changed("public", "t", None, {"a": 2, "b": "x", "v": "seen"}, xid=78)  # visible to it
    r.watermark(mark(r, "low"), 300, lambda *a: None)
    assert [(row["a"], row["v"]) for row in close(r)] == [(2, "old")]


def test_a_chunk_whose_select_could_not_see_an_already_streamed_change_is_read_again(
        ) -> None:
    r = rereads()
    r.changed("public", "t", None, {"a": 1, "b": "x", "v": "new"}, xid=91)  # streamed first
    r.changed("public", "other", None, {"a": 1, "b": "x", "v": "new"}, xid=92)

    class Conn:
        def execute(self, *_: object) -> None:
            return None

    r._connection = lambda: Conn()  # type: ignore[method-assign,assignment,return-value]
    r._read = lambda *_: ({(1, "x"): {"a": 1, "b": "x", "v": "old"}}, ["1", "x"],  # type: ignore[method-assign,assignment]
                          frozenset({91}))
    assert r.next_chunk()
    assert r.chunk is not None and r.chunk.stale
    r.watermark(mark(r, "low", number=r.chunk.number), 300, lambda *a: None)
    out: list[dict[str, Any]] = []
    r.watermark(mark(r, "high", number=1), 310, lambda s, t, row, *a: out.append(row))
    assert out == [] and r.states[0].last_key is None  # the same range is read again


def test_in_progress_xids_are_read_from_the_snapshot_as_decoding_reports_them() -> None:
    from capture.reread import _in_progress

    assert _in_progress("10:20:12,4294967311") == frozenset({12, 15})
    assert _in_progress("10:10:") == frozenset()


def test_a_truncate_inside_the_window_drops_the_whole_chunk() -> None:
    r = rereads()
    chunk(r, [(1, "x", "v")], ["1", "x"])
    r.watermark(mark(r, "low"), 300, lambda *a: None)
    r.truncated("public", "t")
    assert close(r) == []


def test_watermarks_of_another_process_or_a_stale_chunk_publish_nothing() -> None:
    r = rereads()
    chunk(r, [(1, "x", "v")], ["1", "x"])
    assert r.watermark(mark(r, "high", run="someoneelse"), 300, lambda *a: None) is None
    r.schema_changed("public", "t")
    assert close(r) == [] and r.states[0].chunks == 0 and r.states[0].last_key is None


def test_the_empty_chunk_ends_the_reread_at_its_high_watermark() -> None:
    r = rereads()
    chunk(r, [], None)
    close(r, commit_lsn=4242)
    assert r.states[0].done_lsn == 4242 and r.active() is None


def test_a_second_request_while_one_runs_is_not_queued_and_a_later_one_replaces_it() -> None:
    r = rereads()
    assert not r.request("public.t", "again", 150)
    chunk(r, [], None)
    close(r)
    assert r.request("public.t", "later", 500)
    assert [(s.reason, s.finished) for s in r.states] == [("later", False)]
