"""The detector knows which stream its state is of, and which tables capture streams."""

from __future__ import annotations

from pathlib import Path

import pytest

from capture.event import MarkerKind, StreamMarker
from consumers.detect.config import RulesConfig, check_settings, load_rules
from consumers.detect.errors import ConfigError, RulesFileError, StreamMismatch
from consumers.detect.stream_check import check_tables, detector_check
from consumers.stream_check import StreamCheck
from hera_kit.identity import StreamIdentity
from tests.detect_fixtures import DYN, REL, SYSTEM_ID

STATE = Path("/srv/state/detect-hera.sqlite")


def marker(db: str = "hera", system_identifier: str | None = SYSTEM_ID,
           slot: str = "s") -> StreamMarker:
    return StreamMarker(status=MarkerKind.PROGRESS, slot=slot, db=db, epoch_lsn=0x100,
                        lsn=0x200, ts_ms=0, tables=(REL, DYN),
                        system_identifier=system_identifier)


def known() -> StreamCheck:
    check = detector_check(STATE, StreamIdentity(topic_prefix="hera",
                                              kafka_cluster_id="cluster-a"))
    check.marker(marker())
    return check


def test_a_first_marker_completes_the_identity_and_marks_it_to_be_stored() -> None:
    check = detector_check(STATE, StreamIdentity(topic_prefix="hera"))
    check.changed = False
    check.marker(marker())
    assert check.changed
    assert (check.identity.system_identifier, check.identity.db, check.identity.slot,
            check.identity.epoch_lsn) == (SYSTEM_ID, "hera", "s", 0x100)


def test_another_kafka_cluster_is_refused_with_the_way_out() -> None:
    with pytest.raises(StreamMismatch) as err:
        known().cluster("cluster-b")
    text = str(err.value)
    assert "'cluster-b', expected 'cluster-a'" in text and "--reset-state" in text
    assert "\n" not in text


@pytest.mark.parametrize(("seen", "named"), [
    (marker(db="other"), "database"),
    (marker(system_identifier="7399"), "PostgreSQL system identifier"),
    (marker(slot="other_slot"), "slot"),
])
def test_a_marker_of_another_database_cluster_or_slot_is_refused(seen: StreamMarker,
                                                                  named: str) -> None:
    with pytest.raises(StreamMismatch, match=named):
        known().marker(seen)


def test_a_marker_written_before_identity_fields_existed_is_accepted() -> None:
    known().marker(marker(system_identifier=None))


def test_stored_offsets_past_the_end_or_before_the_start_or_on_a_missing_topic_are_refused(
) -> None:
    check = known()
    tp = ("hera.transaction", 0)
    check.stored_offsets({tp: 10}, {tp: (0, 10)})  # exactly at the end: fine
    with pytest.raises(StreamMismatch, match=r"ends at offset 3, the state has read it up to"):
        check.stored_offsets({tp: 10}, {tp: (0, 3)})
    with pytest.raises(StreamMismatch, match="now starts at offset 12"):
        check.stored_offsets({tp: 10}, {tp: (12, 20)})
    with pytest.raises(StreamMismatch, match="does not exist on the broker"):
        check.stored_offsets({tp: 10}, {})
    check.stored_offsets({tp: 0}, {})  # never read anything of it: nothing to lose


def test_a_running_position_past_the_fetched_high_watermark_means_the_broker_lost_its_data(
) -> None:
    check = known()
    tp = ("hera.public.core_relationships", 0)
    check.positions({tp: 5}, {tp: 5})
    with pytest.raises(StreamMismatch, match="lost its data"):
        check.positions({tp: 5}, {tp: 1})


def test_a_table_capture_does_not_stream_is_refused_with_the_names_it_knows() -> None:
    with pytest.raises(ConfigError) as err:
        check_tables({"public.core_relationship": "--tables", REL: "--tables"}, (REL, DYN))
    text = str(err.value)
    assert text.startswith("public.core_relationship (--tables): not a table capture streams")
    assert f"capture streams {DYN}, {REL}" in text


def test_a_rule_naming_a_table_the_detector_does_not_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[mass_deletion]\ntable = "public.core_relationship"\n')
    with pytest.raises(ConfigError, match=r"rules mass_deletion.table names "
                                          r"public.core_relationship, which the detector"):
        check_settings(load_rules(path), (REL, DYN), 100)


def test_a_threshold_of_zero_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[mass_deletion]\nper_transaction = 0\n")
    with pytest.raises(RulesFileError, match=r"mass_deletion\.per_transaction"):
        load_rules(path)


def test_a_window_shorter_than_the_poll_is_refused() -> None:
    rules = RulesConfig.model_validate({"mass_deletion": {"window_seconds": 0.05}})
    with pytest.raises(ConfigError, match="shorter than the poll"):
        check_settings(rules, (REL, DYN), 100)


def test_a_re_created_topic_is_refused_whatever_its_offsets() -> None:
    check = known()
    check.topics({"hera.transaction": "id-1"})
    assert check.topics_changed and check.topic_ids == {"hera.transaction": "id-1"}
    check.topics({"hera.transaction": "id-1", "hera.public.t": "id-2"})  # a new topic: kept
    assert check.topic_ids == {"hera.transaction": "id-1", "hera.public.t": "id-2"}
    with pytest.raises(StreamMismatch, match=r"topic hera.transaction was re-created "
                                             r"\(topic id id-9, expected id-1\)"):
        check.topics({"hera.transaction": "id-9"})
