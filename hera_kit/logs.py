"""Structured logs: one JSON object per line on stderr, secrets never included."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# ``password=x`` in DSNs; ``user:x@`` in URLs (only before an ``@``: ``http://host:9000/p``
# carries a port, not a password).
_PASSWORD = re.compile(r"(password\s*=\s*)[^\s@]+|(://[^:/@\s]+:)[^\s@]+(?=@)",
                       re.IGNORECASE)
# URL query secrets (?token=, &secret=, &sig=, ...) and Slack webhook paths (the path is the
# credential): the alert webhooks' URLs may reach a log line through an exception text.
_QUERY_SECRET = re.compile(r"([?&](?:token|secret|signature|sig|key|api_key|apikey|"
                           r"access_token)=)[^&\s]+", re.IGNORECASE)
_SLACK_HOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)\S+")


def redact(text: str) -> str:
    """Hide secrets: passwords in DSNs/URLs (``password=x``, ``user:x@host``), secret
    query parameters, Slack webhook paths. The one redactor of every service."""
    text = _PASSWORD.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + "***", text)
    return _SLACK_HOOK.sub(lambda m: m.group(1) + "***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for k, v in vars(record).items():
            if k not in _STD:
                out[k] = redact(v) if isinstance(v, str) else v
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class _NoSlowStepNotes(logging.Filter):
    """Drops kafka-python's "Task ... ran for 0.177s (>0.100s threshold). It is blocking the
    event loop" diagnostic: on a busy host any descheduled step passes 0.1 s, nothing an
    operator can act on, and it turned a refusal's one line into two (seen under parallel
    tests). Every other kafka-python warning stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "threshold). It is blocking the event loop" not in record.getMessage()


_SLOW_STEP_FILTER = _NoSlowStepNotes()


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level_option(default: str | None = "INFO") -> Callable[[F], F]:
    """``--log-level`` of every service, from ``HERA_LOG_LEVEL`` too; an unknown level is
    click's one usage line (logging's own check raised a traceback after start-up)."""
    return click.option("--log-level", type=click.Choice(LEVELS, case_sensitive=False),
                        default=default, show_default=default is not None,
                        envvar="HERA_LOG_LEVEL", help="log level [env HERA_LOG_LEVEL]")


def configure(level: str = "INFO") -> None:
    """``hera.*`` at ``level``; every other logger (kafka-python's reconnect warnings, the
    modules logging under their own name) at WARNING, through the same JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("hera")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    top = logging.getLogger()
    # replace only our own handler of a previous call: others (pytest's capture) stay
    top.handlers[:] = [h for h in top.handlers if not getattr(h, "hera_json", False)]
    handler.hera_json = True  # type: ignore[attr-defined]
    top.addHandler(handler)
    if top.level == logging.NOTSET or top.level > logging.WARNING:
        top.setLevel(logging.WARNING)
    quiet_slow_step_notes()


def quiet_slow_step_notes() -> None:
    """Leave kafka-python's slow-step diagnostic out of the logs (see ``_NoSlowStepNotes``)."""
    selector = logging.getLogger("kafka.net.selector")
    if _SLOW_STEP_FILTER not in selector.filters:
        selector.addFilter(_SLOW_STEP_FILTER)
