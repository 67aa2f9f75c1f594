"""TLS and SASL in front of the real test broker: a test CA (devstack.pki), stunnel4 for TLS
and, for SASL, devstack.sasl_gateway (a SASL-authenticating gateway, not a broker: no broker
installable here can require SASL). Each secured endpoint has its own tansu broker that
advertises the endpoint's port, so every connection the clients open is secured."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from devstack.broker import Broker
from devstack.pki import Issued, TestCA
from devstack.ports import free_port
from devstack.postgres import PostgresCluster, start_postgres
from devstack.secure_broker import PASSWORD, USER, Endpoint, secured_broker
from devstack.stunnel import Stunnel, start_stunnel

__all__ = ["PASSWORD", "USER", "Endpoint"]


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    other_ca: Path  # a CA the servers do not use: "unknown CA"
    server: Issued  # for 127.0.0.1 and localhost
    other_host: Issued  # for other.example only
    expired: Issued
    client: Issued  # a client certificate signed by ``ca``


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    d.chmod(0o755)  # PostgreSQL (another OS user) reads its certificate from here
    ca = TestCA(d, "hera-test-ca", dt.datetime.now(dt.UTC))
    other = TestCA(d / "other", "other-ca", dt.datetime.now(dt.UTC))
    return Pki(d, ca.ca_file, other.ca_file, ca.issue("server"),
               ca.issue("other-host", ("other.example",)), ca.issue("expired", expired=True),
               ca.issue("client", ("hera-client",), client=True))


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with secured_broker(tmp_path_factory.mktemp("tls"), pki.server) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def sasl_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with secured_broker(tmp_path_factory.mktemp("sasl"), pki.server, sasl=True) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def mtls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    with secured_broker(tmp_path_factory.mktemp("mtls"), pki.server,
                        client_ca=pki.ca) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def bad_certificates(pki: Pki, broker: Broker, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[dict[str, str]]:
    """TLS endpoints in front of the shared broker whose certificates must be refused:
    name -> bootstrap address (the handshake fails before any Kafka request)."""
    workdir = tmp_path_factory.mktemp("badcerts")
    tunnels: list[Stunnel] = []
    try:
        out = {}
        for name, issued in (("other-host", pki.other_host), ("expired", pki.expired)):
            tunnel = start_stunnel(workdir, free_port(), broker.port, issued.cert, issued.key)
            tunnels.append(tunnel)
            out[name] = f"127.0.0.1:{tunnel.accept_port}"
        yield out
    finally:
        for t in tunnels:
            t.stop()


@dataclass(frozen=True)
class TlsPostgres:
    """A cluster that takes TLS connections only (pg_hba: hostssl, every other host line
    rejected), with the test CA's certificate for 127.0.0.1."""

    cluster: PostgresCluster
    ca: Path

    def dsn(self, dbname: str, user: str, ca: Path | None = None) -> str:
        return (f"host=127.0.0.1 port={self.cluster.port} dbname={dbname} user={user} "
                f"sslmode=verify-full sslrootcert={ca or self.ca}")


@pytest.fixture(scope="module")
def tls_postgres(pki: Pki) -> Iterator[TlsPostgres]:
    cluster = start_postgres()
    try:
        owner = "postgres" if os.geteuid() == 0 else None
        for src, name in ((pki.server.cert, "server.crt"), (pki.server.key, "server.key")):
            dst = cluster.datadir / name
            shutil.copyfile(src, dst)
            dst.chmod(0o600)
            if owner:
                shutil.chown(dst, owner, owner)
        (cluster.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n"
            "hostnossl all all 0.0.0.0/0 reject\nhostnossl replication all 0.0.0.0/0 reject\n")
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
            conn.execute("ALTER SYSTEM SET ssl_key_file = 'server.key'")
            conn.execute("SELECT pg_reload_conf()")
        yield TlsPostgres(cluster, pki.ca)
    finally:
        cluster.destroy()
