"""Which schema changes leave a table's rows unknown to the stream (so capture re-reads it).

Logical decoding carries no row a table rewrite produces. After these DDLs the values of
rows not changed since are known only to PostgreSQL: capture re-reads the table online
(capture/reread.py) and replay is exact again from the re-read's end.

- a column's type changed (ALTER COLUMN ... TYPE, with or without USING: replay converts some
  types exactly, but which ones is replay's business; a re-read is always exact);
- a column added with a default PostgreSQL had to compute per row (a volatile default such
  as ``gen_random_uuid()``, or a stored generated column): the schema log shows a default
  but no ``missing`` value, since only a constant default is stored once as ``missing``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from capture.event import ColumnDef

_ADD = re.compile(r"\bADD\b", re.IGNORECASE)
_USING = re.compile(r"\bUSING\b", re.IGNORECASE)


def rewrite_reason(before: Sequence[tuple[str, str]] | None, after: Sequence[ColumnDef],
                   ddl: str | None) -> str | None:
    """Why the rows cannot be known from the stream after this DDL, or None."""
    if before is None:
        return None
    old = dict(before)
    statement = " ".join((ddl or "").split())[:200]
    for col in after:
        was = old.get(col.name)
        if was is not None and was != col.type:
            using = " with USING" if _USING.search(ddl or "") else ""
            return f"column {col.name} changed type {was} -> {col.type}{using}: {statement}"
        if (was is None and col.default is not None and not col.has_missing
                and _ADD.search(ddl or "")):
            return (f"column {col.name} added with a default computed per row "
                    f"({col.default}): {statement}")
    return None
