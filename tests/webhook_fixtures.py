"""A webhook endpoint for the detector's tests: a real HTTP server on a free port that checks
each delivery's signature and counts deliveries per alert id."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

SECRET = "s3cret-for-tests"


class Endpoint:
    """A webhook receiver: ``up`` False answers 503; accepted deliveries counted by id."""

    def __init__(self) -> None:
        self.up = True
        self.accepted: Counter[str] = Counter()
        self.refused = 0
        self.bad_signatures = 0
        self.bodies: dict[str, Any] = {}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not endpoint.up:
                    endpoint.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                ts = self.headers["X-Hera-Timestamp"]
                mac = hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256)
                if self.headers["X-Hera-Signature"] != "sha256=" + mac.hexdigest():
                    endpoint.bad_signatures += 1
                alert_id = self.headers["X-Hera-Alert-Id"]
                endpoint.accepted[alert_id] += 1
                endpoint.bodies[alert_id] = json.loads(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    try:
        yield e
    finally:
        e.close()
