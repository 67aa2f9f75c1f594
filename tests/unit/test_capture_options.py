"""capture's settings -> options -> open: the options carry what the service reads, building a
service touches nothing, and opening one against a database that is not there is one line."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from capture.errors import CaptureError
from capture.options import CaptureOptions, capture_options
from capture.service import CaptureService, open_capture
from capture.settings import CaptureSettings


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(**overrides: object) -> CaptureSettings:
    return CaptureSettings.model_validate({
        "dsn": f"host=127.0.0.1 port={_closed_port()} connect_timeout=5",
        "bootstrap_servers": f"127.0.0.1:{_closed_port()}", **overrides})


def test_the_options_carry_every_setting_of_the_same_name() -> None:
    s = _settings(slot="other", topic_prefix="p", tables="public.a,s.b", topic_partitions=3,
                  plugin="pgoutput", new_snapshot=True, max_in_flight=500,
                  reread_chunk_rows=7, compression="gzip", stop_timeout_s=9.0)
    options = capture_options(s)
    for f in dataclasses.fields(CaptureOptions):
        assert getattr(options, f.name) == getattr(s, f.name), f.name
    assert options.tables == ("public.a", "s.b")


def test_a_service_is_built_without_touching_the_database_or_the_broker() -> None:
    svc = CaptureService(capture_options(_settings()))  # both addresses refuse connections
    assert (svc.phase, svc.decoder, svc.confirmed_lsn) == ("starting", None, 0)


def test_opening_capture_against_no_database_is_one_line_naming_the_dsn_flag() -> None:
    with pytest.raises(CaptureError, match=r"^cannot connect to PostgreSQL: .* \(check --dsn\)$"):
        open_capture(capture_options(_settings()))
