"""Publishing to Kafka, and knowing which transactions the broker fully acknowledged.

Two backends behind one small interface: kafka-python (required, the default) and
confluent-kafka (optional extra ``fast``; the benchmark shows the client is the bottleneck).
Delivery reports are handed to the main thread through a queue, so the ack bookkeeping has one
owner and needs no locks.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from capture.errors import BrokerError


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
        self.outstanding += 1
        self.outstanding_bytes += size
        return partial(self._report, txn, size)

    def _report(self, txn: PendingTxn, size: int, error: BaseException | None) -> None:
        """The client's delivery report, from any thread."""
        self._done.put(error if error is not None else (txn, size))

    def drain(self) -> None:
        """Apply delivery reports; raises BrokerError on the first failed delivery."""
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return
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


class Producer(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None: ...
    def poll(self, timeout: float) -> None: ...
    def flush(self, timeout: float) -> None: ...
    def close(self) -> None: ...


class KafkaPythonProducer:
    def __init__(self, bootstrap_servers: str, single_partition: bool = False) -> None:
        # With one partition per topic the key-hash partitioner is pure overhead (~15 µs a
        # record in kafka-python): name the partition.
        self._partition = 0 if single_partition else None
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        try:
            self._p = KafkaProducer(
                bootstrap_servers=bootstrap_servers.split(","),
                acks="all",
                linger_ms=5,
                batch_size=512 * 1024,
                max_block_ms=15000,
                request_timeout_ms=15000,
                retries=5,
                max_in_flight_requests_per_connection=5,
                client_id="hera-guard-capture",
            )
        except KafkaError as exc:
            raise BrokerError.unreachable(bootstrap_servers, exc) from exc

    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None:
        from kafka.errors import KafkaError

        try:
            fut = self._p.send(topic, key=key, value=value, partition=self._partition)
        except KafkaError as exc:
            raise BrokerError(f"cannot publish to {topic}: {exc!r}") from exc
        fut.add_callback(lambda _md: on_delivery(None))
        fut.add_errback(on_delivery)

    def poll(self, timeout: float) -> None:
        pass  # kafka-python reports deliveries from its own I/O thread

    def flush(self, timeout: float) -> None:
        from kafka.errors import KafkaError

        try:
            self._p.flush(timeout=timeout)
        except KafkaError as exc:
            raise BrokerError(f"flushing to the broker failed: {exc!r}") from exc

    def close(self) -> None:
        self._p.close(timeout=5)


class ConfluentProducer:
    def __init__(self, bootstrap_servers: str, single_partition: bool = False) -> None:
        self._partition = 0 if single_partition else -1  # -1: librdkafka's partitioner
        from confluent_kafka import Producer as CProducer

        self._p: Any = CProducer({
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 65536,
            "message.timeout.ms": 30000,
            "enable.idempotence": False,
            "client.id": "hera-guard-capture",
        })
        md = self._p.list_topics(timeout=10)
        if md is None:  # pragma: no cover - list_topics raises instead
            raise BrokerError.unreachable(bootstrap_servers)

    def send(self, topic: str, key: bytes | None, value: bytes,
             on_delivery: Callable[[BaseException | None], None]) -> None:
        def report(err: Any, _msg: Any) -> None:
            on_delivery(None if err is None else BrokerError(str(err)))

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

    def close(self) -> None:
        self._p.flush(5)


def make_producer(backend: str, bootstrap_servers: str,
                  single_partition: bool = False) -> Producer:
    if backend == "confluent":
        try:
            return ConfluentProducer(bootstrap_servers, single_partition)
        except ImportError as exc:
            raise BrokerError(
                "kafka backend 'confluent' needs confluent-kafka: pip install 'hera-guard[fast]'"
            ) from exc
    return KafkaPythonProducer(bootstrap_servers, single_partition)
