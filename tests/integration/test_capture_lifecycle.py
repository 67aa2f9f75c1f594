"""capture's lifecycle under an operator's hand and a sick broker: SIGTERM in every phase,
a restart after a stop mid-snapshot, readiness that follows the broker's acknowledgements,
and a reconnect back-off that starts again from the shortest wait."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from capture.event import (
    MarkerKind,
    Op,
    StreamMarker,
    format_lsn,
    parse_lsn,
    parse_transaction_topic,
)
from capture.options import capture_options
from capture.service import open_capture
from capture.settings import CaptureSettings
from capture.topics import transaction_topic
from devstack.broker import Broker
from devstack.ports import free_port
from hera_kit.service import ServiceEndpoint
from tests.capture_fixtures import (
    CaptureProcess,
    read_events,
    read_topic,
    running_capture,
    scrape,
    wait_for_events,
    wait_until,
)
from tests.conftest import HeraDB
from tests.integration.archive_support import start_archiver
from tests.replay_fixtures import Pipeline

# "Within a few seconds": the clean stop's bound (HERA_STOP_TIMEOUT_S, 3 s) plus the margin
# after which the process is ended regardless, plus slack for a loaded test machine.
STOP_BOUND_S = 8.0
SNAPSHOT_ROWS = 100_000  # under a hung broker: well past the in-flight limit
RESTART_ROWS = 30_000  # seconds to publish: the broker hangs well before the last one


def _probe_table(db: HeraDB, rows: int = 0) -> None:
    """A narrow captured table: many rows stay cheap to snapshot and to read back."""
    with db.connect() as conn:
        conn.execute("CREATE TABLE stop_probe (id bigint PRIMARY KEY, batch int NOT NULL)")
        if rows:
            conn.execute("INSERT INTO stop_probe SELECT g, 0 FROM generate_series(1, %s) g",
                         (rows,))


def _capture(db: HeraDB, broker: Broker, prefix: str, slot: str, tmp_path: Path
             ) -> CaptureProcess:
    return CaptureProcess(db.dsn, broker.bootstrap_servers, prefix, slot,
                          extra_args=["--tables", "public.stop_probe"],
                          log_path=tmp_path / f"capture-{time.monotonic_ns()}.log")


@contextlib.contextmanager
def _reaped(cap: CaptureProcess) -> Iterator[CaptureProcess]:
    """The process is gone when the block ends, whatever the test found."""
    try:
        yield cap
    finally:
        if cap.proc is not None and cap.proc.poll() is None:
            cap.proc.kill()
            cap.proc.wait(30)


def _full_log(cap: CaptureProcess) -> str:
    assert cap.log_path is not None
    return cap.log_path.read_text() if cap.log_path.exists() else ""


def _await_log(cap: CaptureProcess, text: str, timeout: float = 60) -> None:
    def logged() -> bool:
        if cap.proc is not None and cap.proc.poll() is not None:
            raise AssertionError(f"capture exited with {cap.proc.returncode}: {cap.log()}")
        return text in _full_log(cap)

    wait_until(logged, timeout, f"capture to log {text!r}")


def _hang(broker: Broker) -> None:
    """The broker stops answering but keeps its connections (a hung process)."""
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)


def _unhang(broker: Broker) -> None:
    if broker.proc is not None and broker.proc.poll() is None:
        os.kill(broker.proc.pid, signal.SIGCONT)


def _walsender_pid(db: HeraDB, slot: str) -> int | None:
    with db.connect() as conn:
        row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                           (slot,)).fetchone()
    return None if row is None or row[0] is None else int(str(row[0]))


def _end_walsender(db: HeraDB, slot: str) -> int:
    pid = _walsender_pid(db, slot)
    assert pid is not None
    with db.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return pid


def _markers(broker: Broker, prefix: str, slot: str) -> list[StreamMarker]:
    out = []
    for rec in read_topic(broker.bootstrap_servers, transaction_topic(prefix)):
        item = parse_transaction_topic(rec.value)
        if isinstance(item, StreamMarker) and item.slot == slot:
            out.append(item)
    return out


# --- SIGTERM in every phase -------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["starting", "snapshot", "streaming", "back-off"])
def test_sigterm_stops_capture_within_seconds_in_every_phase(
        phase: str, empty_db: HeraDB, own_broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    """Each phase held where it used to hold SIGTERM longest: a hung broker at start (topic
    creation), a hung broker under a 100k-row snapshot (back-pressure), a hung broker with
    changes in flight (the final flush), and the wait before a reconnect."""
    _probe_table(empty_db, SNAPSHOT_ROWS if phase == "snapshot" else 0)
    cap = _capture(empty_db, own_broker, topic_prefix, slot_name, tmp_path)
    try:
        if phase == "starting":
            _hang(own_broker)
            cap.start(wait=False)
            _await_log(cap, "output plugin chosen")  # next: the broker, which hangs
        elif phase == "snapshot":
            cap.start(wait=False)
            _await_log(cap, "snapshot started")
            _hang(own_broker)
        elif phase == "streaming":
            cap.start()
            _await_log(cap, '"msg": "streaming"')  # the slot is active during the snapshot too
            _hang(own_broker)
            with empty_db.connect() as conn:
                conn.execute("INSERT INTO stop_probe VALUES (1, 1)")
            _await_log(cap, "broker not acknowledging")
        else:
            cap.start()
            _await_log(cap, '"msg": "streaming"')
            own_broker.stop()
            _end_walsender(empty_db, slot_name)
            _await_log(cap, "stream interrupted; retrying")
        asked = time.monotonic()
        rc = cap.terminate(timeout=90)
        took = time.monotonic() - asked
    finally:
        _unhang(own_broker)
        if cap.proc is not None and cap.proc.poll() is None:
            cap.proc.kill()
            cap.proc.wait(30)
    record_property("seconds_from_sigterm_to_exit", round(took, 2))  # in --junitxml
    assert took < STOP_BOUND_S, f"{phase}: stopped {took:.1f} s after SIGTERM: {cap.log()}"
    assert rc == 0, cap.log()
    assert '"msg": "stopped"' in _full_log(cap) and f'"phase": "{phase}"' in _full_log(cap)


def test_a_restart_after_sigterm_mid_snapshot_begins_a_new_epoch_with_every_row(
        empty_db: HeraDB, own_broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    broker = own_broker
    _probe_table(empty_db, RESTART_ROWS)
    with _reaped(_capture(empty_db, broker, topic_prefix, slot_name, tmp_path)) as first:
        first.start(wait=False)
        _await_log(first, "snapshot started")
        # Held mid-snapshot for sure: a snapshot ends only once the broker acknowledged all.
        _hang(broker)
        try:
            asked = time.monotonic()
            assert first.terminate(timeout=90) == 0
            assert time.monotonic() - asked < STOP_BOUND_S
        finally:
            _unhang(broker)
    assert "stopped during the snapshot" in _full_log(first)
    interrupted = _markers(broker, topic_prefix, slot_name)
    assert [m.status for m in interrupted] == [MarkerKind.SNAPSHOT_START]  # no SNAPSHOT_END
    old_epoch = interrupted[0].epoch_lsn
    # Rows written between the stop and the restart belong to the new epoch's snapshot.
    with empty_db.connect() as conn:
        conn.execute("INSERT INTO stop_probe VALUES (%s, 2)", (RESTART_ROWS + 1,))

    with _reaped(_capture(empty_db, broker, topic_prefix, slot_name, tmp_path)) as second:
        second.start(wait=False)
        _await_log(second, '"msg": "streaming"')  # the slot is active during the snapshot too
        assert "previous snapshot incomplete; starting a new epoch" in _full_log(second)
        markers = _markers(broker, topic_prefix, slot_name)
        ends = [m for m in markers if m.status == MarkerKind.SNAPSHOT_END]
        assert len(ends) == 1 and ends[0].epoch_lsn > old_epoch
        new_epoch = ends[0].epoch_lsn
        reads = [e for e in read_events(broker.bootstrap_servers, topic_prefix, "stop_probe")
                 if e.op == Op.READ]
        old = [e for e in reads if e.source.lsn == old_epoch]
        new = {int(str((e.after or {})["id"])) for e in reads if e.source.lsn == new_epoch}
        assert len(old) < RESTART_ROWS  # the stop cut the first snapshot short
        assert new == set(range(1, RESTART_ROWS + 2))
        assert second.terminate() == 0


# --- readiness follows the broker's acknowledgements ------------------------------------------


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as res:
            return int(res.status), res.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_capture_is_not_ready_within_seconds_while_a_hung_broker_acknowledges_nothing(
        backend: str, hera_db: HeraDB, own_broker: Broker, topic_prefix: str,
        slot_name: str) -> None:
    with running_capture(hera_db.dsn, own_broker.bootstrap_servers, topic_prefix,
                         slot_name, kafka_backend=backend) as svc:
        endpoint = ServiceEndpoint(svc.metrics.registry, svc.metrics.health, free_port())
        url = f"http://127.0.0.1:{endpoint.port}/metrics"
        try:
            assert _readyz(endpoint.port)[0] == 200
            _hang(own_broker)
            try:
                with hera_db.connect() as conn:
                    conn.execute("DELETE FROM core_relationships WHERE relationship_type = "
                                 "'SERVICE_IN_CATEGORY'")
                # The producer's own timeout is 30 s; readiness must not wait for it.
                wait_until(lambda: _readyz(endpoint.port)[0] == 503, 12,
                           "/readyz to answer 503 while the broker acknowledges nothing")
                assert "acknowledged nothing" in _readyz(endpoint.port)[1]
                assert scrape(url, "hera_capture_ready") == 0
            finally:
                _unhang(own_broker)
            wait_until(lambda: _readyz(endpoint.port)[0] == 200, 60,
                       "/readyz to answer 200 once the broker acknowledges again")
            assert scrape(url, "hera_capture_ready") == 1
            events = wait_for_events(own_broker.bootstrap_servers, topic_prefix,
                                     lambda evs: any(e.op == Op.DELETE for e in evs))
        finally:
            endpoint.close()
    assert any(e.op == Op.DELETE for e in events)


# --- the reconnect back-off -------------------------------------------------------------------


def test_reconnect_back_off_starts_from_the_shortest_wait_again_once_streaming_resumed(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hera.capture")
    waits: list[float] = []
    with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         max_backoff_s=30.0):
        for _ in range(4):
            ended = _end_walsender(hera_db, slot_name)
            gone = time.monotonic()

            def resumed(old: int = ended) -> bool:
                pid = _walsender_pid(hera_db, slot_name)
                return pid is not None and pid != old

            wait_until(resumed, 30, "the stream to resume after its walsender ended")
            waits.append(time.monotonic() - gone)
        with hera_db.connect() as conn:
            conn.execute("UPDATE core_relationships SET version = version + 1 "
                         "WHERE relationship_type = 'SERVICE_IN_CATEGORY'")
        wait_for_events(broker.bootstrap_servers, topic_prefix,
                        lambda evs: any(e.op == Op.UPDATE for e in evs))
    backoffs = [float(getattr(r, "backoff_s", -1)) for r in caplog.records
                if r.getMessage() == "stream interrupted; retrying"]
    # Four faults, each after the stream had resumed: each waits the shortest back-off
    # (before: 0.5, 1, 2, 4 s, and 30 s after a few more).
    assert backoffs == [0.5, 0.5, 0.5, 0.5]
    assert max(waits) < 5, waits


# --- a stop mid-snapshot, seen from replay ----------------------------------------------------


class _StopOn(logging.Handler):
    """Sets ``stop`` when capture logs ``message``: a stop at a known place, in-process."""

    def __init__(self, stop: threading.Event, message: str) -> None:
        super().__init__()
        self.stop, self.message = stop, message

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.stop.set()


def _change(conn: psycopg.Connection[Any], tag: str) -> int:
    """One captured transaction; returns the WAL position right after it."""
    conn.execute("UPDATE core_relationships SET relationship_type = %s, version = version + 1 "
                 "WHERE id IN (SELECT id FROM core_relationships ORDER BY id LIMIT 3)", (tag,))
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def test_points_between_an_epoch_and_the_next_after_a_stop_mid_snapshot_are_refused(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from click.testing import CliRunner

    from replay.cli import main as replay

    archive = tmp_path / "archive"
    archiver = start_archiver(broker.bootstrap_servers, topic_prefix, archive,
                              tmp_path / "archiver.log")
    pipe = Pipeline(hera_db.dsn, archive)
    fast = {"heartbeat_interval_s": 0.5, "confirm_interval_s": 0.1}
    caplog.set_level(logging.INFO, logger="hera.capture")  # _StopOn hears "snapshot started"
    try:
        with hera_db.connect() as conn:
            with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix,
                                 slot_name, **fast):
                first = _change(conn, "FIRST_EPOCH")
                pipe.sync()
            # A new snapshot asked for, and a stop as soon as it has begun.
            stop = threading.Event()
            svc = open_capture(capture_options(CaptureSettings(
                dsn=hera_db.dsn, bootstrap_servers=broker.bootstrap_servers, slot=slot_name,
                topic_prefix=topic_prefix, new_snapshot=True, heartbeat_interval_s=0.5,
                confirm_interval_s=0.1)), stop=stop)
            handler = _StopOn(stop, "snapshot started")
            logging.getLogger("hera.capture").addHandler(handler)
            try:
                svc.run(stop)
            finally:
                logging.getLogger("hera.capture").removeHandler(handler)
            assert svc.phase == "snapshot"
            interrupted = svc.epoch_lsn
            inside = _change(conn, "WHILE_STOPPED")
            with running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix,
                                 slot_name, **fast) as again:
                assert again.epoch_lsn > inside  # a new epoch, not the interrupted one
                after = again.epoch_lsn
                _change(conn, "THIRD_EPOCH")
                pipe.sync()
    finally:
        archiver.terminate()
        archiver.wait(30)

    def replay_until(lsn: int) -> tuple[int, str]:
        res = CliRunner().invoke(replay, ["--archive", str(archive), "--table",
                                          "public.core_relationships", "--until",
                                          format_lsn(lsn), "--output", str(tmp_path / "r.csv")])
        return res.exit_code, res.output

    for point in (interrupted, inside):  # the stopped epoch's snapshot, a change after it
        code, output = replay_until(point)
        assert code == 1, (format_lsn(point), output)
        errors = [ln for ln in output.splitlines() if ln.startswith("replay: error:")]
        assert len(errors) == 1 and "gap from" in errors[0], output
    assert not (tmp_path / "r.csv").exists()
    for point in (first, after):  # either side answers
        code, output = replay_until(point)
        assert code == 0, (format_lsn(point), output)
