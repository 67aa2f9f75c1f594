"""The webhook body and its signature; the outbox delivers each alert to each sink once."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.detect.alerts import Alert
from consumers.detect.errors import SinkError
from consumers.detect.metrics import DetectMetrics
from consumers.detect.outbox import Outbox
from consumers.detect.state import Batch, StateStore
from consumers.detect.webhook import WebhookSink, signature, slack_text
from tests.detect_fixtures import REL, Tx, fixed_clock, link, make_detector, run


def alerts(n: int = 1) -> list[Alert]:
    out: list[Alert] = []
    for _ in range(n):
        tx = Tx()
        for _ in range(11):
            tx.delete(REL, link("org"))
        out += run(make_detector(), tx)
    return out


def test_the_signature_is_the_hmac_sha256_of_timestamp_and_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("k", "1700000000", b"{}") == "sha256=" + expected


def test_the_json_body_is_the_alert_and_the_slack_body_is_text() -> None:
    (alert,) = alerts()
    plain = WebhookSink("http://h/x", None, "json", fixed_clock)
    assert Alert.model_validate_json(plain.body(alert)) == alert
    slack = json.loads(WebhookSink("http://h/x", None, "slack", fixed_clock).body(alert))
    assert list(slack) == ["text"] and slack["text"] == slack_text(alert)
    # Slack wants &, < and > as entities even inside a code span: it shows them as typed
    assert (alert.replay_command.replace("<", "&lt;").replace(">", "&gt;") in slack["text"]
            and "EMERGENCY" in slack["text"])


class FlakySink:
    def __init__(self, name: str) -> None:
        self.name = name
        self.up = False
        self.got: list[str] = []

    def deliver(self, alert: Alert) -> None:
        if not self.up:
            raise SinkError(f"{self.name} down")
        self.got.append(str(alert.id))

    def close(self) -> None:
        pass


def test_a_sink_that_is_down_is_retried_after_a_back_off_and_the_others_get_it_once(
        tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "s.sqlite", "hera")
    raised = alerts(2)
    store.commit(Batch(released_lsn=1, deadletters=0, offsets={}, alerts=raised))
    good, flaky = FlakySink("kafka"), FlakySink("webhook")
    good.up = True
    clock = [100.0]
    box = Outbox(store, [good, flaky], DetectMetrics(), lambda: "t",
                 monotonic=lambda: clock[0])
    assert box.deliver() == 2
    flaky.up = True
    clock[0] += 0.5  # within the 1 s back-off: not tried
    assert box.deliver() == 2 and flaky.got == []
    clock[0] += 1.0
    assert box.deliver() == 0
    assert good.got == flaky.got == [str(a.id) for a in raised]
    assert store.outbox() == [] and box.deliver() == 0
    # a restart with the same state re-sends nothing
    store.close()
    again = Outbox(StateStore.open(tmp_path / "s.sqlite", "hera"), [good, flaky],
                   DetectMetrics(), lambda: "t")
    assert again.deliver() == 0 and len(good.got) == 2


def test_a_sink_delivery_recorded_before_a_crash_is_not_repeated(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path / "s.sqlite", "hera")
    raised = alerts(1)
    store.commit(Batch(released_lsn=1, deadletters=0, offsets={}, alerts=raised))
    store.delivered_to(str(raised[0].id), "kafka")  # then the process died
    store.close()
    good, other = FlakySink("kafka"), FlakySink("webhook")
    good.up = other.up = True
    box = Outbox(StateStore.open(tmp_path / "s.sqlite", "hera"), [good, other],
                 DetectMetrics(), lambda: "t")
    assert box.deliver() == 0
    assert good.got == [] and other.got == [str(raised[0].id)]


def test_a_webhook_failure_names_the_host_only_and_logs_redact_hook_secrets() -> None:
    from hera_kit.logs import redact

    sink = WebhookSink("http://user:pw@127.0.0.1:9/hook?token=abc", "secret", "json",
                       fixed_clock, timeout_s=1)
    (alert,) = alerts()
    try:
        sink.deliver(alert)
        raise AssertionError("port 9 answered")
    except SinkError as exc:
        text = str(exc)
    assert text.startswith("webhook at 127.0.0.1:9 unreachable")
    assert "pw" not in text and "abc" not in text and "secret" not in text
    assert redact("POST https://hooks.slack.com/services/T0/B0/XYZ failed") == (
        "POST https://hooks.slack.com/services/*** failed")
    assert redact("https://h/x?a=1&token=abc&b=2") == "https://h/x?a=1&token=***&b=2"
    assert redact("host=db password=hunter2 user=x") == "host=db password=*** user=x"
