"""Replay after a long history (issue 19): the newest point of a table with a ~2M-row state,
with 3M, 10M, 30M changes archived, replayed from the nearest checkpoint.

Each archive (``bench/replay.py`` ``build_archive``, steady mode: the state holds exactly
``ROWS`` rows at every transaction end) is built once into a cache directory outside the
repository: the history up to ``TAIL`` changes before the end, a checkpoint there (the
first checkpoint's cost is measured: a rebuild from the snapshot), then the last ``TAIL``
changes, as the scheduled job would leave it between two runs. Each replay runs in a child
process (its peak RSS is the child's ``ru_maxrss``), alternating between the sizes, and the
medians are reported with their spread.

    .venv/bin/python -m bench.replay_history --cache /work/bench-cache --sizes 3M,10M,30M
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import click

from bench.common import BenchContext, Figure
from bench.replay import EPOCH, TABLE, build_archive

ROWS = 2_000_000
TAIL = 500_000  # changes after the newest checkpoint (the job runs every 1M changes)
MEMORY = "1500MB"


def _archive(cache: Path, changes: int, rows: int, tail: int, say: Callable[[str], None]) -> Path:
    """The cached archive of ``changes`` changes (built once)."""
    from consumers.archive.location import archive_location
    from replay.checkpoint_job import checkpoint_at
    from replay.memory import Memory
    from replay.state import open_history
    from replay.tables import TableId

    root = cache / f"steady-{rows}-{changes}"
    done = root / "_bench_done.json"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    head = changes - tail
    lsn = build_archive(root, rows, head, steady=True, progress=say)
    built = time.perf_counter() - t0
    loc = archive_location(root)
    t1 = time.perf_counter()
    n = checkpoint_at(open_history(loc, memory=Memory(MEMORY)), loc, TableId(*TABLE), lsn)
    first_ckpt = time.perf_counter() - t1
    say(f"first checkpoint of {n} rows at {changes - tail} changes: {first_ckpt:.1f} s")
    build_archive(root, rows, tail, steady=True, start=head, progress=say)
    done.write_text(json.dumps({"built_s": built, "first_checkpoint_s": first_ckpt,
                                "checkpoint_rows": n, "checkpoint_at_changes": head}))
    return root


def replay_once(root: str, memory: str, checkpoints: bool = True,
                s3: str | None = None) -> dict[str, float]:
    """In this process: the newest point's state, materialized (what --into-table and
    --restore do first); seconds and rows. ``s3``: JSON of {"uri", "options"}, the same
    archive copied to an S3 server."""
    from consumers.archive.location import archive_location
    from replay.memory import Memory
    from replay.point import LsnPoint
    from replay.state import materialize, open_history, state_at
    from replay.tables import TableId

    meta = json.loads((Path(root) / "_bench_point.json").read_text())
    where = archive_location(root) if s3 is None else archive_location(
        json.loads(s3)["uri"], json.loads(s3)["options"])
    t0, c0 = time.perf_counter(), _cpu()
    duck = open_history(where, memory=Memory(memory))
    state = materialize(duck, state_at(duck, TableId(*TABLE), LsnPoint(int(meta["lsn"])),
                                       checkpoints=checkpoints), "_bench")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cpu_s": _cpu() - c0, "rows": state.rel.shape[0],
            "rss_mb": peak_rss_mb()}


def _cpu() -> float:
    """CPU seconds of this process (user + system): steadier than wall time on a host
    loaded by others, reported next to it."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: of this program's memory alone; ru_maxrss would keep
    the parent's high-water mark across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(root: Path, memory: str, checkpoints: bool = True,
           s3: str | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.replay_history", "--one", str(root), "--memory", memory,
         *([] if checkpoints else ["--no-checkpoints"]), *([] if s3 is None else ["--s3", s3])],
        check=True, capture_output=True, text=True, timeout=3600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("KM")) * mult)


def measure(cache: Path, sizes: list[int], rounds: int, rows: int = ROWS, tail: int = TAIL,
            say: Callable[[str], None] = click.echo) -> dict[int, dict[str, object]]:
    roots = {}
    for n in sizes:
        root = _archive(cache, n, rows, tail, say)
        last = EPOCH + 4096 * (n // 100)
        (root / "_bench_point.json").write_text(json.dumps({"lsn": last}))
        roots[n] = root
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    for r in range(rounds):  # alternating: the machine's speed drifts
        for n in (sizes if r % 2 == 0 else list(reversed(sizes))):
            runs[n].append(_child(roots[n], MEMORY))
            say(f"{n} changes: {runs[n][-1]}")
    out: dict[int, dict[str, object]] = {}
    for n, rs in runs.items():
        secs = [x["seconds"] for x in rs]
        cpu = [x["cpu_s"] for x in rs]
        rss = [x["rss_mb"] for x in rs]
        meta = json.loads((roots[n] / "_bench_done.json").read_text())
        out[n] = {"median_s": statistics.median(secs), "min_s": min(secs), "max_s": max(secs),
                  "median_cpu_s": statistics.median(cpu), "min_cpu_s": min(cpu),
                  "max_cpu_s": max(cpu), "median_rss_mb": statistics.median(rss),
                  "max_rss_mb": max(rss),
                  "rows": rs[-1]["rows"], "runs": len(rs), **meta}
    return out


def checkpoint_cost(root: Path, workdir: Path) -> dict[str, float]:
    """An incremental checkpoint (the previous checkpoint + the TAIL changes) on a copy of
    the archive: seconds and the child's peak RSS."""
    copy = workdir / "ckpt-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root, copy)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.replay_history", "--one-checkpoint", str(copy),
             "--memory", MEMORY], check=True, capture_output=True, text=True, timeout=3600)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def measure_s3(root: Path, rounds: int) -> dict[str, object]:
    """The newest-point replay of ``root`` copied to a real S3-compatible server (SeaweedFS,
    plain http), alternating with the local copy."""
    from pyarrow import fs

    from devstack.s3 import start_s3

    server = start_s3("bench-history")
    try:
        opts = server.storage_options()
        endpoint = urlparse(opts["AWS_ENDPOINT_URL"])
        s3fs = fs.S3FileSystem(access_key=opts["AWS_ACCESS_KEY_ID"],
                               secret_key=opts["AWS_SECRET_ACCESS_KEY"],
                               endpoint_override=endpoint.netloc, scheme=endpoint.scheme,
                               region=opts.get("AWS_REGION", "us-east-1"))
        fs.copy_files(str(root), f"{server.bucket}/history", source_filesystem=fs.LocalFileSystem(),
                      destination_filesystem=s3fs)
        s3 = json.dumps({"uri": server.uri("history"), "options": opts})
        local: list[dict[str, float]] = []
        remote: list[dict[str, float]] = []
        for _ in range(rounds):
            local.append(_child(root, MEMORY))
            remote.append(_child(root, MEMORY, s3=s3))
        return {"local_median_s": statistics.median(x["seconds"] for x in local),
                "s3_median_s": statistics.median(x["seconds"] for x in remote),
                "s3_runs_s": [x["seconds"] for x in remote],
                "s3_cpu_s": [x["cpu_s"] for x in remote],
                "s3_rss_mb": [x["rss_mb"] for x in remote], "rows": remote[-1]["rows"]}
    finally:
        server.stop()


def ingest_slowdown(root: Path, workdir: Path, pairs: int = 3,
                    events: int = 200_000) -> dict[str, object]:
    """The archiver's store ingest rate (bench/archive.py's measure: bulk-parsed batches of
    50k events, one commit each) alone and while a checkpoint job runs on a copy of the
    ``root`` archive, alternating. By design they share only the host (the checkpoint
    commits to its own table): this measures that contention."""
    from bench.archive import _events, _store_ingest

    payloads = _events(events)
    alone: list[float] = []
    during: list[float] = []
    for i in range(pairs):
        shutil.rmtree(workdir / "ingest", ignore_errors=True)
        alone.append(_store_ingest(payloads, workdir / "ingest")[0])
        copy = workdir / "ckpt-copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(root, copy)
        job = subprocess.Popen(
            [sys.executable, "-m", "bench.replay_history", "--one-checkpoint", str(copy),
             "--memory", MEMORY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)  # the job past its imports, reading the archive
            shutil.rmtree(workdir / "ingest", ignore_errors=True)
            during.append(_store_ingest(payloads, workdir / "ingest")[0])
            running = job.poll() is None
        finally:
            job.wait(timeout=3600)
            shutil.rmtree(copy, ignore_errors=True)
        if not running:
            during.pop()  # the checkpoint ended before the ingest did: not overlapped
        del i
    ratios = [d / a for a, d in zip(alone, during, strict=False)]
    return {"alone_eps": alone, "during_eps": during,
            "median_ratio": statistics.median(ratios) if ratios else None}


def _one_checkpoint(root: str, memory: str) -> dict[str, float]:
    from consumers.archive.location import archive_location
    from replay.checkpoint_job import Policy, make_checkpoints
    from replay.memory import Memory

    t0, c0 = time.perf_counter(), _cpu()
    made = make_checkpoints(archive_location(root), policy=Policy(every_changes=1),
                            memory=Memory(memory, threads=1))  # replay checkpoint's default
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "rows": made[0].rows,
            "rss_mb": peak_rss_mb()}


def run(ctx: BenchContext) -> list[Figure]:
    """In ``make bench``: small sizes (the big ones: run this module with --cache)."""
    sizes = [300_000, 1_000_000] if ctx.quick else [1_000_000, 3_000_000]
    rows = 200_000
    res = measure(ctx.workdir / "history", sizes, 3, rows=rows, tail=100_000,
                  say=lambda _m: None)
    lo, hi = res[sizes[0]], res[sizes[-1]]
    ratio = float(hi["median_s"]) / float(lo["median_s"])  # type: ignore[arg-type]
    return [Figure(f"replay: newest point, {rows}-row state, {sizes[-1]} vs {sizes[0]} "
                   "changes archived (from a checkpoint)", ratio, "x", "<= 1.3x",
                   ratio <= 1.3, "; ".join(_summary(n, r) for n, r in res.items()))]


def _summary(changes: int, r: dict[str, object]) -> str:
    """One size's figures in words (the README table shows ``detail`` as it is)."""
    return (f"{changes:,} changes: {r['median_s']:.2f} s ({r['min_s']:.2f}–{r['max_s']:.2f} of "
            f"{r['runs']}), {r['median_cpu_s']:.2f} CPU s, peak RSS {r['max_rss_mb']:.0f} MB")


@click.command()
@click.option("--cache", type=click.Path(path_type=Path), default=Path("/work/bench-cache"))
@click.option("--sizes", default="3M,10M")
@click.option("--rounds", type=int, default=5)
@click.option("--one", help="internal: one replay in this process")
@click.option("--one-checkpoint", help="internal: one checkpoint in this process")
@click.option("--memory", default=MEMORY)
@click.option("--no-checkpoints", is_flag=True)
@click.option("--ingest-only", is_flag=True, help="only the ingest slowdown figure")
@click.option("--s3-only", is_flag=True, help="only the S3 figure (first size)")
@click.option("--s3", help="internal: the S3 copy for --one")
def main(cache: Path, sizes: str, rounds: int, one: str | None, one_checkpoint: str | None,
         memory: str, no_checkpoints: bool, ingest_only: bool, s3_only: bool,
         s3: str | None) -> None:
    if one:
        click.echo(json.dumps(replay_once(one, memory, not no_checkpoints, s3)))
        return
    if one_checkpoint:
        click.echo(json.dumps(_one_checkpoint(one_checkpoint, memory)))
        return
    cache.mkdir(parents=True, exist_ok=True)
    ns = [_size(s) for s in sizes.split(",")]
    if ingest_only:
        click.echo(json.dumps(ingest_slowdown(cache / f"steady-{ROWS}-{ns[0]}", cache)))
        return
    if s3_only:
        click.echo(json.dumps(measure_s3(cache / f"steady-{ROWS}-{ns[0]}", rounds)))
        return
    res = measure(cache, ns, rounds)
    res_json = {str(k): v for k, v in res.items()}
    click.echo(json.dumps(res_json, indent=1))
    cost = checkpoint_cost(cache / f"steady-{ROWS}-{ns[0]}", cache)
    click.echo(json.dumps({"incremental_checkpoint": cost}))
    click.echo(json.dumps({"ingest_during_checkpoint": ingest_slowdown(
        cache / f"steady-{ROWS}-{ns[0]}", cache)}))


if __name__ == "__main__":
    main()
