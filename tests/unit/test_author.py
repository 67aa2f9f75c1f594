"""The author of a transaction without a database: the message's parser, the event's shape
(old readers keep reading authorless records; the archiver's fast path stays exact), the
decoders' tolerance of hand-made bytes, and the alert's escaping for terminals and Slack."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pyarrow as pa
import pytest

from capture.author import AuthorError, author_phrase, parse_author, printable
from capture.decoding import Message
from capture.decoding.pgoutput import PgOutputDecoder
from capture.decoding.wal2json import Wal2JsonDecoder
from capture.event import (
    Author,
    ChangeEvent,
    Op,
    TransactionEvent,
    author_json,
    change_event_json,
)
from consumers.archive.bulk_parse import BulkChangeParser
from consumers.detect.alerts import Alert
from consumers.detect.assembler import CompletedTransaction
from consumers.detect.webhook import slack_text
from replay.settings import ReplaySettings
from tests.detect_fixtures import REL, Tx, link, make_detector

# What sql/10_author.sql emits (json_build_object's spacing), for one transaction.
SQL_MESSAGE = (
    '{"db_user" : "migrator", "session_user" : "migrator", "application_name" : "alembic", '
    '"client_addr" : "10.0.0.5", "client_port" : 50412, "backend_pid" : 4242, '
    '"actor" : "deploy-42", "context" : "{\\"ticket\\": \\"OPS-7\\"}", '
    '"context_format" : "json", "capped" : []}')
MIGRATOR = parse_author(SQL_MESSAGE)


def _event(author: Author | None, position: int = 0) -> bytes:
    return change_event_json(
        before={"id": "r1"}, after=None, op=Op.DELETE, ts_ms=1, name="hera", db="hera",
        schema="public", table="core_relationships", tx_id=845, lsn=10, commit_ts_us=1_000,
        snapshot="false", commit_lsn=99, position=position, table_order=position + 1,
        key={"id": "r1"}, types={"id": "uuid"},
        author=None if author is None else author_json(author))


def test_the_sql_message_becomes_the_author_with_every_field() -> None:
    assert Author(
        db_user="migrator", session_user="migrator", application_name="alembic",
        client_addr="10.0.0.5", client_port=50412, backend_pid=4242, actor="deploy-42",
        context='{"ticket": "OPS-7"}', context_format="json") == MIGRATOR


@pytest.mark.parametrize("content, reason", [
    ("not json", "not the hera.author object"),
    ('{"db_user": "x", "password": "p"}', "not the hera.author object"),
    ('{"actor": "' + "a" * 257 + '"}', "actor longer than its cap of 256 bytes"),
    ('{"context": "' + "c" * 4097 + '", "context_format": "text"}', "cap of 4096 bytes"),
    ('{"context": "c"}', "context_format"),
    ('{"capped": ["db_user"]}', "capped may only name"),
    ('{"backend_pid": -1}', "backend_pid out of range"),
])
def test_a_message_that_is_not_the_documented_object_is_refused_with_its_reason(
        content: str, reason: str) -> None:
    with pytest.raises(AuthorError, match=reason):
        parse_author(content)


def test_records_without_an_author_are_written_as_before_the_field_existed() -> None:
    end = TransactionEvent(status="END", id="845:99", xid=845, commit_lsn=99, ts_ms=1,
                           ts_us=1_000)
    assert b"author" not in end.to_json() and b"author" not in _event(None)
    with_author = end.model_copy(update={"author": MIGRATOR})
    assert TransactionEvent.model_validate_json(with_author.to_json()).author == MIGRATOR


def test_the_fast_event_json_with_an_author_equals_the_models_json() -> None:
    raw = _event(MIGRATOR)
    event = ChangeEvent.from_json(raw)
    assert event.transaction is not None and event.transaction.author == MIGRATOR
    assert event.to_json() == raw


def test_the_archivers_fast_path_accepts_events_with_and_without_an_author_exactly() -> None:
    values = [_event(MIGRATOR, 0), _event(None, 1),
              _event(MIGRATOR, 2).replace(b'"author":{', b'"author": {')]
    table, slow = BulkChangeParser().parse(values)
    assert table.num_rows == 2 and slow == [2]  # another spelling: the model decides


def test_author_bytes_that_are_not_utf8_reach_the_parser_and_stop_nothing() -> None:
    head = b"M" + struct.pack("!BQ", 1, 0x10) + b"hera.author\x00"
    decoded = PgOutputDecoder([], None, "pub").decode(  # type: ignore[arg-type]
        head + struct.pack("!I", 2) + b"\xff\x00", 0x10)
    assert isinstance(decoded, Message) and decoded.content == "\ufffd\x00"
    w2j = (b'{"action":"M","xid":845,"lsn":"0/10","transactional":true,'
           b'"prefix":"hera.author","content":"\xff"}')
    assert Wal2JsonDecoder([]).decode(w2j, 0x10) == Message(0x10, "hera.author", "\ufffd",
                                                             True)
    with pytest.raises(AuthorError):
        parse_author("\ufffd")


def test_untrusted_text_is_escaped_for_terminals_and_capped() -> None:
    assert printable("deploy\n\x1b[31mred\u202e") == "deploy\\n\\x1b[31mred\\u202e"
    assert printable("x" * 100) == "x" * 80 + "…"


def test_the_phrase_names_role_application_client_and_actor_and_says_when_unknown() -> None:
    assert author_phrase(MIGRATOR) == (
        "role migrator (application alembic, client 10.0.0.5, actor deploy-42)")
    local = Author(db_user="app", session_user="login", actor=None)
    assert author_phrase(local) == "role app (session user login, client local socket)"
    assert "unknown author" in author_phrase(None)


def _mass_alert(author: Author | None) -> tuple[Alert, int]:
    tx = Tx()
    for _ in range(11):
        tx.delete(REL, link("org"))
    detector = make_detector()
    kept = tuple(e for e in tx.events if detector.keeps(e))
    (alert,) = detector.evaluate(CompletedTransaction(
        tx.xid, tx.commit_lsn, tx.commit_us, kept, {REL: 11}, author=author))
    return alert, tx.xid


def test_the_alert_names_the_author_and_the_actors_undo_command() -> None:
    alert, xid = _mass_alert(MIGRATOR)
    assert (f"(transaction {xid}), by role migrator (application alembic, client "
            "10.0.0.5, actor deploy-42)") in alert.message
    assert alert.author == MIGRATOR
    assert alert.actor_replay_command is not None
    assert "--revert-actor deploy-42" in alert.actor_replay_command
    assert json.loads(alert.to_json())["author"]["actor"] == "deploy-42"


def test_slack_text_cannot_be_formatted_or_mention_anyone_through_the_author() -> None:
    hostile = Author(db_user="m", application_name="<!channel> *bold*",
                     actor="`x` _y_ ~z~ <http://evil|click>")
    text = slack_text(_mass_alert(hostile)[0])
    body = text.split("\n")[0].split(": ", 1)[1]
    assert not any(ch in body for ch in "<>*_~`")
    assert "&lt;!channel&gt;" in body


def test_revert_xid_reads_one_id_or_several_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERA_REVERT_XID", "845")
    assert ReplaySettings().revert_xid == [845]
    monkeypatch.setenv("HERA_REVERT_XID", "[845, 846]")
    assert ReplaySettings().revert_xid == [845, 846]


def test_an_archive_written_before_the_author_reads_null_authors_and_gains_the_column(
        tmp_path: Path) -> None:
    from deltalake import DeltaTable, write_deltalake

    from consumers.archive.commit_state import FORMAT_KEY, FORMAT_VERSION
    from consumers.archive.reader import connect_history
    from consumers.archive.segments import TABLE_SCHEMA, to_table_rows, transactions_table
    from consumers.archive.store import ArchiveStore

    old_schema = pa.schema([f for f in TABLE_SCHEMA if f.name != "author"])
    dt = DeltaTable.create(str(tmp_path), old_schema, partition_by=["kind"], name=FORMAT_KEY,
                           description=f"format {FORMAT_VERSION}: every change",
                           configuration={"delta.appendOnly": "true"})
    end = TransactionEvent(status="END", id="7:70", xid=7, commit_lsn=70, ts_ms=1, ts_us=1_000)
    write_deltalake(dt, to_table_rows("transactions", transactions_table([end])).drop_columns(
        ["author"]), mode="append")
    before = connect_history(tmp_path).sql(
        "SELECT xid, db_user, actor, context FROM transactions").fetchall()
    assert before == [(7, None, None, None)]
    with ArchiveStore.open_or_create(tmp_path, create=False) as store:
        store.append(transactions=[end.model_copy(update={
            "id": "8:80", "xid": 8, "commit_lsn": 80, "author": MIGRATOR})])
    after = connect_history(tmp_path).sql(
        "SELECT xid, db_user, actor, context ->> 'ticket' FROM transactions ORDER BY xid"
    ).fetchall()
    assert after == [(7, None, None, None), (8, "migrator", "deploy-42", "OPS-7")]
