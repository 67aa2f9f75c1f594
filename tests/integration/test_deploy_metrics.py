"""deploy/'s alert rules and dashboard query only series the services really export: the
names are read from the /metrics of a running capture, archive and detector."""

from __future__ import annotations

import contextlib
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from devstack.broker import Broker
from devstack.ports import free_port
from devstack.waiting import wait_until
from tests.capture_fixtures import CaptureProcess
from tests.conftest import HeraDB
from tests.deploy_fixtures import (
    dashboard_expressions,
    exported_names,
    metric_names,
    rule_expressions,
)
from tests.integration.archive_support import CONSUMERS, start_archiver


def metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


def test_every_metric_the_rules_and_the_dashboard_use_is_served_by_a_running_service(
        hera_db: HeraDB, broker: Broker, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("capture", "archive", "detect")}
    cap = CaptureProcess(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                         ["--metrics-port", str(ports["capture"])], tmp_path / "capture.log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cap.start()
        assert cap.proc is not None
        procs.append(cap.proc)
        procs.append(start_archiver(broker.bootstrap_servers, topic_prefix,
                                    tmp_path / "archive", tmp_path / "archive.log", "WARNING",
                                    "--metrics-port", str(ports["archive"])))
        procs.append(subprocess.Popen(
            [CONSUMERS, "detect", "--bootstrap-servers", broker.bootstrap_servers,
             "--topic-prefix", topic_prefix, "--state-dir", str(tmp_path / "state"),
             "--metrics-port", str(ports["detect"])],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "detect.log").open("ab")))
        texts: dict[str, str] = {}
        used = metric_names(rule_expressions()) | metric_names(dashboard_expressions())

        def exported() -> set[str]:
            return set().union(*(exported_names(t) for t in texts.values()))

        def served() -> bool:
            for name, port in ports.items():
                texts[name] = metrics(port)
            # A service serves /metrics as soon as it starts and registers a series once the
            # part that owns it is open (the archive's once its store is, the slot's after a
            # first background reading): wait for every name, then say which never came.
            return all(texts.values()) and not used - exported()
        with contextlib.suppress(TimeoutError):  # the assertion below names what is missing
            wait_until(served, 60, "the three services' /metrics with every series")
        assert used - exported() == set()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
