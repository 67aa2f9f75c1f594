"""The streaming replication protocol over psycopg 3 (COPY_BOTH), as pg_recvlogical speaks it.

Frames from the server: ``w`` XLogData (start LSN, end LSN, server clock, payload) and ``k``
keepalive (WAL end, server clock, reply requested). To the server: ``r`` standby status
update (written, flushed, applied LSN, clock, reply requested).
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from capture.errors import CaptureError

_PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 in µs since 1970-01-01
_XLOGDATA = struct.Struct("!QQQ")
_KEEPALIVE = struct.Struct("!QQB")
_STATUS = struct.Struct("!cQQQQB")


class StreamClosed(CaptureError):
    """The server ended the replication stream (restart, terminate)."""


@dataclass(slots=True)
class XLogData:
    start_lsn: int
    end_lsn: int
    payload: bytes


@dataclass(slots=True)
class Keepalive:
    wal_end: int
    reply_requested: bool


def pg_clock(now_us: int) -> int:
    return now_us - _PG_EPOCH_OFFSET_US


def encode_status(flush_lsn: int, now_us: int, reply: bool = False) -> bytes:
    return _STATUS.pack(b"r", flush_lsn, flush_lsn, flush_lsn, pg_clock(now_us), 1 if reply else 0)


def parse_frame(frame: bytes | memoryview) -> XLogData | Keepalive:
    """One CopyData frame; the payload is copied once, straight out of libpq's buffer."""
    kind = frame[0]
    if kind == 0x77:  # 'w'
        start, end, _clock = _XLOGDATA.unpack_from(frame, 1)
        return XLogData(start, end, bytes(frame[1 + _XLOGDATA.size:]))
    if kind == 0x6B:  # 'k'
        wal_end, _clock, reply = _KEEPALIVE.unpack_from(frame, 1)
        return Keepalive(wal_end, bool(reply))
    raise CaptureError(f"unexpected replication frame type {bytes(frame[:1])!r}")


class ReplicationStream:
    """START_REPLICATION on a ``replication=database`` connection; frames one at a time."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], slot: str, start_lsn: int,
                 options: dict[str, str], clock_us: Callable[[], int]) -> None:
        self._conn = conn
        self._pg = conn.pgconn
        self._clock_us = clock_us
        opts = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(k), sql.Literal(v)) for k, v in options.items()
        )
        lsn_text = f"{start_lsn >> 32:X}/{start_lsn & 0xFFFFFFFF:X}"
        conn.execute(
            sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({})").format(
                sql.Identifier(slot), sql.SQL(lsn_text), opts
            )
        )

    def read(self, timeout: float) -> XLogData | Keepalive | None:
        """The next frame, or None when nothing arrived within ``timeout`` seconds."""
        deadline = 0.0
        while True:
            n, data = self._pg.get_copy_data(1)
            if n > 0:
                return parse_frame(data)
            if n == -1:
                raise StreamClosed("the server ended the replication stream")
            if n < -1:
                raise StreamClosed(
                    f"replication stream error: {self._pg.error_message.decode(errors='replace')}"
                )
            if not deadline:
                deadline = time.monotonic() + timeout
            remaining = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._pg.socket], [], [], remaining)
            if not readable:
                return None
            self._pg.consume_input()

    def send_status(self, flush_lsn: int, reply: bool = False) -> None:
        self._pg.put_copy_data(encode_status(flush_lsn, self._clock_us(), reply))
        self._pg.flush()

    def close(self) -> None:
        self._conn.close()
