"""Parsing the user's point: a time WITH zone, an LSN, or "just before transaction N".

Replay's point semantics (DESIGN.md): every transaction whose commit is at or before the
point, none after. Times are resolved to an LSN against the archive (see ``coverage``);
``--before-xid N`` becomes "commit LSN of N minus one", i.e. everything before N's commit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from capture.event import format_lsn, parse_lsn
from hera_kit.times import NotATime, ZonelessTime, parse_zoned_time
from replay.errors import BadPoint

_LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


@dataclass(frozen=True)
class TimePoint:
    at: datetime  # always zone-aware

    def describe(self) -> str:
        return self.at.isoformat()


@dataclass(frozen=True)
class LsnPoint:
    lsn: int

    def describe(self) -> str:
        return format_lsn(self.lsn)


@dataclass(frozen=True)
class BeforeXid:
    xid: int

    def describe(self) -> str:
        return f"just before transaction {self.xid}"


Point = TimePoint | LsnPoint | BeforeXid


def parse_time(text: str) -> datetime:
    """ISO-8601 time with a zone (``Z`` or ``+02:00``); a naive time is refused, not guessed."""
    try:
        return parse_zoned_time(text)
    except NotATime:
        raise BadPoint(
            f"not a time or LSN: {text!r} (use e.g. 2025-03-01T14:05:00+00:00 or 0/16B3748)"
        ) from None
    except ZonelessTime as exc:
        raise BadPoint(f"{exc} (replay never guesses a zone)") from None


def parse_until(text: str) -> Point:
    """``--until`` value: an LSN (``0/16B3748``) or a time with zone."""
    raw = text.strip()
    if _LSN.match(raw):
        return LsnPoint(parse_lsn(raw))
    return TimePoint(parse_time(raw))


def choose_point(until: str | None, before_xid: int | None) -> Point:
    """Exactly one of ``--until`` / ``--before-xid``."""
    if (until is None) == (before_xid is None):
        raise BadPoint("give exactly one of --until TIME|LSN or --before-xid N")
    if before_xid is not None:
        if before_xid <= 0:
            raise BadPoint(f"--before-xid must be a positive transaction id, got {before_xid}")
        return BeforeXid(before_xid)
    assert until is not None
    return parse_until(until)
