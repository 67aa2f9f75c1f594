"""Capture settings and logs: validation and secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from capture.settings import CaptureSettings
from hera_kit.logs import redact


def test_tables_accept_a_comma_separated_list() -> None:
    s = CaptureSettings.model_validate(
        {"dsn": "x", "bootstrap_servers": "y", "tables": "public.a, s.b"})
    assert s.tables == ("public.a", "s.b")


@pytest.mark.parametrize("field,value", [("slot", "Bad-Slot"), ("tables", "nodot"),
                                         ("topic_prefix", "a b")])
def test_malformed_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        CaptureSettings.model_validate({"dsn": "x", "bootstrap_servers": "y", field: value})


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERA_DSN", "host=db")
    monkeypatch.setenv("HERA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("HERA_SLOT", "other")
    s = CaptureSettings.model_validate({})
    assert (s.dsn, s.bootstrap_servers, s.slot) == ("host=db", "k:9092", "other")


def test_passwords_are_redacted_from_log_text() -> None:
    assert "s3cret" not in redact("host=db password=s3cret user=x")
    assert "s3cret" not in redact("postgresql://user:s3cret@db/x")
    assert redact("https://me:s3cret@hooks.example/x") == "https://me:***@hooks.example/x"


def test_a_host_and_port_in_a_url_are_not_taken_for_a_password() -> None:
    text = "Error performing PUT http://127.0.0.1:46623/walk/archive in 2.1s"
    assert redact(text) == text


@pytest.mark.parametrize("value", ["public.a,s.b", '["public.a", "s.b"]'])
def test_tables_read_from_the_environment_as_list_or_json(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from consumers.detect.settings import DetectSettings

    monkeypatch.setenv("HERA_TABLES", value)
    s = CaptureSettings.model_validate({"dsn": "x", "bootstrap_servers": "y"})
    d = DetectSettings.model_validate({"bootstrap_servers": "y"})
    assert s.tables == d.tables == ("public.a", "s.b")
