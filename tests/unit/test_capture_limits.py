"""capture's size limit and readiness, without a broker: what is refused and what is said."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from capture.metrics import CaptureMetrics
from capture.publish import RECORD_OVERHEAD, EventTooLarge, check_size, refused_as_too_large
from capture.settings import CaptureSettings


def _event(size: int) -> bytes:
    return json.dumps({"source": {"schema": "public", "table": "t", "lsn": 0x16B3748},
                       "commit_lsn": 0x16B3800, "after": {"v": "x" * size}}).encode()


def test_an_event_that_fits_passes_and_one_byte_more_is_refused_naming_row_lsn_and_setting(
        ) -> None:
    key = b'{"id":7}'
    value = _event(1000)
    limit = len(key) + len(value) + RECORD_OVERHEAD
    check_size("hera.public.t", key, value, limit)
    with pytest.raises(EventTooLarge) as refused:
        check_size("hera.public.t", key, value, limit - 1)
    text = str(refused.value)
    assert "\n" not in text
    for part in ('public.t key {"id":7}', "at LSN 0/16B3748", "commit 0/16B3800",
                 f"is {limit} bytes", "--max-message-bytes (HERA_MAX_MESSAGE_BYTES)"):
        assert part in text


def test_a_broker_refusal_names_the_row_and_both_limits_to_raise() -> None:
    text = str(refused_as_too_large("hera.public.t", b'{"id":7}', _event(10), 2 ** 20,
                                    "MessageSizeTooLargeError"))
    assert "public.t key" in text and "max.message.bytes" in text and "1048576" in text


def test_a_record_that_is_not_an_event_is_still_described_by_its_topic() -> None:
    with pytest.raises(EventTooLarge, match=r"hera\.transaction key marker"):
        check_size("hera.transaction", b"marker", b"not json", 10)


@pytest.mark.parametrize("field,value", [
    ("max_message_bytes", 1024 * 1024 - 1), ("max_message_bytes", 1_000_000_001),
    ("confirm_interval_s", 0), ("heartbeat_interval_s", -1), ("max_backoff_s", 0),
    ("snapshot_batch_rows", 0), ("compression", "brotli")])
def test_settings_that_cannot_work_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        CaptureSettings.model_validate({"dsn": "x", "bootstrap_servers": "y", field: value})


def test_the_defaults_hold_a_2_mb_event_compressed_with_lz4() -> None:
    s = CaptureSettings.model_validate({"dsn": "x", "bootstrap_servers": "y"})
    assert s.max_message_bytes == 16 * 1024 * 1024 and s.compression == "lz4"


def test_capture_is_not_ready_before_it_streams_and_the_metric_says_the_same() -> None:
    m = CaptureMetrics()
    assert m.health.state() == (False, "starting")
    assert m.registry.get_sample_value("hera_capture_ready") == 0
    m.health.ready()
    assert m.registry.get_sample_value("hera_capture_ready") == 1
    m.health.not_ready("stream interrupted")
    assert m.health.state() == (False, "stream interrupted")
    assert m.registry.get_sample_value("hera_capture_ready") == 0


class _FakeAdmin:
    """kafka-python's KafkaAdminClient answers, as an Apache Kafka broker gives them."""

    def __init__(self, broker_configs: dict[str, str], topic_limit: int | None = None,
                 alter_result: str = "OK") -> None:
        self.broker_configs = broker_configs
        self.topic_limit = topic_limit
        self.alter_result = alter_result
        self.altered: list[dict[str, str]] = []

    def describe_cluster(self) -> dict[str, object]:
        return {"brokers": [{"broker_id": 1}]}

    def describe_configs(self, resources: list[object], config_filter: str = "all"
                         ) -> dict[str, object]:
        r = resources[0]
        if r.resource_type.name == "BROKER":  # type: ignore[attr-defined]
            return {"broker": {"1": {k: {"value": v} for k, v in self.broker_configs.items()}}}
        name = r.name  # type: ignore[attr-defined]
        limit = {} if self.topic_limit is None else {
            "max.message.bytes": {"value": str(self.topic_limit)}}
        return {"topic": {name: limit}}

    def alter_configs(self, resources: list[object]) -> dict[str, object]:
        r = resources[0]
        self.altered.append(r.configs)  # type: ignore[attr-defined]
        return {"topic": {r.name: self.alter_result}}  # type: ignore[attr-defined]


def test_a_setting_above_the_brokers_request_ceiling_is_refused_naming_both() -> None:
    from capture.errors import ConfigError
    from capture.kafka_admin import check_request_ceiling

    admin = _FakeAdmin({"socket.request.max.bytes": "104857600"})
    check_request_ceiling(admin, 100 * 1024 * 1024)
    with pytest.raises(ConfigError, match=r"socket\.request\.max\.bytes = 104857600"):
        check_request_ceiling(admin, 200 * 1024 * 1024)
    check_request_ceiling(_FakeAdmin({}), 200 * 1024 * 1024)  # not reported: not refused


def test_a_smaller_topic_limit_is_raised_and_a_failed_raise_refuses_with_the_command() -> None:
    from capture.errors import BrokerError
    from capture.kafka_admin import _raise_limits

    admin = _FakeAdmin({}, topic_limit=1048588)
    _raise_limits(admin, ["hera.public.t"], 16 * 1024 * 1024)
    assert admin.altered == [{"max.message.bytes": str(16 * 1024 * 1024)}]
    refusing = _FakeAdmin({}, topic_limit=1048588, alter_result="TopicAuthorizationFailed")
    with pytest.raises(BrokerError, match=r"kafka-configs\.sh --alter") as refused:
        _raise_limits(refusing, ["hera.public.t"], 16 * 1024 * 1024)
    assert "1048588" in str(refused.value) and "TopicAuthorizationFailed" in str(refused.value)
    bigger = _FakeAdmin({}, topic_limit=64 * 1024 * 1024)
    _raise_limits(bigger, ["hera.public.t"], 16 * 1024 * 1024)
    assert bigger.altered == []  # never lowered
