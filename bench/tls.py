"""Kafka over TLS against plaintext, for capture and the archive (informational): the same
workload through the test broker directly and through stunnel4 (TLS, a throw-away CA), runs
alternating, the figure the median of the per-pair ratios TLS / plaintext."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench.archive import _events, _kafka_ingest
from bench.capture import TXN_ROWS, _lsn, _prime, _timed_capture
from bench.common import BenchContext, Figure, alternate, release_frozen
from consumers.archive.archiver import tune_gc
from consumers.kafka_source import Backend
from devstack.pki import TestCA
from devstack.secure_broker import secured_broker
from hera_kit.kafka_config import load, plaintext

BACKEND: Backend = "confluent"  # the fast client: where TLS's cost shows most


def run(ctx: BenchContext) -> list[Figure]:
    n = 20_000 if ctx.quick else 100_000
    k = ctx.pairs if ctx.quick else 5
    work = Path(tempfile.mkdtemp(prefix="bench-tls-", dir=ctx.workdir))
    ca = TestCA(work / "ca", "bench-ca", datetime.now(UTC))
    with secured_broker(work / "tls", ca.issue("broker")) as endpoint:
        props = endpoint.properties("bench", ssl_ca_location=str(ca.ca_file))
        tls, plain = load(props), plaintext(ctx.broker.bootstrap_servers)
        payloads = _events(n)
        tune_gc()
        with ctx.step(f"tls: archive ingest, {k} plaintext/TLS pairs", 2 * k + 1) as done:
            archive = alternate(
                k, lambda i: _kafka_ingest(ctx, payloads, work / f"plain-{i}", BACKEND,
                                           kafka=plain),
                lambda i: _kafka_ingest(ctx, payloads, work / f"tls-{i}", BACKEND, kafka=tls),
                step=done)
        dsn = ctx.new_database("bench_tls")
        # bracketed: one plaintext run more than TLS runs (bench.common.alternate)
        runs = [(i, "plain") for i in range(k + 1)] + [(i, "tls") for i in range(k)]
        for i, kind in runs:
            _prime(ctx, dsn, f"tls_{kind}_{i}", f"benchtls{kind}{i}", BACKEND, "pgoutput",
                   props if kind == "tls" else None)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(n // TXN_ROWS):
                conn.execute(
                    "INSERT INTO core_relationships (organization_id, from_entity_id,"
                    " to_entity_id, relationship_type, smart_code, relationship_data) SELECT"
                    " gen_random_uuid(), 'bench-' || %s || '-' || g, 'org', 'BENCH_LINK',"
                    " 'HERA.BENCH.LINK.v1', jsonb_build_object('g', g)"
                    " FROM generate_series(1, %s) g", (i, TXN_ROWS))
        end = _lsn(dsn)

        def capture(i: int, kind: str) -> float:
            secs, _cpu = _timed_capture(ctx, dsn, f"tls_{kind}_{i}", f"benchtls{kind}{i}",
                                        BACKEND, end, "pgoutput",
                                        props if kind == "tls" else None)
            return n / secs
        with ctx.step(f"tls: capture throughput, {k} plaintext/TLS pairs", 2 * k + 1) as done:
            cap = alternate(k, lambda i: capture(i, "plain"), lambda i: capture(i, "tls"),
                            step=done)
        # the runs' clients go before the TLS endpoint does (capture's GC tuning froze them)
        release_frozen()
    how = (f"{n} events, {BACKEND} client, the test broker directly vs behind stunnel4 "
           "(TLS 1.3); median ratio of bracketed runs (plaintext, TLS, plaintext …)")
    return [
        archive.ratios.figure("archive ingest TLS / plaintext", "x", "informational", None,
                              f"{how}; plaintext {archive.ceiling.text('{:.0f}')} events/s, "
                              f"TLS {archive.product.text('{:.0f}')} events/s"),
        cap.ratios.figure("capture throughput TLS / plaintext", "x", "informational", None,
                          f"{how}; plaintext {cap.ceiling.text('{:.0f}')} changes/s, "
                          f"TLS {cap.product.text('{:.0f}')} changes/s"),
    ]
