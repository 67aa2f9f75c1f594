"""Free loopback ports, so that several test runs can share one machine.

A free port is only free until someone binds it: parallel test workers and other runs on the
machine pick theirs at the same moments. So a server started on one is checked to be the one
listening there (``listens``), and started again on another port when it lost the race.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(inode)
    return inodes


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds the listening socket of ``port`` (Linux /proc):
    a port that answers may belong to another process that took it meanwhile."""
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:[") and link[len("socket:["):-1] in inodes:
            return True
    return False
