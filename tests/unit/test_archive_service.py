"""The archiver service's loop: which store failures it waits out (and how it says so) and
which stop it; each attempt gets a fresh Kafka source and a freshly opened table."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from consumers.archive import service
from consumers.archive.layout import ArchiveError, StoreUnavailableError
from consumers.archive.location import archive_location
from consumers.archive.metrics import ArchiveMetrics
from consumers.archive.store import ArchiveStore
from hera_kit.identity import StreamIdentity
from hera_kit.service import Health

OPTIONS = service.ServiceOptions(batch_events=10, flush_interval_s=1.0, compact_interval_s=60.0,
                                 retention_hours=168.0, dedup_capacity=100)
IDENTITY = StreamIdentity(topic_prefix="hera")


class _Store:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Source:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _World:
    """Scripted outcomes: for each attempt, what opening the table and running do."""

    def __init__(self, opens: list[Exception | None], runs: list[Exception | None]) -> None:
        self.opens, self.runs = opens, runs
        self.stores: list[_Store] = []
        self.sources: list[_Source] = []
        self.pauses: list[float] = []
        self.creates: list[bool] = []

    def open_or_create(self, *_: Any, create: bool = True, **__: Any) -> _Store:
        self.creates.append(create)
        outcome = self.opens.pop(0)
        if outcome is not None:
            raise outcome
        self.stores.append(_Store())
        return self.stores[-1]

    def source(self) -> _Source:
        self.sources.append(_Source())
        return self.sources[-1]

    def archiver(self, *_: Any) -> Any:
        world = self

        class _Run:
            def run(self, stop: threading.Event) -> None:
                outcome = world.runs.pop(0)
                if outcome is not None:
                    raise outcome

        return _Run()

    def pause(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return False


def _serve(world: _World, monkeypatch: pytest.MonkeyPatch,
           health: Health | None = None) -> tuple[Health, ArchiveMetrics]:
    monkeypatch.setattr(ArchiveStore, "open_or_create", world.open_or_create)
    monkeypatch.setattr(service, "_archiver", world.archiver)
    monkeypatch.setattr(service, "_checked_identity", lambda *_: IDENTITY)
    health, metrics = health or Health(), ArchiveMetrics()
    service.serve(archive_location("/nowhere"), world.source,  # type: ignore[arg-type]
                  OPTIONS, metrics, health, threading.Event(), pause=world.pause)
    return health, metrics


def _failures(metrics: ArchiveMetrics) -> float:
    return metrics.registry.get_sample_value("hera_archive_store_failures_total") or 0.0


def test_a_passing_store_failure_is_waited_out_with_a_fresh_source_and_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    down = StoreUnavailableError("cannot write to s3://b/a: 503")
    world = _World(opens=[None, down, None], runs=[down, None])
    health, metrics = _serve(world, monkeypatch)
    assert world.pauses == [1.0, 2.0]  # after the failed run, after the failed reopen
    assert world.creates == [True, False, False]  # a reopen never creates a new table
    assert len(world.stores) == 2 and all(s.closed for s in world.stores)
    assert len(world.sources) == 2 and all(s.closed for s in world.sources)
    assert _failures(metrics) == 2
    assert health.state() == (True, "ok")


def test_a_store_failure_at_start_is_a_setting_to_fix_not_a_fault_to_wait_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = _World(opens=[StoreUnavailableError("cannot reach s3://b/a: refused")], runs=[])
    with pytest.raises(StoreUnavailableError):
        _serve(world, monkeypatch)
    assert world.pauses == [] and world.sources == []


def test_a_lasting_store_failure_stops_the_service_and_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    lasting = ArchiveError("cannot write to s3://b/a: SignatureDoesNotMatch")
    world = _World(opens=[None], runs=[lasting])
    health = Health()
    with pytest.raises(ArchiveError, match="SignatureDoesNotMatch"):
        _serve(world, monkeypatch, health)
    assert world.pauses == []
    assert health.state() == (False, "cannot write to s3://b/a: SignatureDoesNotMatch")
    assert world.stores[0].closed and world.sources[0].closed
