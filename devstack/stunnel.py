"""TLS in front of a plaintext TCP service (the test broker, the SASL gateway) with Debian's
stunnel4: the broker advertises stunnel's port, so every client connection is TLS."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.postgres import StackError
from devstack.process import stop_process
from devstack.waiting import wait_until


@dataclass
class Stunnel:
    accept_port: int
    proc: subprocess.Popen[bytes]
    logfile: Path

    def stop(self) -> None:
        stop_process(self.proc)


def start_stunnel(workdir: Path, accept_port: int, connect_port: int, cert: Path, key: Path,
                  client_ca: Path | None = None) -> Stunnel:
    """TLS on 127.0.0.1:accept_port, plaintext to 127.0.0.1:connect_port; with ``client_ca``
    a client certificate signed by it is required (mutual TLS)."""
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    if binary is None:
        raise StackError("stunnel4 is not installed: run scripts/bootstrap.sh")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / f"stunnel-{accept_port}.conf"
    lines = ["foreground = yes", "pid =", "debug = 5", "[kafka]",
             f"accept = 127.0.0.1:{accept_port}", f"connect = 127.0.0.1:{connect_port}",
             f"cert = {cert}", f"key = {key}"]
    if client_ca is not None:
        lines += [f"CAfile = {client_ca}", "verifyChain = yes", "requireCert = yes"]
    conf.write_text("\n".join(lines) + "\n")
    logfile = workdir / f"stunnel-{accept_port}.log"
    proc = subprocess.Popen([binary, str(conf)], stdout=logfile.open("ab"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    tunnel = Stunnel(accept_port, proc, logfile)

    def listening() -> bool:
        if proc.poll() is not None:
            raise StackError(f"stunnel exited: {logfile.read_text()[-1500:]}")
        return "Configuration successful" in logfile.read_text()

    try:
        wait_until(listening, 20, f"stunnel did not start on port {accept_port}")
    except BaseException:
        tunnel.stop()
        raise
    return tunnel
