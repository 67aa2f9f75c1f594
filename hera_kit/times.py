"""Times users type (``--until``, ``--as-of``): ISO 8601 with a zone, never a guessed one."""

from __future__ import annotations

from datetime import datetime


class NotATime(ValueError):
    """Not an ISO 8601 time."""


class ZonelessTime(ValueError):
    """An ISO 8601 time without a zone: which instant it means is unknown."""


def parse_zoned_time(text: str) -> datetime:
    """``2025-03-01T14:05:00+00:00``, ``…Z``, fractions of a second, a space for the ``T``;
    NotATime / ZonelessTime otherwise (a naive time is refused, not guessed)."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise NotATime(f"not an ISO 8601 time: {text!r} (e.g. 2025-03-01T14:05:00+00:00)"
                       ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ZonelessTime(f"the time {text!r} has no zone; say which one, e.g. {raw}+00:00 "
                           f"or {raw}Z (a zone is never guessed)")
    return at
