"""Connections and the mapping of database errors to the guard's named errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import conninfo

from guard.errors import (
    BadInput,
    Blocked,
    ConnectionFailed,
    GuardError,
    InvalidConstraint,
    MissingSchema,
    NotFound,
    NotInstalled,
    OperationFailed,
    UnknownBackup,
)
from hera_kit.text import first_line

# SQLSTATEs raised by sql/*.sql (class HG is ours) and the named error each becomes.
_SQLSTATE_ERRORS: dict[str, type[GuardError]] = {
    "HG001": Blocked,
    "HG002": Blocked,
    "HG003": Blocked,
    "HG110": InvalidConstraint,
    "HG120": MissingSchema,
    "HG130": BadInput,
    "HG131": NotFound,
    "HG132": NotFound,
    "HG140": UnknownBackup,
    "HG141": UnknownBackup,
    "22P02": BadInput,  # invalid text representation (e.g. a malformed uuid)
}

Connection = psycopg.Connection[tuple[object, ...]]


def describe(dsn: str) -> str:
    """host/port/dbname of a DSN, never the password (for messages and logs)."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    db = parts.get("dbname", parts.get("user", "?"))
    return f"{host}:{port}/{db}"


def with_dbname(dsn: str, dbname: str) -> str:
    """The same connection parameters, another database."""
    return conninfo.make_conninfo(dsn, dbname=dbname)


def redact(text: str) -> str:
    """Remove passwords from a message that may quote a DSN or URL."""
    text = re.sub(r"(password\s*=\s*)(\S+)", r"\1***", text, flags=re.IGNORECASE)
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+:)([^@\s]+)(@)", r"\1***\3", text)


def connect(dsn: str, *, autocommit: bool = True, what: str = "database") -> Connection:
    """Open a connection or raise :class:`ConnectionFailed` with a one-line reason."""
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"the {what} DSN is not a valid connection string: "
                               f"{redact(str(exc))}") from None
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        first = first_line(redact(str(exc)), "no reason")
        raise ConnectionFailed(
            f"cannot connect to the {what} at {describe(dsn)}: {first}; check --dsn"
        ) from None


def translate(exc: psycopg.Error) -> GuardError:
    """The named error for a database error raised by a guard function."""
    state = exc.sqlstate or ""
    diag = exc.diag
    message = (diag.message_primary or str(exc)).strip()
    if state in _SQLSTATE_ERRORS:
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        return _SQLSTATE_ERRORS[state](message + hint)
    if state == "42883" and "function" in message:  # undefined_function
        return NotInstalled(f"{message}: hera-guard is not installed here; run guard install")
    if state == "42P01":  # undefined_table
        return MissingSchema(f"{message}; install the HERA schema (and guard install) first")
    return OperationFailed(f"{message} [SQLSTATE {state}]")


@contextmanager
def translated() -> Iterator[None]:
    """Turn database errors raised inside the block into named guard errors."""
    try:
        yield
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None:
            raise ConnectionFailed(f"lost the connection: {redact(str(exc)).strip()}") from None
        raise translate(exc) from None
    except psycopg.Error as exc:
        raise translate(exc) from None
