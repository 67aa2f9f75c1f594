"""A captured table renamed for a while is still the captured table: rows written while it
had another name are captured under its own name (its topic, the name replay knows), so
replay to now equals PostgreSQL's copy, on both output plugins. The pipeline is the real one
(schema log -> capture -> broker -> archiver -> replay)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from capture.event import format_lsn
from devstack.broker import Broker
from replay.cli import main
from tests.capture_fixtures import PLUGINS
from tests.conftest import HeraDB
from tests.replay_fixtures import copy_moment, pipeline, table_difference

SCHEMA_LOG = Path(__file__).parents[2] / "sql" / "08_schema_log.sql"
WHILE_RENAMED = [
    "ALTER TABLE core_dynamic_data RENAME TO cdd_renamed",
    "INSERT INTO cdd_renamed (organization_id, entity_id, field_name, field_type, "
    "field_value_text, smart_code) SELECT organization_id, 'renamed-' || entity_id, "
    "field_name, field_type, 'written while renamed', smart_code FROM cdd_renamed LIMIT 2",
    "UPDATE cdd_renamed SET field_value_text = 'updated while renamed' WHERE id = "
    "(SELECT min(id::text)::uuid FROM cdd_renamed)",
    "DELETE FROM cdd_renamed WHERE id = (SELECT max(id::text)::uuid FROM cdd_renamed "
    "WHERE entity_id NOT LIKE 'renamed-%')",
    "ALTER TABLE cdd_renamed RENAME TO core_dynamic_data",
    "UPDATE core_dynamic_data SET field_value_text = 'after the rename back' WHERE "
    "entity_id LIKE 'renamed-%'",
]


# wal2json filters tables by name: it follows a rename through the schema log; pgoutput's
# Relation messages carry the table's OID, so it follows one without the schema log too.
CASES = [(plugin, True) for plugin in PLUGINS] + [("pgoutput", False)]


@pytest.mark.parametrize(("plugin", "schema_log"), CASES)
def test_rows_written_while_a_captured_table_was_renamed_replay_under_its_own_name(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str, tmp_path: Path,
        plugin: str, schema_log: bool) -> None:
    if schema_log:
        with hera_db.connect() as conn:
            conn.execute(SCHEMA_LOG.read_text())
    with pipeline(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name, tmp_path,
                  plugin=plugin) as pipe, hera_db.connect() as conn:
        for statement in WHILE_RENAMED:
            conn.execute(statement)
        conn.execute("CREATE TABLE cdd_copy AS TABLE core_dynamic_data")
        lsn, now = copy_moment(conn, "rel_copy")
        pipe.sync()
        assert conn.execute("SELECT count(*) FROM cdd_copy WHERE entity_id LIKE 'renamed-%' "
                            "AND field_value_text = 'after the rename back'").fetchone() == (2,)
        for i, until in enumerate((format_lsn(lsn), now.isoformat())):
            result = CliRunner().invoke(main, [
                "--archive", str(pipe.archive), "--table", "public.core_dynamic_data",
                "--until", until, "--into-table", f"public.cdd_replayed_{i}",
                "--dsn", hera_db.dsn])
            assert result.exit_code == 0, result.output
            assert table_difference(conn, "cdd_copy", f"cdd_replayed_{i}") == 0, until
        # Nothing went to a table (or topic) named after the temporary name.
        tables = CliRunner().invoke(main, [
            "--archive", str(pipe.archive), "--table", "public.cdd_renamed",
            "--until", format_lsn(lsn), "--output", str(tmp_path / "x.csv")])
        assert tables.exit_code == 1 and "not in the archive" in tables.output, tables.output
