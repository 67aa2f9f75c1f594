"""The demo's machinery: narrated steps that verify themselves, the real CLIs as child
processes (always cleaned up), and ordinary background traffic.

The story itself is in :mod:`devstack.demo`.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console
from rich.text import Text

from devstack.process import stop_process
from devstack.waiting import wait_until as _wait_until


class DemoFailed(RuntimeError):
    """A step did not verify what it claims."""


def check(condition: bool, claim: str) -> None:
    """The demo's assertion: a failed claim fails the step (and the exit code)."""
    if not condition:
        raise DemoFailed(claim)


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took (DemoFailed after
    ``timeout``)."""
    return _wait_until(condition, timeout, what, interval, DemoFailed)


# --- narration --------------------------------------------------------------------------------


@dataclass
class Narrator:
    console: Console
    started: float = field(default_factory=time.monotonic)
    passed: list[tuple[str, float]] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.console.print(f"   {text}", highlight=False)

    def ok(self, text: str) -> None:
        self.console.print(f"   [green]✔[/] {text}", highlight=False)

    def blocked(self, text: str) -> None:
        self.console.print(f"   [red]⛔[/] {text}", highlight=False)

    def command(self, args: list[str]) -> None:
        self.console.print(f"   [dim]$[/] [cyan]{' '.join(_short(a) for a in args)}[/]",
                           highlight=False)

    def output(self, text: str, lines: int = 30, tail: bool = False) -> None:
        all_lines = text.rstrip().splitlines()
        for line in (all_lines[-lines:] if tail else all_lines[:lines]):
            self.console.print(Text("     │ ", style="dim") + Text(line), highlight=False)

    @contextlib.contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        self.console.rule(f"[bold]{number}. {title}[/]", align="left")
        t0 = time.monotonic()
        try:
            yield
        except DemoFailed as exc:
            self.console.print(f"[bold red]✘ step {number} failed:[/] {exc}")
            raise
        took = time.monotonic() - t0
        self.passed.append((title, took))
        self.console.print(f"[bold green]✔ step {number} verified[/] [dim]({took:.1f} s)[/]")


def _short(arg: str) -> str:
    """Shell display of one argument ($VARIABLES stay unquoted, to read as the user's own)."""
    import shlex

    if arg.startswith("$") and arg[1:].isidentifier():
        return arg
    if "'" in arg and not any(c in arg for c in '"$`'):
        return f'"{arg}"'  # SQL reads better in double quotes than with '"'"' escapes
    return shlex.quote(arg)


# --- child processes --------------------------------------------------------------------------


def cli(name: str) -> list[str]:
    """How to run the installed command ``name`` (capture, consumers, replay, guard)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    module = {"capture": "capture.cli", "consumers": "consumers.cli", "replay": "replay.cli",
              "guard": "guard.cli"}[name]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.argv[0] = "
            f"{name!r}; main()"]


@dataclass
class Children:
    """Every process the demo started; :meth:`stop_all` ends each of them (by its pid)."""

    logdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, label: str, args: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = (self.logdir / f"{label}.log").open("ab")
        # Own session: Ctrl-C reaches the demo only, which then stops the children in order.
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        log.close()
        self.procs[label] = proc
        return proc

    def alive(self, label: str) -> None:
        proc = self.procs[label]
        if proc.poll() is not None:
            raise DemoFailed(f"{label} exited with {proc.returncode}:\n{self.log(label)}")

    def log(self, label: str, chars: int = 2000) -> str:
        path = self.logdir / f"{label}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self, label: str, timeout: float = 20.0) -> int | None:
        """SIGTERM (the commands' clean stop), SIGKILL if it does not end in time."""
        proc = self.procs.pop(label, None)
        if proc is None:
            return None
        return stop_process(proc, timeout)

    def stop_all(self) -> None:
        for label in list(reversed(self.procs)):
            self.stop(label, timeout=10.0)


def run_cli(narrator: Narrator, args: list[str], *, expect: int | tuple[int, ...] = 0,
            show: bool = True, lines: int = 30, tail: bool = False, timeout: float = 60.0,
            display: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would, show it and its output, check its exit code."""
    narrator.command(display or args)
    # The output is indented by 7 columns: tables must fit the rest of the line.
    width = str(max(80, narrator.console.width - 8))
    env = {**os.environ, "COLUMNS": width, "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                         check=False)
    if show:
        # The tail of a command is its result (stdout); progress goes to stderr before it.
        narrator.output(res.stdout if tail else res.stdout + res.stderr, lines, tail)
    expected = (expect,) if isinstance(expect, int) else expect
    check(res.returncode in expected,
          f"{display[0] if display else args[0]} exited with {res.returncode}, expected "
          f"{' or '.join(map(str, expected))}:\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
    return res


# --- ordinary traffic -------------------------------------------------------------------------


@dataclass
class Traffic:
    """What a salon business does all day: people join, appointments get booked and moved.

    Never deletes anything (the detector must stay quiet about it) and only touches rows a
    person would touch; counted so the narration can say how much went on meanwhile.
    """

    dsn: str
    tick_s: float = 0.05
    transactions: int = 0
    joined: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        rnd = random.Random(7)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                orgs = [r[0] for r in conn.execute(
                    "SELECT id FROM core_organizations ORDER BY organization_code")]
                while not self._stop.wait(self.tick_s):
                    with conn.transaction():
                        if rnd.random() < 0.3:
                            self._join(conn, rnd.choice(orgs))
                        conn.execute(
                            "UPDATE core_relationships SET version = version + 1, "
                            "updated_at = now(), relationship_data = relationship_data || "
                            "jsonb_build_object('moved', now()) WHERE id = (SELECT id FROM "
                            "core_relationships WHERE relationship_type = "
                            "'CUSTOMER_HAS_APPOINTMENT' ORDER BY random() LIMIT 1)")
                    self.transactions += 1
        except Exception as exc:  # surfaced by the step that stops the traffic
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _join(self, conn: psycopg.Connection[tuple[object, ...]], org: object) -> None:
        self.joined += 1
        row = conn.execute("INSERT INTO app_users (email) VALUES (%s) RETURNING id",
                           (f"walk-in-{os.getpid()}-{self.joined}@example.com",)).fetchone()
        assert row is not None
        user = str(row[0])
        conn.execute(
            "INSERT INTO core_relationships (organization_id, from_entity_id, to_entity_id, "
            "relationship_type, smart_code, relationship_data) VALUES (%s, %s, %s, "
            "'USER_MEMBER_OF_ORG', 'HERA.AUTH.USER.MEMBERSHIP.v1', '{\"role\": \"staff\"}')",
            (org, user, str(org)))
        conn.execute(
            "INSERT INTO core_dynamic_data (organization_id, entity_id, field_name, "
            "field_value_text, smart_code) VALUES (%s, %s, 'role', 'staff', "
            "'HERA.SALON.USER.ROLE.v1')", (org, user))
