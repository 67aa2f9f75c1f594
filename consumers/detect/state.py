"""The detector's state file (SQLite): state, consumed offsets and the alert outbox together.

One SQLite transaction per batch writes the memberships that changed, the removal window, the
highest evaluated commit LSN, the offsets to restart from and the alerts raised. SIGKILL at
any instant leaves either the batch before or the batch after: a restart re-reads exactly
the records whose effects are not in the file, so it neither re-alerts nor misses. Alerts
leave through the outbox: delivered after the commit; each sink's delivery is recorded as
it happens (so a restart re-delivers only to the sinks that had not taken it) and the row is
marked delivered once every sink took it.

The stream's identity (capture/identity.py StreamIdentity: topic prefix, Kafka cluster id,
PostgreSQL system identifier, database, slot, epoch), the Kafka topic ids and the tables
capture said it streams are stored in ``meta`` in the same transaction as the offsets: the
offsets mean something only on that stream.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from consumers.detect.alerts import Alert
from consumers.detect.errors import StateFileError
from consumers.detect.memberships import Membership
from hera_kit.identity import StreamIdentity

FORMAT_VERSION = 2  # 2: identity + captured tables in meta, per-sink outbox deliveries

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition));
CREATE TABLE IF NOT EXISTS memberships (
    key TEXT PRIMARY KEY, user_id TEXT NOT NULL, organization_id TEXT NOT NULL,
    lsn INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS removal_window (
    commit_us INTEGER NOT NULL, organization_id TEXT NOT NULL, removed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerted_scopes (scope TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL,
    delivered_at TEXT);
CREATE TABLE IF NOT EXISTS outbox_sinks (
    id TEXT NOT NULL, sink TEXT NOT NULL, PRIMARY KEY (id, sink));
"""
# format 1 -> 2: the outbox keeps delivered rows, marked (an audit trail of what was sent)
_MIGRATE_1 = "ALTER TABLE outbox ADD COLUMN delivered_at TEXT"
_STREAM_TABLES = ("offsets", "memberships", "removal_window", "alerted_scopes")

TopicPartitionKey = tuple[str, int]


@dataclass
class LoadedState:
    released_lsn: int
    deadletters: int
    offsets: dict[TopicPartitionKey, int]
    memberships: list[tuple[str, str, str, int]]
    window: list[tuple[int, str, int]]
    alerted: set[str]
    identity: StreamIdentity | None = None
    captured_tables: tuple[str, ...] | None = None  # None: no marker seen yet
    topic_ids: dict[str, str] = field(default_factory=dict)  # topic -> Kafka topic id


@dataclass
class Batch:
    """Everything one poll batch changed, written in one transaction."""

    released_lsn: int
    deadletters: int
    offsets: dict[TopicPartitionKey, int]
    memberships: dict[str, Membership | None] = field(default_factory=dict)
    window_added: list[tuple[int, str, int]] = field(default_factory=list)
    window_cutoff_us: int | None = None
    alerted: set[str] | None = None  # None: unchanged
    alerts: list[Alert] = field(default_factory=list)
    identity: StreamIdentity | None = None  # None: unchanged
    captured_tables: tuple[str, ...] | None = None  # None: unchanged
    topic_ids: dict[str, str] | None = None  # None: unchanged


def _lock(path: Path) -> IO[bytes]:
    """One detector per state file, as one archiver per archive: a second one would read
    the same offsets and raise every alert again. ``flock`` on ``<state>.lock``, held while
    the store is open and released by the kernel when the process dies (no stale lock)."""
    where = path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock").open("ab")
    except (FileExistsError, NotADirectoryError):
        raise StateFileError(f"{where} is not a directory: pass a directory as --state-dir "
                             "(or a file path as --state)") from None
    except OSError as exc:
        raise StateFileError(f"cannot use {where} for the detector's state: "
                             f"{exc.strerror or type(exc).__name__}: pass another "
                             "--state-dir") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StateFileError(f"{path} is in use by another detector (lock on {path.name}"
                             ".lock); run one detector per state file") from None
    return lock


class StateStore:
    def __init__(self, conn: sqlite3.Connection, path: Path,
                 lock: IO[bytes] | None = None) -> None:
        self._conn = conn
        self.path = path
        self._lock = lock

    @classmethod
    def open(cls, path: Path, topic_prefix: str) -> StateStore:
        """Open (or create) the state file of the detector for ``topic_prefix``; refuses a
        state file another detector holds (StateFileError)."""
        lock = _lock(path)
        try:
            return cls._open(path, topic_prefix, lock)
        except BaseException:
            lock.close()
            raise

    @classmethod
    def _open(cls, path: Path, topic_prefix: str, lock: IO[bytes]) -> StateStore:
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, too
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.OperationalError as exc:  # a directory, no permission
            raise StateFileError(f"cannot open {path} as the detector's state file ({exc}); "
                                 "pass another --state path") from None
        except sqlite3.DatabaseError as exc:
            raise StateFileError(
                f"{path} is not a detector state file ({exc}); pass another --state path"
            ) from exc
        if tables and "meta" not in tables:
            conn.close()
            raise StateFileError(
                f"{path} is an SQLite file but not a detector state file; nothing was changed:"
                " pass another --state path")
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format_version", str(FORMAT_VERSION)), ("topic_prefix", topic_prefix),
                ("released_lsn", "0"), ("deadletters", "0")])
            conn.execute("COMMIT")
        else:
            version = int(meta.get("format_version", "0"))
            if version == 1:
                conn.execute("BEGIN")
                conn.execute(_MIGRATE_1)
                conn.execute("UPDATE meta SET value = ? WHERE key = 'format_version'",
                             (str(FORMAT_VERSION),))
                conn.execute("COMMIT")
            elif version > FORMAT_VERSION:
                conn.close()
                raise StateFileError(
                    f"{path} was written by a newer hera-guard (state format {version}, this "
                    f"one reads {FORMAT_VERSION}): upgrade hera-guard")
            if meta.get("topic_prefix") != topic_prefix:
                conn.close()
                raise StateFileError(
                    f"{path} holds the state for topic prefix {meta.get('topic_prefix')!r}, "
                    f"not {topic_prefix!r}: pass the matching --topic-prefix or another --state")
        return cls(conn, path, lock)

    def load(self) -> LoadedState:
        c = self._conn
        meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
        return LoadedState(
            released_lsn=int(meta["released_lsn"]),
            deadletters=int(meta["deadletters"]),
            offsets={(t, p): o for t, p, o in c.execute(
                "SELECT topic, partition, next_offset FROM offsets")},
            memberships=list(c.execute(
                "SELECT key, user_id, organization_id, lsn FROM memberships")),
            window=list(c.execute(
                "SELECT commit_us, organization_id, removed FROM removal_window")),
            alerted={r[0] for r in c.execute("SELECT scope FROM alerted_scopes")},
            identity=(StreamIdentity.model_validate_json(meta["identity"])
                      if "identity" in meta else None),
            captured_tables=(tuple(meta["captured_tables"].split(","))
                             if meta.get("captured_tables") else None),
            topic_ids=json.loads(meta.get("topic_ids", "{}")),
        )

    def reset_stream(self) -> None:
        """Forget the stream (``--reset-state``): offsets, identity, memberships, window.
        Alerts not yet delivered stay in the outbox and are still delivered."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        for table in _STREAM_TABLES:
            c.execute(f"DELETE FROM {table}")  # noqa: S608 - our own constant table names
        c.execute("DELETE FROM meta WHERE key IN ('identity', 'captured_tables', 'topic_ids')")
        c.executemany("UPDATE meta SET value = ? WHERE key = ?",
                      [("0", "released_lsn")])
        c.execute("COMMIT")

    def commit(self, batch: Batch) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (str(batch.released_lsn), "released_lsn"),
                (str(batch.deadletters), "deadletters")])
            c.executemany(
                "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                "DO UPDATE SET next_offset = excluded.next_offset",
                [(t, p, o) for (t, p), o in batch.offsets.items()])
            gone = [(k,) for k, m in batch.memberships.items() if m is None]
            c.executemany("DELETE FROM memberships WHERE key = ?", gone)
            c.executemany(
                "INSERT OR REPLACE INTO memberships VALUES (?, ?, ?, ?)",
                [(k, m.user_id, m.organization_id, m.lsn)
                 for k, m in batch.memberships.items() if m is not None])
            if batch.window_cutoff_us is not None:
                c.execute("DELETE FROM removal_window WHERE commit_us <= ?",
                          (batch.window_cutoff_us,))
            c.executemany("INSERT INTO removal_window VALUES (?, ?, ?)", batch.window_added)
            if batch.alerted is not None:
                c.execute("DELETE FROM alerted_scopes")
                c.executemany("INSERT INTO alerted_scopes VALUES (?)",
                              [(s,) for s in sorted(batch.alerted)])
            c.executemany("INSERT OR IGNORE INTO outbox (id, body) VALUES (?, ?)",
                          [(str(a.id), a.model_dump_json()) for a in batch.alerts])
            if batch.identity is not None:
                c.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)",
                          (batch.identity.model_dump_json(),))
            if batch.topic_ids is not None:
                c.execute("INSERT OR REPLACE INTO meta VALUES ('topic_ids', ?)",
                          (json.dumps(batch.topic_ids, sort_keys=True),))
            if batch.captured_tables is not None:
                c.execute("INSERT OR REPLACE INTO meta VALUES ('captured_tables', ?)",
                          (",".join(batch.captured_tables),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def outbox(self) -> list[Alert]:
        """Alerts committed but not yet confirmed delivered, oldest first."""
        return [Alert.model_validate_json(body) for (body,) in self._conn.execute(
            "SELECT body FROM outbox WHERE delivered_at IS NULL ORDER BY seq")]

    def sinks_done(self, alert_id: str) -> set[str]:
        """The sinks that already took this alert (recorded by ``delivered_to``)."""
        return {r[0] for r in self._conn.execute(
            "SELECT sink FROM outbox_sinks WHERE id = ?", (alert_id,))}

    def delivered_to(self, alert_id: str, sink: str) -> None:
        """``sink`` took the alert: committed at once, so a crash never re-sends to it
        (except in the instant between the sink's answer and this commit)."""
        self._conn.execute("INSERT OR IGNORE INTO outbox_sinks VALUES (?, ?)", (alert_id, sink))

    def delivered(self, ids: Iterable[str], now: str = "") -> None:
        """Every sink took these alerts: marked delivered (kept as the record of it)."""
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        c.executemany("UPDATE outbox SET delivered_at = ? WHERE id = ?",
                      [(now or "delivered", i) for i in ids])
        c.execute("COMMIT")

    def pending_count(self) -> int:
        row = self._conn.execute(
            "SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
