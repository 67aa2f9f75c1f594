"""A throw-away PostgreSQL cluster for tests, benchmarks and the demo.

initdb into a private directory (as the ``postgres`` OS user when we run as root, since
initdb refuses root), ``wal_level=logical``, wal2json allowed where installed (capture's
default ``--plugin auto`` also works with the built-in pgoutput alone), pg_cron preloaded, a free
port on loopback. It never touches the machine's default cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack.ports import free_port


class StackError(RuntimeError):
    """The local stack could not be started or stopped."""


def find_bindir() -> Path:
    """The newest PostgreSQL >= 15 server, preferring one whose lib dir has wal2json (the
    tests run both plugins; capture itself needs only the built-in pgoutput)."""
    candidates: list[tuple[bool, int, Path]] = []
    for root in Path("/usr/lib/postgresql").glob("*"):
        if not root.name.isdigit() or int(root.name) < 15:
            continue
        if (root / "bin" / "postgres").exists():
            has_wal2json = (root / "lib" / "wal2json.so").exists()
            candidates.append((has_wal2json, int(root.name), root / "bin"))
    if not candidates:
        raise StackError(
            "no PostgreSQL >= 15 found under /usr/lib/postgresql; "
            "run scripts/bootstrap.sh (installs postgresql-15, -wal2json and -cron)"
        )
    return max(candidates)[2]


def _knows_setting(bindir: Path, name: str) -> bool:
    out = subprocess.run(
        [str(bindir / "postgres"), "--describe-config"],
        capture_output=True,
        text=True,
        check=False,
        user=_run_as(),
    ).stdout
    return any(line.split("\t", 1)[0] == name for line in out.splitlines())


def _run_as() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


@dataclass
class PostgresCluster:
    """One running throw-away cluster. Use :func:`start_postgres` to make one."""

    bindir: Path
    datadir: Path
    port: int
    workdir: Path
    owns_workdir: bool = True
    extra_conf: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.host} port={self.port} dbname={dbname} user={user}"

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@{self.host}:{self.port}/{dbname}"

    @property
    def logfile(self) -> Path:
        return self.workdir / "postgres.log"

    def _pg_ctl(self, *args: str) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, user=_run_as())
        if res.returncode != 0:
            raise StackError(
                f"pg_ctl {' '.join(args)} failed: {res.stderr.strip()}\n{self.tail_log()}"
            )

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        self._pg_ctl("-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-t", "60", "-m", mode, "stop")

    def restart(self) -> None:
        self._pg_ctl("-w", "-t", "60", "-m", "fast", "restart")

    def pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster (crash simulation); :meth:`start` recovers."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def destroy(self) -> None:
        with contextlib.suppress(StackError):
            self.stop("immediate")
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def server_version_num(self) -> int:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        m = re.search(r"(\d+)\.(\d+)", out)
        if m is None:
            raise StackError(f"cannot read the PostgreSQL version from {out!r}")
        return int(m.group(1)) * 10000 + int(m.group(2))


BASE_CONF: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "40",
    "max_wal_senders": "40",
    "max_connections": "200",
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": "'postgres'",
    # A throw-away cluster: durability of the cluster itself is not under test.
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
    "max_wal_size": "4GB",
    "shared_buffers": "256MB",
    "logical_decoding_work_mem": "64MB",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}


def start_postgres(
    workdir: Path | None = None, extra_conf: dict[str, str] | None = None
) -> PostgresCluster:
    """initdb + start a cluster in its own directory on a free port."""
    bindir = find_bindir()
    owns = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="hera-pg-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    datadir = wd / "data"
    user = _run_as()
    if user is not None:
        shutil.chown(wd, user=user, group=user)
    res = subprocess.run(
        [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
         "--locale=C.UTF-8", "--no-sync"],
        capture_output=True, text=True, check=False, user=user,
    )
    if res.returncode != 0:
        raise StackError(f"initdb failed: {res.stderr.strip()}")
    conf = dict(BASE_CONF)
    port = free_port()
    conf["port"] = str(port)
    conf["unix_socket_directories"] = f"'{wd}'"
    if _knows_setting(bindir, "output_plugin_libraries"):
        # Debian 15.20+ gates logical output plugins; older minors refuse the setting.
        conf["output_plugin_libraries"] = "'pgoutput, test_decoding, wal2json'"
    conf.update(extra_conf or {})
    with (datadir / "postgresql.auto.conf").open("a") as f:
        for k, v in conf.items():
            f.write(f"{k} = {v}\n")
    with (datadir / "pg_hba.conf").open("w") as f:
        f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        f.write("local replication all trust\nhost replication all 127.0.0.1/32 trust\n")
    cluster = PostgresCluster(bindir, datadir, port, wd, owns, dict(extra_conf or {}))
    try:
        _start_on_a_free_port(cluster, retry="port" not in (extra_conf or {}))
        _create_pg_cron(cluster)
    except StackError:
        if owns:
            shutil.rmtree(wd, ignore_errors=True)
        raise
    return cluster


def _start_on_a_free_port(cluster: PostgresCluster, retry: bool, attempts: int = 3) -> None:
    """Start the cluster; if another process bound its port between ``free_port()`` and the
    postmaster's bind (parallel test workers and other runs share this machine), start it
    again on a new port (a later ``port`` line of postgresql.auto.conf wins)."""
    for attempt in range(attempts):
        try:
            cluster.start()
            return
        except StackError as exc:
            if not retry or attempt == attempts - 1 or "Address already in use" not in str(exc):
                raise
        cluster.port = free_port()
        with (cluster.datadir / "postgresql.auto.conf").open("a") as f:
            f.write(f"port = {cluster.port}\n")


def _create_pg_cron(cluster: PostgresCluster) -> None:
    """What a production DBA does once: the extension in the scheduler's own database
    (``cron.database_name``), so ``guard install`` on any database can schedule the plan's
    jobs there with ``cron.schedule_in_database``."""
    import psycopg

    cron_db = BASE_CONF["cron.database_name"].strip("'")
    try:
        with psycopg.connect(cluster.dsn(cron_db), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    except psycopg.Error as exc:
        cluster.stop("immediate")
        raise StackError(f"cannot create pg_cron in database {cron_db}: {exc}") from exc


@contextlib.contextmanager
def postgres_cluster(extra_conf: dict[str, str] | None = None) -> Iterator[PostgresCluster]:
    cluster = start_postgres(extra_conf=extra_conf)
    try:
        yield cluster
    finally:
        cluster.destroy()
