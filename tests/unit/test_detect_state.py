"""The state file: state, offsets and alerts in one transaction; foreign files untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from consumers.detect.errors import StateFileError
from consumers.detect.memberships import Membership
from consumers.detect.state import Batch, StateStore
from tests.detect_fixtures import REL, Tx, link, make_detector, run


def test_a_batch_round_trips_through_the_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore.open(path, "hera")
    tx = Tx()
    for _ in range(11):
        tx.delete(REL, link("org"))
    alerts = run(make_detector(), tx)
    store.commit(Batch(
        released_lsn=tx.commit_lsn, deadletters=2, offsets={("hera.transaction", 0): 7},
        memberships={"k1": Membership("u1", "o1", 5), "k2": None},
        window_added=[(100, "o1", 3)], window_cutoff_us=50, alerted={"o1"}, alerts=alerts))
    store.close()
    again = StateStore.open(path, "hera")
    loaded = again.load()
    assert loaded.released_lsn == tx.commit_lsn and loaded.deadletters == 2
    assert loaded.offsets == {("hera.transaction", 0): 7}
    assert loaded.memberships == [("k1", "u1", "o1", 5)]
    assert loaded.window == [(100, "o1", 3)] and loaded.alerted == {"o1"}
    assert again.outbox() == alerts
    again.delivered([str(alerts[0].id)])
    assert again.outbox() == []


def test_an_alert_committed_twice_sits_once_in_the_outbox(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "s.sqlite", "hera")
    tx = Tx().truncate(REL)
    alerts = run(make_detector(), tx)
    for _ in range(2):
        store.commit(Batch(released_lsn=tx.commit_lsn, deadletters=0, offsets={},
                           alerts=alerts))
    assert len(store.outbox()) == 1


def test_an_sqlite_file_of_something_else_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE precious (x int)")
    with pytest.raises(StateFileError, match="not a detector state file"):
        StateStore.open(path, "hera")
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    assert tables == ["precious"]


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database\n" * 100)
    with pytest.raises(StateFileError, match="not a detector state file"):
        StateStore.open(path, "hera")


def test_a_state_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    StateStore.open(path, "hera").close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format_version'")
    with pytest.raises(StateFileError, match="newer hera-guard"):
        StateStore.open(path, "hera")


def test_a_state_file_of_another_topic_prefix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    StateStore.open(path, "hera").close()
    with pytest.raises(StateFileError, match="topic prefix 'hera'"):
        StateStore.open(path, "other")


def test_the_identity_and_captured_tables_are_stored_with_the_offsets(tmp_path: Path) -> None:
    from hera_kit.identity import StreamIdentity

    path = tmp_path / "s.sqlite"
    store = StateStore.open(path, "hera")
    ident = StreamIdentity(topic_prefix="hera", kafka_cluster_id="c", db="hera", slot="s")
    store.commit(Batch(released_lsn=5, deadletters=0, offsets={("hera.transaction", 0): 3},
                       identity=ident, captured_tables=(REL, "public.core_dynamic_data")))
    store.close()
    loaded = StateStore.open(path, "hera").load()
    assert loaded.identity == ident
    assert loaded.captured_tables == (REL, "public.core_dynamic_data")


def test_reset_forgets_the_stream_but_keeps_undelivered_alerts(tmp_path: Path) -> None:
    from hera_kit.identity import StreamIdentity

    store = StateStore.open(tmp_path / "s.sqlite", "hera")
    alerts = run(make_detector(), Tx().truncate(REL))
    store.commit(Batch(released_lsn=9, deadletters=0, offsets={("hera.transaction", 0): 3},
                       memberships={"k": Membership("u", "o", 1)}, alerts=alerts,
                       identity=StreamIdentity(topic_prefix="hera", kafka_cluster_id="c")))
    store.reset_stream()
    loaded = store.load()
    assert (loaded.offsets, loaded.memberships, loaded.identity, loaded.released_lsn) == (
        {}, [], None, 0)
    assert store.outbox() == alerts


def test_a_format_1_state_file_is_migrated_and_its_pending_alerts_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                             body TEXT NOT NULL);
        INSERT INTO meta VALUES ('format_version', '1'), ('topic_prefix', 'hera'),
                                ('released_lsn', '0'), ('deadletters', '0');""")
    (alert,) = run(make_detector(), Tx().truncate(REL))
    conn.execute("INSERT INTO outbox (id, body) VALUES (?, ?)",
                 (str(alert.id), alert.model_dump_json()))
    conn.commit()
    conn.close()
    store = StateStore.open(path, "hera")
    assert store.outbox() == [alert]
    store.delivered([str(alert.id)])
    assert store.outbox() == []
