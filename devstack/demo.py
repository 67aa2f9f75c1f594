"""``make demo`` (``python -m devstack.demo``): the incident of the plan, and its prevention.

On a throw-away local stack (PostgreSQL with pg_cron, and wal2json where installed; a
Kafka-protocol broker):
a salon business with several organizations and a few thousand users; the guard installed;
capture, archive and detect running as the real commands; then the disaster of the plan (a
smart-code constraint migration that wipes memberships), a TRUNCATE, a soft-delete orphaning;
what the guardian blocks, what gets through and is detected, the repair with ``replay``, and
the analyst's view of it all. Every step checks what it claims; exit 0 only if all did.
Everything it starts is stopped and removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click
import psycopg
from psycopg import sql
from rich.console import Console

from devstack.demo_stack import (
    Stack,
    alerts,
    connect_db,
    one_value,
    rows_json,
    wait_archived,
    wal_now,
)
from devstack.demo_support import (
    Children,
    DemoFailed,
    Narrator,
    Traffic,
    check,
    cli,
    run_cli,
    wait_until,
)
from hera_kit.text import first_line

ORGS = 5
USERS = 3000
V2_ONLY = r"smart_code ~ '^HERA\.ACCOUNTING\.[A-Z]+(\.[A-Z]+)*\.v2$'"
# The migration of the incident: make the data fit a new, too strict constraint.
MIGRATION = (  # constant text, no input
    f"DELETE FROM core_relationships WHERE NOT ({V2_ONLY});\n"  # noqa: S608
    f"ALTER TABLE core_relationships ADD CONSTRAINT smart_code_v2_only CHECK ({V2_ONLY});"
)
# The detector's rules for the demo: the smart-code rule also watches core_dynamic_data, so a
# harmless WARNING there proves the detector is live (core_relationships has the plan's
# constraint v3, which rejects such codes before they are written).
RULES_TOML = """[smart_code]
tables = ["public.core_relationships", "public.core_dynamic_data"]
"""
SLOT = "hera_demo"
PREFIX = "hera"


# --- the story --------------------------------------------------------------------------------


def step_business(n: Narrator, stack: Stack) -> None:
    from devstack.sample import SampleSize, create_schema, load_sample

    with connect_db(stack.dsn) as conn:
        create_schema(conn)
        load_sample(conn, SampleSize(organizations=ORGS, users=USERS,
                                     other_relationships=2000))
        users = one_value(conn, "SELECT count(*) FROM app_users")
        members = one_value(conn, "SELECT count(*) FROM core_relationships "
                             "WHERE relationship_type = 'USER_MEMBER_OF_ORG'")
        roles = one_value(conn, "SELECT count(*) FROM core_dynamic_data WHERE field_name = 'role'")
        orgs = one_value(conn, "SELECT count(*) FROM core_organizations")
    n.say(f"{orgs} salons, {users} users, {members} memberships (USER_MEMBER_OF_ORG), "
          f"{roles} roles, 2000 other relationships")
    check(orgs == ORGS and users == USERS and members >= USERS and roles == members,
          "the sample business was created")
    n.say("installing the guard (the plan's SQL layer, hardened) like an operator would:")
    run_cli(n, [*cli("guard"), "install", "--dsn", stack.dsn], lines=6,
            display=["guard", "install", "--dsn", "$HERA_DSN"])
    stack.traffic = Traffic(stack.dsn)
    stack.traffic.start()
    wait_until(lambda: stack.traffic is not None and stack.traffic.transactions >= 5, 15,
               "background traffic")
    n.ok("ordinary traffic runs in the background: people join salons, appointments move")


def _fast_backend() -> list[str]:
    """The confluent-kafka client when installed (the ``fast`` extra, which ``make`` installs):
    kafka-python is the bottleneck of capture and archive on a burst of changes."""
    import importlib.util

    return ["--kafka-backend", "confluent"] if importlib.util.find_spec("confluent_kafka") else []


def step_pipeline(n: Narrator, stack: Stack) -> None:
    children = stack.children
    assert children is not None
    common = ["--bootstrap-servers", stack.bootstrap, "--topic-prefix", PREFIX]
    capture = [*cli("capture"), "run", "--dsn", stack.dsn, *common, "--slot", SLOT,
               "--heartbeat-interval-s", "0.5", *_fast_backend()]
    archive = [*cli("consumers"), "archive", *common, "--archive", str(stack.archive),
               "--flush-interval-s", "0.2", *_fast_backend()]
    rules = stack.workdir / "rules.toml"
    rules.write_text(RULES_TOML)
    detect = [*cli("consumers"), "detect", *common, "--dsn", stack.dsn, "--rules", str(rules),
              "--archive-dir",
              str(stack.archive), "--state", str(stack.workdir / "detect-state.sqlite"),
              "--poll-ms", "50"]
    for label, args in (("capture", capture), ("archive", archive), ("detect", detect)):
        n.command([Path(args[0]).name if not args[0].endswith("python") else label,
                   *args[1:]])
        children.spawn(label, args, env={"HERA_CONFIRM_INTERVAL_S": "0.1"})
    with connect_db(stack.dsn) as conn:
        def streaming() -> bool:
            for label in ("capture", "archive", "detect"):
                children.alive(label)
            return bool(conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                                     "AND active", (SLOT,)).fetchone())
        took = wait_until(streaming, 60, "capture to stream")
        plugin = one_value(conn, "SELECT plugin FROM pg_replication_slots WHERE slot_name = %s",
                      (SLOT,))
        n.ok(f"capture took its snapshot and streams the slot {SLOT} with {plugin} "
             f"(--plugin auto) ({took:.1f} s)")
        rows = one_value(conn, "SELECT (SELECT count(*) FROM core_relationships) + "
                          "(SELECT count(*) FROM core_dynamic_data)")
    target = wal_now(stack.dsn)
    took = wait_archived(stack, target, "the archive to catch up with PostgreSQL", 60)
    from consumers.archive.reader import connect_history

    con = connect_history(stack.archive)
    try:
        snap, live = con.execute("SELECT count(*) FILTER (WHERE op = 'r'), "
                                 "count(*) FILTER (WHERE op <> 'r') FROM changes").fetchone() \
            or (0, 0)
    finally:
        con.close()
    check(snap >= min(rows, 9000), f"the archive holds the snapshot ({snap} of ~{rows} rows)")
    check(live > 0, "the archive holds live changes of the background traffic")
    n.ok(f"the archive holds {snap} snapshot rows and {live} live changes, "
         f"caught up {took:.1f} s after asking")
    # Proof the detector is live (and past the snapshot, which it reads first): a field with
    # a smart code outside the plan's patterns is a WARNING, not an incident.
    seen = {str(a["id"]) for a in alerts(stack.dsn, set())}
    with connect_db(stack.dsn) as conn:
        conn.execute("INSERT INTO core_dynamic_data (organization_id, entity_id, field_name, "
                     "field_value_text, smart_code) SELECT id, 'demo', 'note', 'hello', "
                     "'hera.lowercase.code' FROM core_organizations LIMIT 1")
    took = wait_until(lambda: any(a["rule"] == "NON_COMPLIANT_SMART_CODE"
                                  for a in alerts(stack.dsn, seen)), 30,
                      "the detector's warning")
    n.ok(f"detect is watching: a non-compliant smart code raised a WARNING ({took:.1f} s)")
    stack.facts["quiet_since"] = {str(a["id"]) for a in alerts(stack.dsn, set())}


def step_disaster(n: Narrator, stack: Stack) -> None:
    with connect_db(stack.dsn) as conn:
        before = one_value(conn, "SELECT count(*) FROM core_relationships")
        n.say("the deployment of the incident, [bold]checked first[/] with the plan's "
              "pre-deployment validation:")
    run_cli(n, [*cli("guard"), "predeploy", "--dsn", stack.dsn, "--new-constraint", V2_ONLY,
                "--report-dir", str(stack.workdir)], expect=1, lines=12,
            display=["guard", "predeploy", "--dsn", "$HERA_DSN", "--new-constraint",
                     V2_ONLY])
    n.ok("predeploy says BLOCKED (exit 1): the constraint would break authentication")
    n.say("someone runs the migration anyway:")
    attempts = [
        ("the constraint migration", MIGRATION),
        ("TRUNCATE core_relationships", "TRUNCATE core_relationships"),
        ("a soft-delete that orphans a user",
         "UPDATE core_relationships SET is_active = false WHERE relationship_type = "
         "'USER_MEMBER_OF_ORG' AND from_entity_id = (SELECT from_entity_id FROM "
         "core_relationships WHERE relationship_type = 'USER_MEMBER_OF_ORG' "
         "GROUP BY 1 HAVING count(*) = 1 ORDER BY 1 LIMIT 1)"),
    ]
    with connect_db(stack.dsn) as conn:
        for what, statement in attempts:
            for line in statement.splitlines():
                n.command(["psql", "-c", line])
            try:
                with conn.transaction():
                    conn.execute(statement.encode())
            except psycopg.Error as exc:
                n.blocked(f"{what}: [bold]blocked[/] ({exc.sqlstate}) "
                          f"{first_line(exc)}")
                check(exc.sqlstate in ("HG001", "HG002", "HG003"),
                      f"{what} was refused by the guardian (got {exc.sqlstate})")
            else:
                raise DemoFailed(f"{what} went through the guardian")
        after = one_value(conn, "SELECT count(*) FROM core_relationships")
        check(after >= before, "no relationship was lost")
    n.ok(f"nothing lost: {after} relationships (the traffic keeps adding some)")


def step_gets_through(n: Narrator, stack: Stack, max_latency_s: float) -> None:
    quiet = stack.facts["quiet_since"]
    noise = [a for a in alerts(stack.dsn, quiet)]
    check(not noise, f"no alert from ordinary traffic (got {[a['rule'] for a in noise]})")
    with connect_db(stack.dsn) as conn:
        # Salon 2: half of its members belong to no other salon (the sample's layout).
        org, name = conn.execute("SELECT id, organization_name FROM core_organizations ORDER "
                                 "BY organization_code OFFSET 1 LIMIT 1").fetchone() or ("", "")
        roles = rows_json(conn, "SELECT to_jsonb(d)::text FROM core_dynamic_data d")
        stack.facts.update(org=org, roles=roles)
        n.say(f"an operator [bold]forces[/] the migration for {name} with the break-glass "
              "opt-ins (logged, but allowed):")
        n.command(["psql", "-c", "SET LOCAL hera_guard.allow_mass_change = 'ticket 4711'; "  # noqa: S608 - shown, not run
                   "SET LOCAL hera_guard.allow_orphaning = 'ticket 4711'; "
                   f"DELETE FROM core_relationships WHERE organization_id = '{org}' "
                   f"AND NOT ({V2_ONLY})"])
        with conn.transaction():
            conn.execute("SET LOCAL hera_guard.allow_mass_change = 'ticket 4711'")
            conn.execute("SET LOCAL hera_guard.allow_orphaning = 'ticket 4711'")
            lost = {str(r[0]) for r in conn.execute(
                sql.SQL("DELETE FROM core_relationships r WHERE organization_id = %s "
                        "AND NOT ({}) RETURNING to_jsonb(r)::text").format(sql.SQL(V2_ONLY)),
                (org,))}
            deleted = len(lost)
            members = sum('"USER_MEMBER_OF_ORG"' in r for r in lost)
            xid_mass = int(one_value(conn, "SELECT txid_current()"))
        n.say(f"   {deleted} relationships of {name} deleted, {members} of them memberships "
              f"(transaction {xid_mass})")
        n.say("and a cleanup script truncates the roles table (the guardian covers "
              "core_relationships only):")
        n.command(["psql", "-c", "TRUNCATE core_dynamic_data"])
        with conn.transaction():
            conn.execute("TRUNCATE core_dynamic_data")
            xid_trunc = int(one_value(conn, "SELECT txid_current()"))
        check(members > 0 and deleted > members,
              "the forced migration deleted the organization's memberships and links")
    stack.facts.update(xid_mass=xid_mass, xid_trunc=xid_trunc, lost=lost)

    def fired() -> bool:
        rules = {(a["rule"], a["transaction"]["xid"]) for a in alerts(stack.dsn, quiet)}
        return {("MASS_RELATIONSHIP_DELETION", xid_mass), ("USER_ORPHANED", xid_mass),
                ("TABLE_TRUNCATED", xid_trunc)} <= rules
    wait_until(fired, 30, "the detector's alerts")
    from datetime import datetime

    worst = 0.0
    for a in alerts(stack.dsn, quiet):
        latency = (datetime.fromisoformat(a["detected_at"])
                   - datetime.fromisoformat(a["transaction"]["commit_time"])).total_seconds()
        worst = max(worst, latency)
        n.console.print(f"   [bold red]ALERT[/] {a['severity']} {a['rule']}: {a['message']}",
                        highlight=False)
        n.console.print(f"      detected {latency * 1000:.0f} ms after the commit; undo with:",
                        highlight=False)
        n.console.print(f"      [cyan]{a['replay_command']}[/]", highlight=False)
    check(worst <= max_latency_s,
          f"every alert within {max_latency_s:g} s of its commit (worst {worst:.2f} s)")
    n.ok(f"detected within {worst * 1000:.0f} ms of the commit, with the command to undo it")
    checks = _health(n, stack, expect=1)
    check(checks.get("missing_org_memberships") == "CRITICAL",
          "guard health reports the users without membership")
    n.ok("guard health says CRITICAL (exit 1): users without memberships and roles")
    with connect_db(stack.dsn) as conn:
        n.say("meanwhile, life goes on: a new colleague joins that salon")
        user = one_value(conn, "INSERT INTO app_users (email) VALUES ('late.joiner@example.com') "
                          "RETURNING id::text")
        conn.execute("INSERT INTO core_relationships (organization_id, from_entity_id, "
                     "to_entity_id, relationship_type, smart_code) VALUES (%s, %s, %s, "
                     "'USER_MEMBER_OF_ORG', 'HERA.AUTH.USER.MEMBERSHIP.v1')",
                     (org, user, str(org)))
        conn.execute("INSERT INTO core_dynamic_data (organization_id, entity_id, field_name, "
                      "field_value_text, smart_code) VALUES (%s, %s, 'role', 'owner', "
                      "'HERA.SALON.USER.ROLE.v1')", (org, user))
    stack.facts["late_joiner"] = user


def _health(n: Narrator, stack: Stack, expect: int) -> dict[str, str]:
    """``guard health --json``, shown one line per check; check name -> status."""

    res = run_cli(n, [*cli("guard"), "health", "--dsn", stack.dsn, "--json"], expect=expect,
                  show=False, display=["guard", "health", "--dsn", "$HERA_DSN", "--json"])
    checks = json.loads(res.stdout)
    for c in checks:
        colour = {"HEALTHY": "green", "WARNING": "yellow"}.get(c["status"], "red")
        n.say(f"  [{colour}]{c['status']:<8}[/] {c['check_name']:<28} {c['details']}")
    return {str(c["check_name"]): str(c["status"]) for c in checks}


def step_repair(n: Narrator, stack: Stack) -> None:
    assert stack.traffic is not None
    stack.traffic.stop()
    check(not stack.traffic.errors, f"background traffic ran cleanly {stack.traffic.errors}")
    n.say(f"(background traffic stopped after {stack.traffic.transactions} transactions, "
          f"{stack.traffic.joined} new members)")
    wait_archived(stack, wal_now(stack.dsn), "the archive to hold the incident")
    for xid in (stack.facts["xid_mass"], stack.facts["xid_trunc"]):
        base = [*cli("replay"), "--archive", str(stack.archive), "--revert-xid", str(xid),
                "--dsn", stack.dsn]
        shown = ["replay", "--archive", str(stack.archive), "--revert-xid", str(xid),
                 "--dsn", "$HERA_DSN"]
        run_cli(n, [*base, "--dry-run"], lines=7, display=[*shown, "--dry-run"])
        run_cli(n, base, lines=3, tail=True, display=shown)
    org, user = stack.facts["org"], stack.facts["late_joiner"]
    with connect_db(stack.dsn) as conn:
        now = rows_json(conn, "SELECT to_jsonb(r)::text FROM core_relationships r "
                               "WHERE organization_id = %s", (org,))
        missing = stack.facts["lost"] - now
        check(not missing, f"every deleted relationship is back, identical ({len(missing)} "
                           "missing or different)")
        roles_now = rows_json(conn, "SELECT to_jsonb(d)::text FROM core_dynamic_data d")
        check(stack.facts["roles"] <= roles_now, "every role is back, identical")
        kept = one_value(conn, "SELECT count(*) FROM core_relationships WHERE from_entity_id = %s",
                    (user,)) + one_value(conn, "SELECT count(*) FROM core_dynamic_data "
                                          "WHERE entity_id = %s", (user,))
        check(kept == 2, "the later membership and role of the new colleague were kept")
    n.ok(f"{len(stack.facts['lost'])} relationships and {len(stack.facts['roles'])} roles "
         "back exactly as they were; the new colleague's membership and role kept")
    checks = _health(n, stack, expect=0)
    check(set(checks.values()) == {"HEALTHY"}, f"every health check is HEALTHY ({checks})")
    n.ok("guard health: HEALTHY (exit 0)")
    wait_archived(stack, wal_now(stack.dsn), "the archive to hold the repair")
    run_cli(n, [*cli("replay"), "verify", "--archive", str(stack.archive), "--dsn", stack.dsn],
            lines=8, display=["replay", "verify", "--archive", str(stack.archive), "--dsn",
                              "$HERA_DSN"])
    n.ok("replay verify: the archive's state and the live tables agree, row for row")


def step_analyst(n: Narrator, stack: Stack) -> None:
    wait_archived(stack, wal_now(stack.dsn), "the archive to hold the repair")
    history = [*cli("consumers"), "history", str(stack.archive)]
    per_minute = ("SELECT date_trunc('minute', commit_ts) AS minute, table_name, "
                  "count(*) FILTER (WHERE op = 'd') AS deletions, "
                  "count(*) FILTER (WHERE op = 't') AS truncates "
                  "FROM changes WHERE op IN ('d', 't') GROUP BY ALL ORDER BY ALL")
    n.say("deletions per minute:")
    res = run_cli(n, [*history, per_minute], display=["consumers", "history",
                                                       str(stack.archive), per_minute])
    check(str(len(stack.facts["lost"])) in res.stdout, "the deletions show in the history")
    with connect_db(stack.dsn) as conn:
        rel = one_value(conn, "SELECT id::text FROM core_relationships WHERE organization_id = %s "
                         "AND relationship_type = 'USER_MEMBER_OF_ORG' ORDER BY id LIMIT 1",
                   (stack.facts["org"],))
    # The relationship's id is a uuid read from the database, not user input.
    timeline = ("SELECT commit_ts, lsn, xid, op, after ->> 'is_active' AS active "  # noqa: S608
                f"FROM relationship_timeline('{rel}')")
    n.say("the timeline of one membership:")
    res = run_cli(n, [*history, timeline], display=["consumers", "history",
                                                     str(stack.archive), timeline])
    from consumers.archive.reader import connect_history

    con = connect_history(stack.archive)
    try:
        ops = [r[0] for r in con.execute(
            "SELECT op FROM relationship_timeline($1)", [rel]).fetchall()]
    finally:
        con.close()
    check(ops[:1] == ["r"] and "d" in ops and ops[-1] == "c",
          f"the timeline reads snapshot, deletion, re-insert (got {ops})")
    n.ok("snapshot → deleted by the forced migration → re-inserted by replay")
    xid = stack.facts["xid_mass"]
    copy = stack.workdir / "core_relationships_before_incident.parquet"
    n.say("for the incident report: the table exactly as it was just before the transaction")
    run_cli(n, [*cli("replay"), "--archive", str(stack.archive), "--table",
                "public.core_relationships", "--before-xid", str(xid), "--output", str(copy)],
            lines=3, display=["replay", "--archive", str(stack.archive), "--table",
                              "public.core_relationships", "--before-xid", str(xid),
                              "--output", copy.name])
    import duckdb

    with duckdb.connect() as con:
        ids = {str(r[0]) for r in con.execute(
            "SELECT id FROM read_parquet($1)", [str(copy)]).fetchall()}
    lost_ids = {json.loads(r)["id"] for r in stack.facts["lost"]}
    check(lost_ids <= ids, "the copy holds every row the incident deleted")
    n.ok(f"{len(ids)} rows in {copy.name}, every deleted one among them")


# --- running it -------------------------------------------------------------------------------


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up path as Ctrl-C


def run_demo(console: Console, max_latency_s: float) -> bool:
    from devstack.broker import start_broker
    from devstack.postgres import start_postgres

    n = Narrator(console)
    workdir = Path(tempfile.mkdtemp(prefix="hera-demo-"))
    stack = Stack(workdir=workdir, archive=workdir / "archive")
    stack.children = Children(workdir)
    cluster = broker = None
    ok = False
    try:
        console.print("[bold]hera-guard demo[/]: the relationship-wipe incident, and how "
                      "hera-guard prevents, detects and repairs it\n")
        cluster = start_postgres()
        broker = start_broker()
        with connect_db(cluster.dsn()) as conn:
            conn.execute("CREATE DATABASE hera")
        stack.dsn, stack.bootstrap = cluster.dsn("hera"), broker.bootstrap_servers
        console.print(f"local stack: PostgreSQL {cluster.url('hera')} (pg_cron; capture "
                      "--plugin auto), "
                      f"Kafka-protocol broker {stack.bootstrap}; work dir {workdir}\n")
        steps: list[tuple[str, Callable[[], None]]] = [
            ("A salon business, guarded, with traffic", lambda: step_business(n, stack)),
            ("capture, archive and detect running", lambda: step_pipeline(n, stack)),
            ("The disaster, as it happened, and the guardian", lambda: step_disaster(n, stack)),
            ("What gets through is detected",
             lambda: step_gets_through(n, stack, max_latency_s)),
            ("The repair: replay undoes exactly the damage", lambda: step_repair(n, stack)),
            ("The analyst's view: the history in DuckDB", lambda: step_analyst(n, stack)),
        ]
        for number, (title, fn) in enumerate(steps, 1):
            with n.step(number, title):
                fn()
        ok = True
    except DemoFailed:
        for label in ("capture", "archive", "detect"):
            log = stack.children.log(label, 1500)
            if log:
                console.print(f"[dim]--- {label} log (end) ---[/]")
                console.print(log, markup=False, highlight=False)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted: cleaning up[/]")
    finally:
        # A second Ctrl-C must not abandon the clean-up half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stack.traffic is not None:
            stack.traffic.stop()
        stack.children.stop_all()
        if broker is not None:
            broker.stop()
            shutil.rmtree(broker.logfile.parent, ignore_errors=True)
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - n.started
    if ok:
        console.rule("[bold green]all 6 steps verified[/]")
        for title, took in n.passed:
            console.print(f"  [green]✔[/] {title} [dim]{took:.1f} s[/]")
        console.print(f"total {total:.0f} s; everything it started is stopped and removed")
    else:
        console.print(f"[bold red]demo failed[/] after {total:.0f} s; cleaned up")
    return ok


@click.command()
@click.option("--max-alert-latency", default=1.0, show_default=True,
              help="seconds from a commit to its alert that still count as detected in time")
def main(max_alert_latency: float) -> None:
    """Narrate the incident of the plan and its prevention on a throw-away local stack."""
    signal.signal(signal.SIGTERM, _terminate)
    console = Console(width=None if Console().is_terminal else 150)
    sys.exit(0 if run_demo(console, max_alert_latency) else 1)


if __name__ == "__main__":
    main()
