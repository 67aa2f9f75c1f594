"""Logical decoding behind one seam: plugin-neutral records, one Decoder per output plugin.

Nothing outside this package knows which plugin runs: callers build a decoder with
``make_decoder`` and ask it (``caps``, ``start_options``, ``prepare``, ``decode``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from capture.decoding.base import (
    AUTHOR_PREFIX,
    HEARTBEAT_PREFIX,
    SCHEMA_PREFIX,
    Capabilities,
    Catalog,
    Decoder,
)
from capture.decoding.choice import PLUGINS, choose_plugin
from capture.decoding.names import TableNames
from capture.decoding.records import (
    Begin,
    Columns,
    Commit,
    Decoded,
    Message,
    Relation,
    Row,
    RowChange,
    Truncate,
)

if TYPE_CHECKING:
    from capture.slot import TableInfo


def make_decoder(plugin: str, tables: Sequence[TableInfo], catalog: Catalog,
                 publication: str, names: TableNames | None = None) -> Decoder:
    """The decoder for ``plugin`` (a slot's plugin name); ``names``: the captured tables by
    relation, shared with the runner, which learns renames from the schema log."""
    if plugin == "wal2json":
        from capture.decoding.wal2json import Wal2JsonDecoder

        return Wal2JsonDecoder(tables, catalog, names)
    if plugin == "pgoutput":
        from capture.decoding.pgoutput import PgOutputDecoder

        return PgOutputDecoder(tables, catalog, publication, names)
    from capture.errors import SlotError

    raise SlotError(f"output plugin {plugin} is not one capture decodes: use one of "
                    f"{', '.join(PLUGINS)}")


__all__ = ["AUTHOR_PREFIX", "HEARTBEAT_PREFIX", "PLUGINS", "SCHEMA_PREFIX", "Begin",
           "Capabilities", "Catalog", "Columns", "Commit", "Decoded", "Decoder", "Message",
           "Relation", "Row", "RowChange", "TableNames", "Truncate", "choose_plugin",
           "make_decoder"]
