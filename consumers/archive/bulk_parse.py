"""Columnar parsing of a batch of change-event JSON values (DuckDB), for the archiver's hot path.

Parsing each record into a pydantic ``ChangeEvent`` and then back into Arrow columns cost
~20 µs per event, most of the archiver's time (profiled with bench/archive.py). Here the
whole batch goes to DuckDB at once: one ``json_transform`` per value splits it into the JSON
text of each member, in C++, without the GIL; the checks and the Parquet columns are Arrow
compute over those texts.

The bulk check is deliberately *stricter* than the model: a value is accepted only if it is
byte-equal to its own minified re-rendering (so: every key present, in capture's order, none
unknown or repeated, no whitespace, no other spelling of any value) and every member has the
JSON type the model wants (integers non-negative and within range, strings without escapes,
``schema_version`` not newer than ours). Every other value is handed back by index, and the
archiver parses those one by one with the model exactly as before: the model then either
accepts it (a lax but valid form: other spacing, ``1.0`` for an integer, a float written as
``1e-07`` inside a jsonb value) or gives the reason that goes to the dead-letter topic. So
what is archived and what is dead-lettered does not depend on this module, only the speed;
and the nested documents (``key``, ``before``, ``after``, ``types``) are stored as the
writer's own bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from capture.encoding import SCHEMA_VERSION
from capture.event import (
    OPTIONAL_MEMBERS,
    ChangeEvent,
    Source,
    TransactionBlock,
    document_members,
    nullable_members,
)
from consumers.archive.segments import CHANGES_SCHEMA, UTC_US

# The canonical document, exactly as capture writes it: every key present, in the model's
# order (capture/event.py spells the document once; a unit test holds capture's bytes to it).
_TOP = document_members(ChangeEvent)
_SOURCE = document_members(Source)
_TXN = document_members(TransactionBlock)
_NESTED = {"source": _SOURCE, "transaction": _TXN}


def _structure(names: list[str]) -> str:
    return "{" + ",".join(
        f'"{n}":' + (_structure(_NESTED[n]) if n in _NESTED else '"JSON"') for n in names) + "}"


# Each member as its JSON text (one parse of each document, in C++); a value that is not
# UTF-8 or not JSON gets a NULL struct. Everything else happens in Arrow: referring to the
# struct's fields in SQL made DuckDB re-run json_transform per field (measured 5x slower).
_SQL = "SELECT i, try(json_transform(try(decode(v)), $structure)) AS e FROM batch"
_STRUCTURE = _structure(_TOP)
_OPS = pa.array(['"c"', '"u"', '"d"', '"r"', '"t"'])
_INT = r"^[0-9]{1,18}$"  # a non-negative integer that surely fits int64
_MS = r"^[0-9]{1,15}$"  # milliseconds whose microseconds fit int64 (event_ts)
_PLAIN_STR = r'^"[^"\\]*"$'  # a JSON string without escapes: its value is the inner text
_STR = r'"(?:[^"\\]|\\.)*"'
_STRING_MAP = rf"^\{{(?:{_STR}:{_STR}(?:,{_STR}:{_STR})*)?\}}$"  # types: str -> str


# Members that may be JSON null in a valid event; any other one null fails the row anyway.
# Members capture leaves out when they have no value (the transaction's author): rendered only
# when present, so events with and without them both match byte for byte. The author itself
# is archived from the transaction's END record, not per change.
_OPTIONAL = OPTIONAL_MEMBERS
_NULLABLE = nullable_members(ChangeEvent, Source, TransactionBlock) - _OPTIONAL


def _render(obj: Any, names: list[str]) -> Any:
    """The minified JSON of ``obj`` (a struct of member texts), members in ``names`` order;
    NULL where a member that may not be null is."""
    pieces: list[Any] = []
    for k, name in enumerate(names):
        member = pc.struct_field(obj, name)
        text = _render(member, _NESTED[name]) if name in _NESTED else member
        if name in _NULLABLE:
            text = pc.coalesce(text, "null")
        if name in _OPTIONAL:  # never first: "," + key + value, or nothing
            pieces.append(pc.coalesce(pc.binary_join_element_wise(f',"{name}":', text, ""),
                                      ""))
            continue
        pieces += [("{" if k == 0 else ",") + f'"{name}":', text]
    return pc.binary_join_element_wise(*pieces, "}", "")


def _all(checks: list[Any]) -> Any:
    ok = checks[0]
    for check in checks[1:]:
        ok = pc.and_kleene(ok, check)
    return pc.fill_null(ok, False)


def _matches(text: Any, pattern: str) -> Any:
    return pc.match_substring_regex(text, pattern)


def _nullable(text: Any, check: Any) -> Any:
    return pc.or_kleene(pc.is_null(text), check)


def _inner(text: Any) -> Any:
    """The value of a JSON string text without escapes (checked by ``_PLAIN_STR``)."""
    return pc.utf8_slice_codeunits(text, 1, -1)


class BulkChangeParser:
    """Owns a private in-memory DuckDB connection (one per archiver; not thread-safe)."""

    def __init__(self) -> None:
        self._con = duckdb.connect(":memory:")

    def parse(self, values: Sequence[bytes | None]) -> tuple[pa.Table, list[int]]:
        """The changes table (``CHANGES_SCHEMA``, batch order) of the values accepted in bulk,
        and the indexes of the others, for the model to parse one by one."""
        if not values:
            return CHANGES_SCHEMA.empty_table(), []
        batch = pa.table({"i": pa.array(range(len(values)), pa.int32()),
                          "v": pa.array(values, pa.binary())})
        self._con.register("batch", batch)
        try:
            out = self._con.sql(_SQL, params={"structure": _STRUCTURE}).to_arrow_table()
        finally:
            self._con.unregister("batch")
        if not pc.all(pc.equal(out["i"], pa.array(range(len(values)), pa.int32()))).as_py():
            out = out.sort_by("i")  # DuckDB's threads may return rows in any order
        e = out["e"]
        src = pc.struct_field(e, "source")
        txn = pc.struct_field(e, "transaction")

        def f(obj: Any, name: str) -> Any:
            return pc.struct_field(obj, name)

        canonical = _render(e, _TOP).cast(pa.binary())
        ok = _all([
            # byte-equal to its own minified rendering: no unknown, missing or repeated key,
            # no other spelling of any value; so each member's text is the writer's own
            pc.equal(canonical, batch["v"]),
            pc.is_in(f(e, "op"), value_set=_OPS),
            *[_matches(f(e, n), _INT) for n in ("schema_version", "commit_lsn", "position")],
            _matches(f(e, "ts_ms"), _MS),
            *[_matches(f(src, n), _INT) for n in ("ts_ms", "ts_us")],
            *[_nullable(f(src, n), _matches(f(src, n), _INT)) for n in ("txId", "lsn")],
            *[_matches(f(src, n), _PLAIN_STR) for n in ("version", "connector", "name", "db",
                                                        "schema", "table", "snapshot")],
            *[_nullable(f(e, n), pc.starts_with(f(e, n), "{"))
              for n in ("before", "after", "key")],
            _nullable(f(e, "types"), _matches(f(e, "types"), _STRING_MAP)),
            _nullable(txn, _all([pc.starts_with(f(txn, "id"), '"'),
                                 _matches(f(txn, "total_order"), _INT),
                                 _matches(f(txn, "data_collection_order"), _INT),
                                 _nullable(f(txn, "author"),
                                           pc.starts_with(f(txn, "author"), "{"))])),
        ])
        e = pc.filter(e, ok)
        src = pc.struct_field(e, "source")

        def num(obj: Any, name: str) -> Any:
            return pc.struct_field(obj, name).cast(pa.int64())

        cols = {
            "table_schema": _inner(f(src, "schema")), "table_name": _inner(f(src, "table")),
            "op": _inner(f(e, "op")), "commit_lsn": num(e, "commit_lsn"),
            "position": num(e, "position"), "xid": num(src, "txId"),
            "commit_ts": num(src, "ts_us").cast(UTC_US),
            "key": f(e, "key"), "before": f(e, "before"), "after": f(e, "after"),
            "types": f(e, "types"),
            "snapshot": pc.not_equal(_inner(f(src, "snapshot")), "false"),
            "event_ts": pc.multiply(num(e, "ts_ms"), 1000).cast(UTC_US),
            "schema_version": num(e, "schema_version"),
            # re-read rows (a sparse member) never match the canonical document: the model
            # path archives them with their reason
            "reread": pa.nulls(len(e), pa.string()),
        }
        # a later schema_version or a position beyond int32: the model's path decides
        ok2 = _all([pc.less_equal(cols["schema_version"], SCHEMA_VERSION),
                    pc.less_equal(cols["position"], 2**31 - 1)])
        table = pa.Table.from_arrays(
            [pc.filter(cols[fl.name], ok2).cast(fl.type) for fl in CHANGES_SCHEMA],
            schema=CHANGES_SCHEMA)
        accepted = pc.filter(pc.filter(out["i"], ok), ok2)
        if len(accepted) == len(values):
            return table, []
        mask = pc.is_in(pa.array(range(len(values)), pa.int32()), value_set=accepted)
        return table, pc.indices_nonzero(pc.invert(mask)).to_pylist()
