"""The ``hera.author`` logical message (sql/10_author.sql) -> the transaction's Author.

The message is written by the database, but anyone allowed to call
``pg_logical_emit_message`` can write one too: it is parsed as untrusted input. A message that
is not the documented object, or exceeds the caps, is refused (the transaction then has no
author, a warning says why, a metric counts it) and never stops capture.
"""

from __future__ import annotations

import unicodedata

import msgspec

from capture.event import Author
from hera_kit.logs import redact

# The caps the SQL applies (sql/10_author.sql), checked again here: a message emitted by hand
# is not cut by the SQL.
ACTOR_CAP = 256  # bytes of hera.actor
CONTEXT_CAP = 4096  # bytes of hera.context: the "4 kB" the docs name
NAME_CAP = 256  # role and application names (PostgreSQL allows 63 bytes)
MESSAGE_CAP = 16 * 1024  # the whole message (JSON escapes can triple the context's size)
_CAPPED = frozenset({"actor", "context"})


class AuthorError(ValueError):
    """A ``hera.author`` message capture refuses (the reason, without the content)."""


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    db_user: str | None = None
    session_user: str | None = None
    application_name: str | None = None
    client_addr: str | None = None
    client_port: int | None = None
    backend_pid: int | None = None
    actor: str | None = None
    context: str | None = None
    context_format: str | None = None
    capped: list[str] = []


_decode = msgspec.json.Decoder(_Message).decode


def _within(name: str, value: str | None, cap: int) -> None:
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > cap:
        raise AuthorError(f"{name} longer than its cap of {cap} bytes")


def parse_author(content: str) -> Author:
    """The Author of a ``hera.author`` message; AuthorError when it is not one."""
    if len(content) > MESSAGE_CAP:
        raise AuthorError(f"message longer than {MESSAGE_CAP} characters")
    try:
        m = _decode(content)
    except msgspec.DecodeError as exc:
        raise AuthorError(f"not the hera.author object ({exc})") from None
    for name in ("db_user", "session_user", "application_name", "client_addr"):
        _within(name, getattr(m, name), NAME_CAP)
    _within("actor", m.actor, ACTOR_CAP)
    _within("context", m.context, CONTEXT_CAP)
    if m.context_format not in (None, "json", "text") or (m.context is None) != (
            m.context_format is None):
        raise AuthorError("context_format must be json or text, and only with a context")
    if not set(m.capped) <= _CAPPED:
        raise AuthorError(f"capped may only name {sorted(_CAPPED)}")
    for name in ("client_port", "backend_pid"):
        value = getattr(m, name)
        if value is not None and not 0 <= value < 2**31:
            raise AuthorError(f"{name} out of range")
    return Author(db_user=m.db_user, session_user=m.session_user,
                  application_name=m.application_name, client_addr=m.client_addr,
                  client_port=m.client_port, backend_pid=m.backend_pid, actor=m.actor,
                  context=m.context, context_format=m.context_format,
                  capped=tuple(m.capped))


_TEXT_CAP = 80  # characters of one untrusted value in an alert's text


def printable(value: str, cap: int = _TEXT_CAP) -> str:
    """Untrusted text for a terminal or a log line: control and format characters (newline,
    ESC of a colour sequence, bidi overrides) as escapes, at most ``cap`` characters."""
    out = [ch.encode("unicode_escape").decode("ascii")
           if ch != " " and unicodedata.category(ch)[0] in ("C", "Z") else ch
           for ch in value[:cap]]
    return "".join(out) + ("…" if len(value) > cap else "")


def author_phrase(author: Author | None) -> str:
    """``role migrator (application alembic, client 10.0.0.5, actor deploy-42)``: every value
    client-controlled, so escaped (``printable``) and redacted."""
    if author is None:
        return "an unknown author (no hera.author message for the transaction)"
    parts = []
    if author.session_user and author.session_user != author.db_user:
        parts.append(f"session user {printable(author.session_user)}")
    if author.application_name:
        parts.append(f"application {printable(author.application_name)}")
    parts.append(f"client {printable(author.client_addr)}" if author.client_addr
                 else "client local socket")
    if author.actor:
        parts.append(f"actor {printable(author.actor)}")
    return redact(f"role {printable(author.db_user or '?')} ({', '.join(parts)})")
