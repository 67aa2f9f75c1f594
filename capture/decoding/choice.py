"""Which plugin a slot uses: the slot's own for an existing slot, else --plugin (auto picks)."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from capture.decoding.wal2json import NUMERIC_AS_STRING
from capture.errors import SlotError
from hera_kit.text import first_line

if TYPE_CHECKING:
    from capture.decoding.base import Conn

log = logging.getLogger("hera.capture")
PLUGINS = ("wal2json", "pgoutput")


def wal2json_exact(conn: Conn) -> tuple[bool, str]:
    """(is the server's wal2json exact, why): exact means it accepts
    numeric-data-types-as-string (wal2json >= 2.6), probed on a temporary slot."""
    probe = f"hera_probe_{secrets.token_hex(4)}"
    try:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)",
                     (probe,))
        conn.execute(sql.SQL("SELECT count(*) FROM pg_logical_slot_peek_changes({}, NULL, "
                             "NULL, {}, '1')").format(sql.Literal(probe),
                                                      sql.Literal(NUMERIC_AS_STRING)))
    except psycopg.Error as exc:
        first = first_line(exc)
        if NUMERIC_AS_STRING in first:
            return False, ("the server's wal2json is older than 2.6 (no "
                           "numeric-data-types-as-string: NaN/Infinity would arrive as null)")
        return False, f"wal2json is not usable here ({first})"
    finally:
        # A temporary slot goes with the session; drop it now for a long-lived connection.
        try:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s", (probe,))
        except psycopg.Error:
            log.debug("probe slot already gone", exc_info=True)
    return True, "the server's wal2json is exact (>= 2.6, numeric-data-types-as-string)"


def choose_plugin(requested: str, slot_plugin: str | None, new_snapshot: bool,
                  conn: Conn, slot: str) -> tuple[str, str]:
    """(plugin, why) for this run. ``slot_plugin`` is the existing slot's plugin, if any
    (and it is kept unless ``new_snapshot`` drops the slot)."""
    if slot_plugin is not None and not new_snapshot:
        if slot_plugin not in PLUGINS:
            raise SlotError(
                f"slot {slot} uses plugin {slot_plugin}, not one of {', '.join(PLUGINS)}: "
                "choose another --slot name, or drop that slot if it is unused")
        if requested not in ("auto", slot_plugin):
            raise SlotError(
                f"slot {slot} was created with {slot_plugin}, not {requested}: switching the "
                "plugin is a new epoch; run capture run --new-snapshot --plugin "
                f"{requested}, or --plugin auto to keep {slot_plugin}")
        return slot_plugin, f"slot {slot} exists and was created with {slot_plugin}"
    if requested != "auto":
        return requested, f"--plugin {requested}"
    exact, why = wal2json_exact(conn)
    if exact:
        return "wal2json", why
    return "pgoutput", f"{why}; pgoutput is exact for every value"
