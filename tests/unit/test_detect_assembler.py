"""Transactions are released whole, once, and in commit order, whatever the arrival order."""

from __future__ import annotations

from consumers.detect.assembler import Assembler
from tests.detect_fixtures import DYN, REL, Tx, link, role

TABLES = frozenset({REL, DYN})
TX_TOPIC = ("hera.transaction", 0)
REL_TOPIC = ("hera.public.core_relationships", 0)
DYN_TOPIC = ("hera.public.core_dynamic_data", 0)


def make() -> Assembler:
    return Assembler(TABLES, 0, keep=lambda e: True)


def two_table_tx() -> Tx:
    return Tx().delete(REL, link("o")).delete(DYN, role("u", "o")).delete(REL, link("o"))


def test_a_transaction_waits_for_its_end_and_every_event() -> None:
    a, tx = make(), two_table_tx()
    a.add_event(tx.events[0], REL_TOPIC, 0)
    a.add_end(tx.end(), TX_TOPIC, 0)
    a.add_event(tx.events[2], REL_TOPIC, 1)
    assert list(a.ready()) == []
    a.add_event(tx.events[1], DYN_TOPIC, 0)
    (done,) = list(a.ready())
    assert [e.position for e in done.events] == [0, 1, 2]
    assert done.counts == {REL: 2, DYN: 1}


def test_transactions_are_released_in_commit_order_even_when_a_later_one_completes_first(
) -> None:
    a = make()
    first, second = Tx().delete(REL, link("o")), Tx().delete(REL, link("o"))
    a.add_end(first.end(), TX_TOPIC, 0)
    a.add_end(second.end(), TX_TOPIC, 1)
    a.add_event(second.events[0], REL_TOPIC, 0)
    assert list(a.ready()) == []
    a.add_event(first.events[0], DYN_TOPIC, 5)
    assert [t.xid for t in a.ready()] == [first.xid, second.xid]


def test_events_re_sent_by_capture_are_counted_once() -> None:
    a, tx = make(), two_table_tx()
    for offset, e in enumerate([*tx.events, *tx.events]):
        a.add_event(e, REL_TOPIC, offset)
    a.add_end(tx.end(), TX_TOPIC, 0)
    (done,) = list(a.ready())
    assert len(done.events) == 3 and a.duplicates == 3


def test_records_of_released_transactions_are_dropped_after_a_restart() -> None:
    tx = two_table_tx()
    a = Assembler(TABLES, tx.commit_lsn, keep=lambda e: True)
    a.add_event(tx.events[0], REL_TOPIC, 0)
    a.add_end(tx.end(), TX_TOPIC, 0)
    assert list(a.ready()) == [] and a.pending_count == 0


def test_a_transaction_of_tables_not_watched_completes_on_its_end() -> None:
    a = Assembler(frozenset({REL}), 0, keep=lambda e: True)
    tx = Tx().delete(DYN, role("u", "o"))
    a.add_end(tx.end(), TX_TOPIC, 3)
    (done,) = list(a.ready())
    assert done.events == ()


def test_low_water_is_the_oldest_offset_of_unreleased_transactions() -> None:
    a = make()
    done, pending = Tx().delete(REL, link("o")), two_table_tx()
    a.add_event(done.events[0], REL_TOPIC, 10)
    a.add_end(done.end(), TX_TOPIC, 4)
    a.add_event(pending.events[0], REL_TOPIC, 11)
    a.add_end(pending.end(), TX_TOPIC, 5)
    assert len(list(a.ready())) == 1
    assert a.low_water() == {REL_TOPIC: 11, TX_TOPIC: 5}


def test_events_the_rules_do_not_keep_still_count_toward_completion() -> None:
    a = Assembler(TABLES, 0, keep=lambda e: False)
    tx = two_table_tx()
    for i, e in enumerate(tx.events):
        a.add_event(e, REL_TOPIC, i)
    a.add_end(tx.end(), TX_TOPIC, 0)
    (done,) = list(a.ready())
    assert done.events == () and sum(done.counts.values()) == 3
