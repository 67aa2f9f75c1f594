"""Where capture's CPU goes: `capture run` (its CLI process) catching up a 300k-change
workload on a throw-away stack, sampled by py-spy; prints the top functions by own and by
inclusive share.

    pip install py-spy   # not a dependency of the project
    .venv/bin/python scripts/profile_capture.py wal2json confluent [--changes 300000]
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.capture import _confirmed, _lsn  # noqa: E402
from bench.common import BenchContext  # noqa: E402
from devstack.broker import start_broker  # noqa: E402
from devstack.postgres import start_postgres  # noqa: E402


def _top(raw: Path, n: int = 15) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        k = int(count)
        total += k
        frames = [re.sub(r":\d+\)", ")", f) for f in stack.split(";")]
        own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    click.echo(f"{total} samples\n--- own time")
    for name, k in own.most_common(n):
        click.echo(f"{k / total:6.1%}  {name}")
    click.echo("--- inclusive (capture/ only)")
    for name, k in incl.most_common():
        if "capture/" in name and n > 0:
            click.echo(f"{k / total:6.1%}  {name}")
            n -= 1


@click.command()
@click.argument("plugin", type=click.Choice(["wal2json", "pgoutput"]))
@click.argument("backend", type=click.Choice(["kafka-python", "confluent"]))
@click.option("--changes", default=300_000, show_default=True)
def main(plugin: str, backend: str, changes: int) -> None:
    spy_bin = shutil.which("py-spy")
    if spy_bin is None:
        raise click.ClickException("py-spy is not installed: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="hera-profile-"))
    cluster, broker = start_postgres(), start_broker()
    try:
        dsn = BenchContext(cluster, broker, work).new_database("profile")
        args = [sys.executable, "-m", "capture", "run", "--dsn", dsn, "--bootstrap-servers",
                broker.bootstrap_servers, "--slot", "profile", "--topic-prefix", "profile",
                "--plugin", plugin, "--kafka-backend", backend,
                "--tables", "public.core_relationships,public.core_dynamic_data"]
        log = (work / "capture.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, stderr=log)
        while _confirmed(dsn, "profile") == 0:  # the slot exists: the workload waits in it
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(changes // 1000):
                conn.execute(
                    "INSERT INTO core_relationships (organization_id, from_entity_id, "
                    "to_entity_id, relationship_type, smart_code, relationship_data) SELECT "
                    "gen_random_uuid(), 'bench-' || %s || '-' || g, 'org', 'BENCH_LINK', "
                    "'HERA.BENCH.LINK.v1', jsonb_build_object('g', g) "
                    "FROM generate_series(1, 1000) g", (i,))
        end = _lsn(dsn)
        proc = subprocess.Popen(args, cwd=ROOT, stderr=log)
        raw = work / "profile.txt"
        spy = subprocess.Popen([spy_bin, "record", "--pid", str(proc.pid), "--format", "raw",
                                "-o", str(raw), "--rate", "200", "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while _confirmed(dsn, "profile") < end:
            time.sleep(0.05)
        click.echo(f"{changes} changes in {time.monotonic() - t0:.2f} s ({plugin}, {backend})")
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        _top(raw)
    finally:
        broker.stop()
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
