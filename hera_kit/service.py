"""What every long-running hera-guard service shares: the HTTP endpoint for Prometheus and
probes, the CLI glue (settings errors -> one line, signals, JSON logs).

One endpoint per service (``--metrics-port``):

- ``/metrics``: the service's Prometheus registry, text format;
- ``/healthz`` (live): 200 while the process runs its loop;
- ``/readyz`` (ready): 200 only while the service does its job (streaming, identity checked),
  503 with the reason otherwise — for docker-compose health checks and Kubernetes probes.

capture/, consumers/ and replay/ all use it; it imports nothing of theirs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn, TypeVar

import click
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError

from hera_kit import logs


class Health:
    """Readiness as the service states it: ``ready()`` once doing its job, ``not_ready(why)``
    when it stops being able to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._reason = "starting"

    def ready(self) -> None:
        with self._lock:
            self._ready, self._reason = True, "ok"

    def not_ready(self, reason: str) -> None:
        with self._lock:
            self._ready, self._reason = False, reason

    def state(self) -> tuple[bool, str]:
        with self._lock:
            return self._ready, self._reason


class ServiceEndpoint:
    """``/metrics``, ``/healthz``, ``/readyz`` on one port, in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, health: Health, port: int,
                 host: str = "127.0.0.1") -> None:
        registry_, health_ = registry, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry_), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"live\n")
                elif path == "/readyz":
                    ok, reason = health_.state()
                    self._send(200 if ok else 503, (reason + "\n").encode())
                else:
                    self._send(404, b"not found: /metrics, /healthz, /readyz\n")

            def _send(self, code: int, body: bytes,
                      ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds would flood the JSON log

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="hera-endpoint")
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fail(command: str, message: str, code: int) -> NoReturn:
    """The one line a command prints when it cannot do its job, then its exit code."""
    click.echo(f"{command}: {logs.redact(message)}", err=True)
    sys.exit(code)


def exit_now(code: int) -> NoReturn:
    """End the process at once with ``code`` (``os._exit``: no interpreter shutdown, no
    waiting for threads or native runtimes), what was printed and logged flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


S = TypeVar("S", bound=BaseModel)


def settings_or_fail(command: str, cls: type[S], given: Mapping[str, Any],
                     code: int = 2) -> S:
    """Build a settings object from the options given (None/() = not given, so the
    environment or the default applies); a bad value is one line naming flag and variable."""
    try:
        return cls(**{k: v for k, v in given.items() if v is not None and v != ()})
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a whole-settings check (e.g. --kafka-config) names its own option
            fail(command, str(err.get("ctx", {}).get("error", err["msg"])), code)
        field = ".".join(str(p) for p in err["loc"])
        flag = field.replace("_", "-")
        fail(command, f"--{flag} (HERA_{field.upper()}): {err['msg']}", code)


def stop_on_signals(on_stop: Callable[[], None] | None = None) -> threading.Event:
    """An event set by SIGTERM/SIGINT: long-running loops finish their batch and stop."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()
        if on_stop is not None:
            on_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
