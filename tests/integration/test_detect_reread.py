"""The detector and capture's online re-reads: a re-read of every membership (op r rows in
transactions, their END counting them) raises nothing, holds nothing up, and leaves the
membership state right: the next real orphaning is the one alert."""

from __future__ import annotations

from pathlib import Path

from capture.reread import request_reread
from consumers.detect.alerts import Rule
from devstack.broker import Broker
from tests.capture_fixtures import running_capture, wait_until
from tests.conftest import HeraDB
from tests.integration.test_detect_capture import SINGLE_MEMBERSHIP_USERS, one, released
from tests.integration.test_detect_stream import alerts_on_kafka, running_detector


def test_a_reread_of_every_membership_raises_nothing_and_the_next_orphan_is_the_one_alert(
        broker: Broker, hera_db: HeraDB, topic_prefix: str, slot_name: str,
        tmp_path: Path) -> None:
    with (running_capture(hera_db.dsn, broker.bootstrap_servers, topic_prefix, slot_name,
                          reread_chunk_rows=200) as svc,
          running_detector(broker, topic_prefix, tmp_path / "state.sqlite"),
          hera_db.connect() as conn):
        total = int(one(conn, "SELECT count(*) FROM core_relationships"))
        request_reread(hera_db.dsn, "public.core_relationships")
        wait_until(lambda: any(s.finished for s in svc.rereads.states), 120,
                   "the re-read to finish")
        assert svc.rereads.states[0].rows == total
        lonely = one(conn, SINGLE_MEMBERSHIP_USERS)
        conn.execute("DELETE FROM core_relationships WHERE from_entity_id = %s", (lonely,))
        alerts = alerts_on_kafka(broker, topic_prefix, 1, settle_s=1.5)
    released(hera_db, slot_name)
    assert [a["rule"] for a in alerts] == [Rule.ORPHANED_USER]
    assert alerts[0]["samples"][0]["from_entity_id"] == lonely
