"""The money type's text does not depend on the server's locale: capture pins lc_monetary (with
the other output settings, capture.encoding.SESSION_OPTIONS), so a server whose default is
German (``1.234,56 €``) still yields ``$1,234.56`` in the snapshot and the stream, for both
plugins, and that text read back under the same settings is the same amount."""

from __future__ import annotations

import psycopg
import pytest

from capture.encoding import SESSION_OPTIONS
from capture.event import Op
from devstack.broker import Broker
from tests.capture_fixtures import PLUGINS, running_capture, wait_for_events
from tests.locale_fixtures import AMOUNTS


def _texts(dsn: str, options: str = "") -> list[str]:
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        return [str(r[0]) for r in conn.execute("SELECT amount::text FROM cash ORDER BY id")]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_money_is_the_same_text_whatever_the_servers_lc_monetary(
        money_db: str, broker: Broker, topic_prefix: str, slot_name: str, plugin: str) -> None:
    with running_capture(money_db, broker.bootstrap_servers, topic_prefix, slot_name,
                         tables=("public.cash",), plugin=plugin):
        with psycopg.connect(money_db, autocommit=True) as conn:
            conn.execute("INSERT INTO cash VALUES (2, %s::numeric)", (AMOUNTS[1],))
        events = wait_for_events(broker.bootstrap_servers, topic_prefix,
                                 lambda evs: any(e.op == Op.CREATE for e in evs), table="cash")
    assert _texts(money_db) == ["1.234,56 €", "-0,05 €"]  # the server's default differs
    pinned = _texts(money_db, SESSION_OPTIONS)
    assert pinned == ["$1,234.56", "-$0.05"]
    got = {e.op: e.after["amount"] for e in events if e.after is not None}
    assert got == {Op.READ: pinned[0], Op.CREATE: pinned[1]}
    with psycopg.connect(money_db, autocommit=True, options=SESSION_OPTIONS) as conn:
        back = [conn.execute("SELECT %s::money = %s::numeric::money", (t, a)).fetchone()
                for t, a in zip(pinned, AMOUNTS, strict=True)]
    assert back == [(True,), (True,)]
