"""The tables ``--tables`` names must exist: refused at start, all at once, with the names the
database does have (a typo such as public.core_relationship would otherwise be the one table
nobody watches)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import psycopg

from capture.errors import PreflightError

_SHOWN = 12  # tables listed in the message; the rest are counted


def existing_tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Every ordinary or partitioned table outside the system schemas, schema-qualified."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'"
        " ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def check_tables_exist(conn: psycopg.Connection[tuple[object, ...]], wanted: Sequence[str],
                       database: str) -> None:
    known = existing_tables(conn)
    present = set(known)
    missing = [t for t in wanted if t not in present]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if close:
            hints.append(f"{name} -> {close[0]}?")
    shown = ", ".join(known[:_SHOWN]) + (f" and {len(known) - _SHOWN} more"
                                          if len(known) > _SHOWN else "")
    raise PreflightError(
        f"table{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
        f"do{'' if len(missing) > 1 else 'es'} not exist in database {database}"
        + (f" (did you mean: {'; '.join(hints)})" if hints else "")
        + f": check --tables (HERA_TABLES) and --dsn; tables here: {shown or 'none'}")
