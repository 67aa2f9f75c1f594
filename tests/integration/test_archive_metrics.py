"""``consumers archive --metrics-port``: Prometheus text and probes, read over HTTP as
Prometheus and Kubernetes would."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

from devstack.broker import Broker
from devstack.ports import free_port
from tests.archive_fixtures import wait_for, workload
from tests.integration.archive_support import publish, start_archiver
from tests.s3_fixtures import ArchiveTarget


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return -1, ""


def _metric(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def test_the_archiver_exposes_its_progress_and_is_ready_only_while_the_broker_answers(
        own_broker: Broker, topic_prefix: str, tmp_path: Path) -> None:
    target = ArchiveTarget("local", str(tmp_path / "archive"), {})
    log, port = tmp_path / "a.log", free_port()
    changes, ends = workload(transactions=100, per_txn=4)
    publish(own_broker.bootstrap_servers, topic_prefix, changes, ends)
    proc = start_archiver(own_broker.bootstrap_servers, topic_prefix, target, log, "WARNING",
                          "--metrics-port", str(port))
    try:
        wait_for(lambda: _get(port, "/readyz")[0] == 200, 60, "the archiver to be ready")
        assert _get(port, "/healthz") == (200, "live\n")

        def consumed() -> float | None:
            return _metric(_get(port, "/metrics")[1], "hera_archive_records_consumed_total")

        wait_for(lambda: consumed() == 500, 60, "500 records consumed")
        text = _get(port, "/metrics")[1]
        topic = f"{topic_prefix}.transaction"
        last = [float(v) for v in re.findall(
            rf'^hera_archive_last_committed_offset{{partition="\d+",topic="{re.escape(topic)}"}}'
            r" (\S+)$", text, re.M)]
        assert sum(v + 1 for v in last) == 100  # next offsets of all its partitions
        assert (_metric(text, "hera_archive_batches_committed_total") or 0) >= 1
        assert _metric(text, "hera_archive_dead_letters_total") == 0
        assert _metric(text, "hera_archive_identity_checks_failed_total") == 0
        assert _metric(text, "hera_archive_consumer_lag_seconds") is not None
        assert _metric(text, "hera_archive_consumer_lag_records") is not None
        own_broker.stop()
        wait_for(lambda: _get(port, "/readyz")[0] == 503, 90, "not ready while the broker is down")
        assert "broker unreachable" in _get(port, "/readyz")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
