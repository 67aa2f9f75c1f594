"""A captured table is its relation: renamed, its changes keep its captured name (wal2json,
which names tables, learns the new name from the schema log and widens its filter)."""

from __future__ import annotations

from capture.decoding import RowChange, TableNames
from capture.decoding.wal2json import Wal2JsonDecoder
from capture.slot import TableInfo

T = TableInfo("public", "t", (("id", "integer"),), ("id",), oid=5)


def _insert(table: str) -> bytes:
    return ('{"action":"I","xid":7,"lsn":"0/10","schema":"public","table":"' + table
            + '","columns":[{"name":"id","type":"integer","value":1}],'
            '"pk":[{"name":"id","type":"integer"}]}').encode()


def test_a_renamed_table_is_decoded_under_its_captured_name_until_renamed_back() -> None:
    names = TableNames([T])
    dec = Wal2JsonDecoder([T], None, names)
    assert dec.start_options()["add-tables"] == "public.t"
    assert names.renamed(5, "public", "odd name.x") == ("public", "t")
    assert dec.start_options()["add-tables"] == "public.t,public.odd\\ name\\.x"
    rec = dec.decode(_insert("odd name.x"), 0)
    assert isinstance(rec, RowChange) and (rec.schema, rec.table) == ("public", "t")
    assert names.renamed(5, "public", "t") == ("public", "t")
    # Back under its own name; another table that takes the old name is not captured.
    assert dec.decode(_insert("odd name.x"), 0) is None
    rec = dec.decode(_insert("t"), 0)
    assert isinstance(rec, RowChange) and rec.table == "t"
    assert names.renamed(6, "public", "other") is None  # not a captured relation
