"""The detector's state file (SQLite): state, consumed offsets and the alert outbox together.

One SQLite transaction per batch writes the memberships that changed, the removal window, the
highest evaluated commit LSN, the offsets to restart from and the alerts raised. SIGKILL at
any instant leaves either the batch before or the batch after: a restart re-reads exactly
the records whose effects are not in the file, so it neither re-alerts nor misses. Alerts
leave through the outbox: delivered after the commit, deleted once every sink took them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from consumers.detect.alerts import Alert
from consumers.detect.errors import StateFileError
from consumers.detect.memberships import Membership

FORMAT_VERSION = 1

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
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
"""

TopicPartitionKey = tuple[str, int]


@dataclass
class LoadedState:
    released_lsn: int
    deadletters: int
    offsets: dict[TopicPartitionKey, int]
    memberships: list[tuple[str, str, str, int]]
    window: list[tuple[int, str, int]]
    alerted: set[str]


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


class StateStore:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path, topic_prefix: str) -> StateStore:
        """Open (or create) the state file of the detector for ``topic_prefix``."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, too
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
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
            if version > FORMAT_VERSION:
                conn.close()
                raise StateFileError(
                    f"{path} was written by a newer hera-guard (state format {version}, this "
                    f"one reads {FORMAT_VERSION}): upgrade hera-guard")
            if meta.get("topic_prefix") != topic_prefix:
                conn.close()
                raise StateFileError(
                    f"{path} holds the state for topic prefix {meta.get('topic_prefix')!r}, "
                    f"not {topic_prefix!r}: pass the matching --topic-prefix or another --state")
        return cls(conn, path)

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
        )

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
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def outbox(self) -> list[Alert]:
        """Alerts committed but not yet confirmed delivered, oldest first."""
        return [Alert.model_validate_json(body) for (body,) in self._conn.execute(
            "SELECT body FROM outbox ORDER BY seq")]

    def delivered(self, ids: Iterable[str]) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        c.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        c.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()
