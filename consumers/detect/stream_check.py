"""The detector's side of the stream check (consumers/stream_check.py): its wording and way
out, and whether capture streams the tables the rules watch."""

from __future__ import annotations

from pathlib import Path

from consumers.detect.errors import ConfigError, StreamMismatch
from consumers.stream_check import StreamCheck, Wording
from hera_kit.identity import StreamIdentity


def _way_out(state: Path) -> str:
    return (f"the state in {state} belongs to another stream: restart with --reset-state to "
            "forget it (undelivered alerts are kept), or point --state-dir at this stream's "
            "state")


def detector_check(state: Path, identity: StreamIdentity,
                   topic_ids: dict[str, str] | None = None) -> StreamCheck:
    way_out = _way_out(state)
    return StreamCheck(Wording("the state", "this detector",
                               lambda found: StreamMismatch(f"stream changed: {found}; "
                                                            f"{way_out}")),
                       identity, topic_ids)


def check_tables(named: dict[str, str], captured: tuple[str, ...]) -> None:
    """``named``: table -> where it was named (``--tables``, ``rules mass_deletion.table``).
    Each must be one capture streams (the markers' ``tables``)."""
    unknown = {t: where for t, where in named.items() if t not in captured}
    if unknown:
        first = sorted(unknown)[0]
        names = ", ".join(f"{t} ({unknown[t]})" for t in sorted(unknown))
        raise ConfigError(
            f"{names}: not a table capture streams; capture streams "
            f"{', '.join(sorted(captured)) or 'no tables'}: fix the name of {first} or add "
            "the table to capture's --tables")
