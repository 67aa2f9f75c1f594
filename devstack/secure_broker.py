"""The test broker behind TLS (stunnel4) and, optionally, SASL (devstack.sasl_gateway, a
SASL-authenticating gateway: no installable broker can require SASL here), the broker
advertising the TLS port so every client connection is secured. Used by the tests and by
``hera-stack up --secure``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devstack.broker import Broker, start_broker
from devstack.pki import Issued
from devstack.ports import free_port
from devstack.sasl_gateway import SaslGateway
from devstack.stunnel import Stunnel, start_stunnel

# the test user of the gateway; its password is for throw-away stacks only
USER, PASSWORD = "hera-svc", "s3cret-Pa55word-never-logged"


@dataclass
class Endpoint:
    """One secured way into a broker; ``properties`` writes a client properties file."""

    bootstrap: str
    protocol: str
    workdir: Path
    parts: list[Broker | Stunnel | SaslGateway] = field(default_factory=list)

    def properties(self, name: str = "client", **props: str) -> Path:
        values = {"bootstrap.servers": self.bootstrap, "security.protocol": self.protocol,
                  **{k.replace("_", "."): v for k, v in props.items()}}
        path = self.workdir / f"{name}.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        return path

    def close(self) -> None:
        for part in reversed(self.parts):
            part.stop()


@contextlib.contextmanager
def secured_broker(workdir: Path, server: Issued, *, sasl: bool = False,
                   client_ca: Path | None = None) -> Iterator[Endpoint]:
    """tansu [+ SASL gateway] + stunnel, the broker advertising stunnel's port."""
    outer = free_port()
    bootstrap = f"127.0.0.1:{outer}"
    protocol = "SASL_SSL" if sasl else "SSL"
    endpoint = Endpoint(bootstrap, protocol, workdir)
    try:
        broker = start_broker(advertised=bootstrap)
        endpoint.parts.append(broker)
        target = broker.port
        if sasl:
            gateway = SaslGateway(free_port(), broker.port, {USER: PASSWORD})
            endpoint.parts.append(gateway)
            target = gateway.port
        endpoint.parts.append(start_stunnel(workdir, outer, target, server.cert, server.key,
                                            client_ca))
        yield endpoint
    finally:
        endpoint.close()
