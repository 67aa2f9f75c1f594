"""A PostgreSQL cluster whose default ``lc_monetary`` is not C (German: ``1.234,56 €``), for
tests that a value's text does not depend on the server's locale settings.

The machine has only the C locales installed; the German one is compiled from glibc's sources
into a private directory (``localedef``) and the cluster's postmaster finds it through
``LOCPATH``, so nothing outside the test's own directories is changed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devstack.postgres import PostgresCluster, start_postgres

GERMAN = "de_DE.UTF-8"
AMOUNTS = ("1234.56", "-0.05")  # money_db: the first in the table, the second for a test


def _compile_locale(into: Path) -> None:
    res = subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(into / GERMAN)],
                         capture_output=True, text=True, check=False, timeout=120)
    # localedef exits 1 on warnings about the source while still writing the locale.
    if not (into / GERMAN / "LC_MONETARY").exists():
        raise RuntimeError(f"localedef failed: {res.stderr.strip()[-500:]}")


@pytest.fixture(scope="module")
def german_money_cluster() -> Iterator[PostgresCluster]:
    """A throw-away cluster with ``lc_monetary = 'de_DE.UTF-8'`` as its default."""
    locales = Path(tempfile.mkdtemp(prefix="hera-locale-"))
    cluster: PostgresCluster | None = None
    try:
        locales.chmod(0o755)  # the postgres OS user reads it when tests run as root
        _compile_locale(locales)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("LOCPATH", str(locales))  # the postmaster keeps its environment
            cluster = start_postgres(extra_conf={"lc_monetary": f"'{GERMAN}'"})
        yield cluster
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(locales, ignore_errors=True)


@pytest.fixture
def money_db(german_money_cluster: PostgresCluster, slot_name: str) -> Iterator[str]:
    """A database of that cluster with table cash (id, amount money), one row."""
    name = f"money_{slot_name}"
    with psycopg.connect(german_money_cluster.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = german_money_cluster.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE cash (id int PRIMARY KEY, amount money)")
        conn.execute("INSERT INTO cash VALUES (1, %s::numeric)", (AMOUNTS[0],))
    yield dsn
