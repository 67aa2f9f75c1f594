"""Alerts to an HTTP endpoint: a generic signed JSON POST, or a Slack-compatible text body.

Generic: the body is the alert's JSON; ``X-Hera-Signature: sha256=<hex>`` is the
HMAC-SHA256 of ``<X-Hera-Timestamp>.<body>`` with the shared secret, so the receiver can
check origin and freshness; ``X-Hera-Alert-Id`` is the idempotency key (the same id on
every re-delivery). Slack: ``{"text": ...}`` as incoming webhooks take it (signed the same
way when a secret is set; Slack ignores the headers). The secret and the URL (a Slack URL is
itself a secret) are never logged: errors name the host only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from consumers.detect.alerts import Alert
from consumers.detect.errors import SinkError

WebhookFormat = Literal["json", "slack"]
SIGNATURE_HEADER = "X-Hera-Signature"
TIMESTAMP_HEADER = "X-Hera-Timestamp"
ALERT_ID_HEADER = "X-Hera-Alert-Id"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


# Slack's mrkdwn has no escape character: &, < and > become entities (as Slack asks), and the
# formatting characters become look-alikes, so client-written text (an actor, an application
# name, a smart code) can neither mention @channel, link, nor format the alert.
_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "*": "\u2217",
                        "_": "\uff3f", "~": "\uff5e", "`": "\u02cb"})


_SLACK_CODE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "\u02cb"})


def slack_escape(text: str) -> str:
    return text.translate(_SLACK)


def slack_code(text: str) -> str:
    """Text inside a code span (a command to copy): only what would end or escape it."""
    return text.translate(_SLACK_CODE)


def slack_text(alert: Alert) -> str:
    tx = alert.transaction
    counts = ", ".join(f"{k} {v}" for k, v in sorted(alert.counts.items()))
    undo = f"undo (dry run first): `{slack_code(alert.replay_command)}`"
    if alert.actor_replay_command:
        undo += f"; everything of this actor: `{slack_code(alert.actor_replay_command)}`"
    return (f"*{alert.severity} {alert.rule}*: {slack_escape(alert.message)}\n"
            f"xid {tx.xid} at {tx.commit_lsn} ({tx.commit_time.isoformat()}); {counts}\n"
            + undo)


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: str | None, fmt: WebhookFormat,
                 clock: Callable[[], datetime], timeout_s: float = 5.0) -> None:
        self._url = url
        self._secret = secret
        self._fmt = fmt
        self._clock = clock
        self._timeout = timeout_s
        self.host = urlsplit(url).netloc.rpartition("@")[2] or "?"

    def body(self, alert: Alert) -> bytes:
        if self._fmt == "slack":
            return json.dumps({"text": slack_text(alert)}).encode()
        return alert.to_json()

    def deliver(self, alert: Alert) -> None:
        body = self.body(alert)
        ts = str(int(self._clock().timestamp()))
        headers = {"Content-Type": "application/json", ALERT_ID_HEADER: str(alert.id),
                   TIMESTAMP_HEADER: ts, "User-Agent": "hera-guard-detect"}
        if self._secret:
            headers[SIGNATURE_HEADER] = signature(self._secret, ts, body)
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise SinkError(f"webhook at {self.host} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SinkError(f"webhook at {self.host} unreachable: {reason}") from None
        if not 200 <= status < 300:
            raise SinkError(f"webhook at {self.host} answered HTTP {status}")

    def close(self) -> None:
        pass
