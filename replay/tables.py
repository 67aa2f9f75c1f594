"""Table names: ``schema.table`` as the archive spells them (``changes.table_schema``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import duckdb

from replay.errors import UnknownTable

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True, order=True)
class TableId:
    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> TableId:
        """``core_relationships`` or ``public.core_relationships`` (plain identifiers only)."""
        parts = text.strip().split(".")
        if len(parts) == 1:
            parts = [default_schema, parts[0]]
        if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
            raise UnknownTable(
                f"not a table name: {text!r} "
                "(expected schema.table, e.g. public.core_relationships)"
            )
        return cls(parts[0], parts[1])


def quote_duck(name: str) -> str:
    """Quote an identifier for DuckDB (our own relation names, never user text)."""
    return '"' + name.replace('"', '""') + '"'


def first(result: duckdb.DuckDBPyConnection) -> Any:
    """The first row of a DuckDB result, read to the end (an unfinished result blocks the
    connection's next register/execute)."""
    rows = result.fetchall()
    return rows[0] if rows else None
