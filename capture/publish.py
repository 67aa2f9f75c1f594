"""Publishing to Kafka, and knowing which transactions the broker fully acknowledged.

Two backends behind one small interface: kafka-python (required, the default) and
confluent-kafka (optional extra ``fast``; the benchmark shows the client is the bottleneck).
Delivery reports are handed to the main thread through a queue, so the ack bookkeeping has one
owner and needs no locks.

Size: one setting (``max_message_bytes``) bounds an event. Both backends check every record
against it before handing it to the client, so an event that cannot be published is known at
once, by table, key and LSN, instead of surfacing as a client error retried forever; the
broker's own refusal (its limit below ours) is reported the same way. Either stops capture:
the transaction holding the event is never confirmed, and a restart with a larger limit
publishes it.
"""

from __future__ import annotations

import json
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from capture.errors import BrokerError, CaptureError, ConfigError
from capture.event import format_lsn
from hera_kit.kafka_config import KafkaConfig, as_config

if TYPE_CHECKING:
    from capture.options import CaptureOptions

# What a record batch adds around one record's key and value (batch header 61 bytes, record
# header and varints < 30): an event fits when key + value + this <= max_message_bytes.
RECORD_OVERHEAD = 1024
_FLAG = "--max-message-bytes (HERA_MAX_MESSAGE_BYTES)"


class EventTooLarge(CaptureError):
    """An event does not fit the message size limit. Not retried: capture stops, and nothing
    from the event's transaction on is confirmed."""


def _about(topic: str, key: bytes | None, value: bytes) -> str:
    """'<table> key <key> at LSN <lsn> (commit <lsn>)' read from the event itself; only on the
    failure path, so the hot path never parses what it publishes."""
    table, where = topic, ""
    try:
        raw = json.loads(value)
        source = raw.get("source") or {}
        if source.get("schema") and source.get("table"):
            table = f"{source['schema']}.{source['table']}"
        elif raw.get("schema") and raw.get("table"):  # a SchemaChangeEvent
            table = f"{raw['schema']}.{raw['table']}"
        lsn = source.get("lsn") if isinstance(source.get("lsn"), int) else raw.get("lsn")
        if isinstance(lsn, int):
            where = f" at LSN {format_lsn(lsn)}"
        if isinstance(raw.get("commit_lsn"), int):
            where += f" (transaction commit {format_lsn(raw['commit_lsn'])})"
    except (ValueError, AttributeError, TypeError):
        pass
    shown = (key or b"").decode("utf-8", "replace")
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return f"{table} key {shown}{where}"


def record_size(key: bytes | None, value: bytes) -> int:
    return len(key or b"") + len(value) + RECORD_OVERHEAD


def check_size(topic: str, key: bytes | None, value: bytes, limit: int) -> None:
    """Raise EventTooLarge when the record cannot be published under ``limit``."""
    size = record_size(key, value)
    if size > limit:
        raise EventTooLarge(
            f"event too large: {_about(topic, key, value)} is {size} bytes, above "
            f"max_message_bytes {limit}: raise {_FLAG} to at least {size} and restart "
            "capture; nothing from this transaction on was confirmed")


def refused_as_too_large(topic: str, key: bytes | None, value: bytes, limit: int,
                         error: str) -> EventTooLarge:
    """The broker refused a record we had let through: its limit is below ours."""
    return EventTooLarge(
        f"the broker refused the event for {_about(topic, key, value)} "
        f"({record_size(key, value)} bytes) as too large ({error}), although "
        f"max_message_bytes is {limit}: raise the topic's max.message.bytes (and the broker's "
        f"message.max.bytes / socket.request.max.bytes) to {limit}, or lower {_FLAG}; "
        "nothing from this transaction on was confirmed")


@dataclass(slots=True)
class PendingTxn:
    """A transaction (or snapshot, or marker) whose records are in flight."""

    end_lsn: int  # what may be confirmed to PostgreSQL once everything up to here is acked
    pending: int = 0
    closed: bool = False
    commit_ts_us: int = 0  # commit time, for the commit -> acknowledged latency


class AckTracker:
    """The confirmed LSN moves only past a prefix of transactions the broker fully acked."""

    def __init__(self, on_acked: Callable[[PendingTxn], None] | None = None) -> None:
        self._on_acked = on_acked
        self._txns: deque[PendingTxn] = deque()
        self._done: queue.SimpleQueue[tuple[PendingTxn, int] | BaseException] = (
            queue.SimpleQueue())
        # Records handed to the client and not yet acknowledged: the back-pressure gauge
        # (kafka-python's accumulator has no memory bound of its own).
        self.outstanding = 0
        self.outstanding_bytes = 0
        # Monotonic time since which records have waited with no acknowledgement arriving:
        # the later of "records became outstanding" and "the last acknowledgement".
        self._waiting_since = 0.0

    def open(self, end_lsn: int = 0) -> PendingTxn:
        txn = PendingTxn(end_lsn)
        self._txns.append(txn)
        return txn

    def close(self, txn: PendingTxn, end_lsn: int) -> None:
        txn.end_lsn = end_lsn
        txn.closed = True

    def sent(self, txn: PendingTxn, size: int) -> Callable[[BaseException | None], None]:
        """Count one record of ``txn`` as in flight; returns its delivery callback."""
        txn.pending += 1
        if not self.outstanding:
            self._waiting_since = time.monotonic()
        self.outstanding += 1
        self.outstanding_bytes += size
        return partial(self._report, txn, size)

    def _report(self, txn: PendingTxn, size: int, error: BaseException | None) -> None:
        """The client's delivery report, from any thread."""
        self._done.put(error if error is not None else (txn, size))

    def drain(self) -> None:
        """Apply delivery reports; raises BrokerError on the first failed delivery."""
        if not self._done.empty():
            self._waiting_since = time.monotonic()
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, CaptureError):
                raise item  # already says what and how to fix (e.g. EventTooLarge)
            if isinstance(item, BaseException):
                raise BrokerError(f"the broker did not acknowledge a record: {item!r}")
            txn, size = item
            txn.pending -= 1
            self.outstanding -= 1
            self.outstanding_bytes -= size

    def confirmable(self) -> int | None:
        """The end LSN of the longest fully acknowledged prefix, popping it; None if empty."""
        lsn: int | None = None
        while self._txns and self._txns[0].closed and self._txns[0].pending == 0:
            txn = self._txns.popleft()
            lsn = txn.end_lsn
            if self._on_acked is not None:
                self._on_acked(txn)
        return lsn

    @property
    def idle(self) -> bool:
        return not self._txns

    def unacknowledged_for(self, now: float) -> float:
        """Seconds records have been waiting with no acknowledgement arriving (0: none wait).
        Read from other threads too (readiness): two plain fields, no lock needed."""
        if not self.outstanding:
            return 0.0
        return max(0.0, now - self._waiting_since)


class Producer(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None: ...
    def poll(self, timeout: float) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered, waiting at most ``timeout`` seconds (0: drop it at once)."""
        ...


class _CoalescedWakeup:
    """kafka-python wakes its I/O thread (a socketpair write) on every send that starts a new
    batch or finds the last one full, which is every send while the I/O thread lags; each
    wake-up hands the GIL to that thread and back (measured: a third of capture's time waiting
    for the GIL). At most one wake-up per ``interval``: one already sent is still unread or
    has just been served; one left out is sent by the next send after the interval or the
    next ``poll``/``flush``, so a record waits at most until then (under 1 ms while records
    flow, one burst of the stream loop at the end of one)."""

    __slots__ = ("_interval", "_next", "_wake", "pending")

    def __init__(self, wake: Callable[[], None], interval: float = 0.002) -> None:
        self._wake = wake
        self._interval = interval
        self._next = 0.0
        self.pending = False

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self.pending = False
            self._wake()
        else:
            self.pending = True

    def now(self) -> None:
        """Send a left-out wake-up now."""
        if self.pending:
            self.pending = False
            self._next = time.monotonic() + self._interval
            self._wake()

    def unthrottled(self) -> None:
        """Let the next wake-up through (flush and close must never wait for one)."""
        self.now()
        self._next = 0.0


_PYTHON_CODECS = {"lz4": "lz4", "zstd": "zstandard", "snappy": "python-snappy"}


class KafkaPythonProducer:
    def __init__(self, bootstrap_servers: KafkaConfig | str, single_partition: bool = False, *,
                 max_message_bytes: int = 16 * 1024 * 1024,
                 compression: str = "lz4") -> None:
        # With one partition per topic the key-hash partitioner is pure overhead (~15 µs a
        # record in kafka-python): name the partition.
        self._partition = 0 if single_partition else None
        self._limit = max_message_bytes
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self._p = KafkaProducer(
                **as_config(bootstrap_servers).kafka_python(),
                acks="all",
                linger_ms=25,
                batch_size=512 * 1024,
                max_block_ms=15000,
                request_timeout_ms=15000,
                # A broker that takes nothing for 30 s fails the records (as confluent's
                # message.timeout.ms does), so the stream restarts and /readyz says so, instead
                # of kafka-python's default 120 s of silent retrying.
                delivery_timeout_ms=30000,
                retries=5,
                max_in_flight_requests_per_connection=5,
                client_id="hera-guard-capture",
                max_request_size=max_message_bytes,
                compression_type=None if compression == "none" else compression,
                # capture creates its topics itself, with its settings (kafka_admin): a
                # topic missing under it must not come back with the broker's defaults
                allow_auto_create_topics=False,
            )
        except KafkaError as exc:
            raise BrokerError.unreachable(bootstrap_servers, exc) from exc
        except RuntimeError as exc:  # "Libraries for lz4 compression codec not found"
            package = _PYTHON_CODECS.get(compression, compression)
            raise ConfigError(
                f"compression {compression} needs the Python package {package} with "
                f"kafka-python (pip install {package}, here and on every kafka-python "
                "consumer), or use --compression gzip") from exc
        from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

        self._kafka_error = KafkaError
        self._too_large = (MessageSizeTooLargeError, RecordListTooLargeError)
        # kafka-python's own wake-up stays for flush/close (called through ``_real_wakeup``);
        # the instance attribute shadows the method for the send path (and the sender's own
        # calls, which are for transactions this producer does not use).
        sender = getattr(self._p, "_sender", None)
        self._sender = sender
        self._wakeup: _CoalescedWakeup | None = None
        if sender is not None and callable(getattr(sender, "wakeup", None)):
            self._wakeup = _CoalescedWakeup(sender.wakeup)
            sender.wakeup = self._wakeup

    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None:
        check_size(topic, key, value, self._limit)
        try:
            fut = self._p.send(topic, key=key, value=value, partition=self._partition)
        except self._kafka_error as exc:
            raise BrokerError(f"cannot publish to {topic}: {exc!r}") from exc
        too_large, limit = self._too_large, self._limit

        def done(result: object) -> None:
            # One callback for both outcomes (kafka-python passes the metadata or the
            # exception). It keeps ``value`` until the ack (bounded by max_in_flight_bytes):
            # a refusal must name the row.
            if not isinstance(result, BaseException):
                on_delivery(None)
            elif isinstance(result, too_large):
                on_delivery(refused_as_too_large(topic, key, value, limit,
                                                 type(result).__name__))
            else:
                on_delivery(result)

        fut.add_both(done)

    def poll(self, timeout: float) -> None:
        # kafka-python reports deliveries from its own I/O thread; only a left-out wake-up
        # is due here.
        if self._wakeup is not None:
            self._wakeup.now()

    def flush(self, timeout: float) -> None:
        if self._wakeup is not None:
            self._wakeup.unthrottled()
        try:
            self._p.flush(timeout=timeout)
        except self._kafka_error as exc:
            raise BrokerError(f"flushing to the broker failed: {exc!r}") from exc

    def close(self, timeout: float = 5.0) -> None:
        if self._wakeup is not None and self._sender is not None:
            self._wakeup.unthrottled()
            # Closing wakes the I/O thread right after flush's wake-up: a coalesced one
            # would be left out and the thread sleep out its poll (close took 5 s).
            del self._sender.wakeup
            self._wakeup = None
        try:
            self._p.close(timeout=timeout)
        except self._kafka_error:
            # kafka-python's close flushes first and raises when the broker takes nothing
            # within the timeout, leaving its I/O thread running: end it. What was not sent
            # is unconfirmed, so the next stream re-sends it.
            sender = getattr(self._p, "_sender", None)
            if sender is not None:
                sender.force_close()


class ConfluentProducer:
    def __init__(self, bootstrap_servers: KafkaConfig | str, single_partition: bool = False, *,
                 max_message_bytes: int = 16 * 1024 * 1024,
                 compression: str = "lz4") -> None:
        self._partition = 0 if single_partition else -1  # -1: librdkafka's partitioner
        self._limit = max_message_bytes
        from confluent_kafka import Producer as CProducer

        self._p: Any = CProducer(as_config(bootstrap_servers).confluent({
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            # The local queue must hold the largest event (librdkafka refuses a message
            # bigger than its queue outright).
            "queue.buffering.max.kbytes": max(65536, 2 * max_message_bytes // 1024),
            "message.max.bytes": max_message_bytes,
            "compression.type": compression,
            # gzip at zlib level 1 costs about half the CPU of librdkafka's default (6) for
            # JSON events and still shrinks them several times (measured here).
            **({"compression.level": 1} if compression == "gzip" else {}),
            "message.timeout.ms": 30000,
            "enable.idempotence": False,
            "client.id": "hera-guard-capture",
            # never the broker's defaults for a missing topic (see kafka_admin)
            "allow.auto.create.topics": False,
        }))
        md = self._p.list_topics(timeout=10)
        if md is None:  # pragma: no cover - list_topics raises instead
            raise BrokerError.unreachable(bootstrap_servers)

    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None:
        from confluent_kafka import KafkaError

        check_size(topic, key, value, self._limit)

        def report(err: Any, msg: Any) -> None:
            if err is None:
                on_delivery(None)
            elif err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                on_delivery(refused_as_too_large(topic, msg.key(), msg.value() or b"",
                                                 self._limit, str(err)))
            else:
                on_delivery(BrokerError(str(err)))

        while True:
            try:
                self._p.produce(topic, value=value, key=key, partition=self._partition,
                                on_delivery=report)
                return
            except BufferError:
                self._p.poll(0.05)  # queue full: serve delivery reports, then retry

    def poll(self, timeout: float) -> None:
        self._p.poll(timeout)

    def flush(self, timeout: float) -> None:
        self._p.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        # flush alone leaves librdkafka's instance alive (its threads, its broker
        # connections) until the collector frees it, which a frozen heap (tune_gc) or a
        # reference cycle delays forever: every stream a retrying capture opened would leak
        # one. What the broker did not take within the timeout is dropped: it is unconfirmed,
        # so the next stream re-sends it.
        if self._p.flush(timeout) > 0:
            self._p.purge()
            self._p.poll(0)  # the purged records' reports, so close has nothing to wait for
        close = getattr(self._p, "close", None)  # older confluent-kafka: freed with the object
        if close is not None:
            close()


def make_producer(backend: str, bootstrap_servers: KafkaConfig | str,
                  single_partition: bool = False, *,
                  max_message_bytes: int = 16 * 1024 * 1024,
                  compression: str = "lz4") -> Producer:
    if backend == "confluent":
        try:
            return ConfluentProducer(bootstrap_servers, single_partition,
                                     max_message_bytes=max_message_bytes,
                                     compression=compression)
        except ImportError as exc:
            raise BrokerError(
                "kafka backend 'confluent' needs confluent-kafka: pip install 'hera-guard[fast]'"
            ) from exc
    return KafkaPythonProducer(bootstrap_servers, single_partition,
                               max_message_bytes=max_message_bytes, compression=compression)


def producer_for(options: CaptureOptions) -> Producer:
    """The producer capture's options ask for (backend, size limit, compression)."""
    return make_producer(options.kafka_backend, options.kafka,
                         options.topic_partitions == 1,
                         max_message_bytes=options.max_message_bytes,
                         compression=options.compression)
