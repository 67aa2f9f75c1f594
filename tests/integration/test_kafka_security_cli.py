"""The services configured through one properties file over SASL_SSL: capture streams, the
archive and the detector refuse a wrong password in one line with their positions untouched,
and the secret is in no output, no /metrics, no --help and no child's command line."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from capture.event import ChangeEvent
from consumers.kafka_source import Backend, open_source
from devstack.ports import free_port
from devstack.waiting import wait_until
from hera_kit import kafka_config
from tests.capture_fixtures import CaptureProcess, confirmed_lsn
from tests.conftest import HeraDB
from tests.security_fixtures import PASSWORD, USER, Endpoint, Pki

BACKENDS: list[Backend] = ["kafka-python", "confluent"]


def sasl_properties(endpoint: Endpoint, pki: Pki) -> Path:
    """The file a platform team hands out: no secret in it (the password is in the
    environment, HERA_KAFKA_SASL_PASSWORD)."""
    return endpoint.properties("service", sasl_mechanisms="SCRAM-SHA-512", sasl_username=USER,
                               ssl_ca_location=str(pki.ca))


def env(password: str) -> dict[str, str]:
    return {**os.environ, "HERA_KAFKA_SASL_PASSWORD": password, "PYTHONUNBUFFERED": "1"}


def one_line_refusal(result: subprocess.CompletedProcess[str], *, expect: str) -> str:
    assert result.returncode != 0
    assert PASSWORD not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and
             not line.startswith("{")]  # JSON log lines aside: the one line for the operator
    assert len(lines) == 1 and expect in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_capture_streams_over_sasl_ssl_from_a_properties_file_and_a_wrong_password_moves_nothing(
        hera_db: HeraDB, sasl_broker: Endpoint, pki: Pki, topic_prefix: str, slot_name: str,
        tmp_path: Path, backend: Backend) -> None:
    props = sasl_properties(sasl_broker, pki)
    port = free_port()
    cap = CaptureProcess(hera_db.dsn, sasl_broker.bootstrap, topic_prefix, slot_name,
                         ["--kafka-config", str(props), "--kafka-backend", backend,
                          "--metrics-port", str(port)], tmp_path / "capture.log")
    os.environ["HERA_KAFKA_SASL_PASSWORD"] = PASSWORD  # the child inherits it, not its argv
    try:
        cap.start()
        assert cap.proc is not None
        argv = Path(f"/proc/{cap.proc.pid}/cmdline").read_bytes().decode()
        assert PASSWORD not in argv  # what ps shows of the child
        with hera_db.connect() as conn:
            conn.execute("DELETE FROM core_relationships WHERE id = "
                         "(SELECT id FROM core_relationships ORDER BY id LIMIT 1)")
        cfg = kafka_config.load(props, sasl_password=PASSWORD)
        source = open_source(cfg, topic_prefix, ("public.core_relationships",), backend,
                             include_transactions=False)
        try:
            source.assign({})
            seen: list[ChangeEvent] = []

            def deleted() -> bool:
                seen.extend(ChangeEvent.from_json(r.value) for r in source.poll(200)
                            if r.value is not None)
                return any(e.op.value == "d" for e in seen)
            wait_until(deleted, 60, "the delete read back over SASL_SSL")
        finally:
            source.close()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert PASSWORD.encode() not in metrics
        assert cap.terminate() == 0
    finally:
        os.environ.pop("HERA_KAFKA_SASL_PASSWORD", None)
        if cap.proc is not None and cap.proc.poll() is None:
            cap.proc.kill()
            cap.proc.wait(30)
    assert PASSWORD not in cap.log()
    before = confirmed_lsn(hera_db.dsn, slot_name)
    with hera_db.connect() as conn:  # a change the refused run must not confirm past
        conn.execute("DELETE FROM core_relationships WHERE id = "
                     "(SELECT id FROM core_relationships ORDER BY id LIMIT 1)")
    result = subprocess.run(
        [sys.executable, "-m", "capture", "run", "--dsn", hera_db.dsn, "--slot", slot_name,
         "--topic-prefix", topic_prefix, "--kafka-config", str(props),
         "--kafka-backend", backend], env=env("wrong-" + PASSWORD), capture_output=True,
        text=True, timeout=120)
    one_line_refusal(result, expect=f"authentication failed for user {USER}")
    assert confirmed_lsn(hera_db.dsn, slot_name) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_archive_refuses_a_wrong_password_in_one_line_and_creates_nothing(
        sasl_broker: Endpoint, pki: Pki, tmp_path: Path, backend: Backend) -> None:
    archive = tmp_path / "archive"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "consumers"), "archive", "--archive", str(archive),
         "--kafka-config", str(sasl_properties(sasl_broker, pki)), "--kafka-backend", backend],
        env=env("wrong-" + PASSWORD), capture_output=True, text=True, timeout=120)
    one_line_refusal(result, expect=f"authentication failed for user {USER}")
    assert not archive.exists() or not any(archive.iterdir())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_detector_refuses_an_unknown_ca_in_one_line_and_keeps_no_state(
        sasl_broker: Endpoint, pki: Pki, tmp_path: Path, backend: Backend) -> None:
    props = sasl_broker.properties("other-ca", sasl_mechanisms="SCRAM-SHA-256",
                                   sasl_username=USER, ssl_ca_location=str(pki.other_ca))
    state = tmp_path / "state"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "consumers"), "detect", "--state-dir", str(state),
         "--kafka-config", str(props), "--kafka-backend", backend],
        env=env(PASSWORD), capture_output=True, text=True, timeout=120)
    one_line_refusal(result, expect="unknown CA")
    assert not state.exists() or not any(state.iterdir())


def test_an_unknown_property_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    props = tmp_path / "bad.properties"
    props.write_text("bootstrap.servers=127.0.0.1:9\nsasl.kerberos.service.name=kafka\n")
    result = subprocess.run(
        [sys.executable, "-m", "capture", "run", "--dsn", "host=127.0.0.1 port=9",
         "--kafka-config", str(props)], capture_output=True, text=True, timeout=60)
    one_line_refusal(result, expect="sasl.kerberos.service.name: unknown or unsupported")


def test_help_never_shows_the_secret_from_the_environment() -> None:
    for command in (["capture", "run"], ["consumers", "archive"], ["consumers", "detect"]):
        out = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:],
                              "--help"], env=env(PASSWORD), capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0 and "--kafka-config" in out.stdout
        assert PASSWORD not in out.stdout + out.stderr



def test_hera_stack_up_secure_serves_kafka_over_sasl_ssl_through_a_properties_file() -> None:
    import signal

    proc = subprocess.Popen([str(Path(sys.executable).parent / "hera-stack"), "up",
                             "--no-sample", "--secure"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        env_lines: dict[str, str] = {}
        while not (line := proc.stdout.readline()).startswith("export those, then"):
            assert line, "hera-stack up ended early"
            name, _, value = line.strip().partition("=")
            env_lines[name] = value
        assert "HERA_BOOTSTRAP_SERVERS" not in env_lines
        path = Path(env_lines["HERA_KAFKA_CONFIG"])
        assert path.stat().st_mode & 0o077 == 0  # the file with the password is the owner's
        cfg = kafka_config.load(path)
        assert (cfg.security_protocol, cfg.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert PASSWORD not in " ".join(env_lines.values())
        from capture.kafka_admin import check_reachable, ensure_topics

        check_reachable(cfg)
        ensure_topics(cfg, ["stack.public.t"])
        source = open_source(cfg, "stack", ("public.t",), "confluent")
        try:
            assert source.cluster_id() is not None
        finally:
            source.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
