"""docker-compose.yml, checked statically (no Docker engine on these machines).

The environment variables of each hera-guard service are checked against the settings class
its command really reads: introspected from pydantic-settings, then instantiated from exactly
that environment, so a renamed option or a missing required variable fails here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from capture.settings import CaptureSettings
from consumers.archive.settings import ArchiveSettings, StorageSettings
from consumers.detect.settings import DetectSettings
from guard.settings import InstallSettings
from hera_kit.kafka_config import load

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

# The command a service runs -> the settings class that command parses.
COMMANDS: dict[tuple[str, ...], type[BaseSettings]] = {
    ("capture", "run"): CaptureSettings,
    ("consumers", "archive"): ArchiveSettings,
    ("consumers", "detect"): DetectSettings,
    ("guard", "install"): InstallSettings,
}


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _hera_services() -> list[str]:
    return [name for name, svc in _services().items()
            if tuple(svc.get("command", ())[:2]) in COMMANDS]


def _env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """HERA_* variable -> field, as pydantic-settings reads them."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {f"{prefix}{name}".upper(): name for name in cls.model_fields}


def _substituted(value: object) -> str:
    """Compose's ${VAR} / ${VAR:?msg} interpolation, with a placeholder value."""
    return re.sub(r"\$\{([A-Z_]+)[^}]*\}", "placeholder", str(value))


def test_the_file_defines_the_stack_and_the_three_long_running_commands() -> None:
    services = _services()
    assert {"postgres", "kafka", "capture", "archive", "detect"} <= set(services)
    commands = {tuple(svc["command"][:2]) for svc in services.values() if "command" in svc}
    assert {("capture", "run"), ("consumers", "archive"), ("consumers", "detect")} <= commands


def test_every_service_has_an_image_or_a_build_context_that_exists() -> None:
    for name, svc in _services().items():
        assert "image" in svc or "build" in svc, name
        build = svc.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build["context"])
            dockerfile = context / ("Dockerfile" if isinstance(build, str)
                                    else build.get("dockerfile", "Dockerfile"))
            assert context.is_dir(), name
            assert dockerfile.is_file(), name


def test_postgres_is_built_with_wal2json_and_pg_cron_and_configured_for_logical_decoding(
) -> None:
    build = _services()["postgres"]["build"]
    context = ROOT / build["context"]
    dockerfile = (context / build.get("dockerfile", "Dockerfile")).read_text()
    assert re.search(r"^FROM postgres:15", dockerfile, re.M)
    assert "postgresql-15-wal2json" in dockerfile and "postgresql-15-cron" in dockerfile
    conf = (context / "hera.conf").read_text()
    settings = dict(re.findall(r"^(\w[\w.]*)\s*=\s*(.+)$", conf, re.M))
    assert settings["wal_level"] == "logical"
    assert "pg_cron" in settings["shared_preload_libraries"]
    assert int(settings["max_replication_slots"]) >= 1
    assert int(settings["max_wal_senders"]) >= 1
    assert "cron.database_name" in settings
    # The config reaches postgresql.conf through an init script copied by the Dockerfile.
    assert "/docker-entrypoint-initdb.d/" in dockerfile
    assert "hera.conf" in (context / "00_hera_conf.sh").read_text()


def test_kafka_runs_in_kraft_mode_with_the_official_image() -> None:
    kafka = _services()["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


@pytest.mark.parametrize("service", ["capture", "archive", "detect"])
def test_every_service_reaches_kafka_over_sasl_ssl_through_the_mounted_properties_file(
        service: str, tmp_path: Path) -> None:
    services, compose = _services(), _compose()
    svc, kafka = services[service], services["kafka"]["environment"]
    env = svc["environment"]
    assert "HERA_BOOTSTRAP_SERVERS" not in env  # the file says where, and how
    assert re.fullmatch(r"\$\{KAFKA_PASSWORD:\?[^}]*\}", env["HERA_KAFKA_SASL_PASSWORD"])
    cfg = load(_mounted_kafka_config(svc, tmp_path), sasl_password="placeholder")
    assert cfg.security_protocol == "SASL_SSL" and cfg.ssl_check_hostname
    # the broker has that listener, advertised at that address, with that mechanism
    listeners = dict(reversed(x.split("://")) for x in kafka["KAFKA_ADVERTISED_LISTENERS"]
                     .split(","))
    assert listeners[cfg.bootstrap_servers] == "SASL_SSL"
    protocols = dict(x.split(":") for x in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
                     .split(","))
    assert protocols["SASL_SSL"] == "SASL_SSL"
    mechanism = str(cfg.sasl_mechanism)
    assert mechanism in kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
    # the CA the file names is the secret compose mounts; the user the file names is created
    assert "kafka-ca" in svc["secrets"] and "kafka-ca" in compose["secrets"]
    users = " ".join(services["kafka-users"]["entrypoint"])
    assert f"--entity-name {cfg.sasl_username}" in users and mechanism in users
    assert svc["depends_on"]["kafka-users"]["condition"] == "service_completed_successfully"


def _mounted_kafka_config(svc: dict[str, Any], tmp_path: Path) -> Path:
    """The service's properties file as compose mounts it, written out with its CA path
    pointing at a stand-in file (the real CA is the deployer's)."""
    target = svc["environment"]["HERA_KAFKA_CONFIG"]
    (mount,) = [c for c in svc["configs"] if c["target"] == target]
    content = _compose()["configs"][mount["source"]]["content"]
    ca = tmp_path / "ca.pem"
    ca.write_text("stand-in\n")
    path = tmp_path / "kafka-client.properties"
    path.write_text(content.replace("/run/secrets/kafka-ca", str(ca)))
    return path


@pytest.mark.parametrize("service", ["capture", "archive", "detect", "guard-install"])
def test_every_hera_variable_of_a_service_is_an_option_its_command_reads(
        service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    svc = _services()[service]
    cls = COMMANDS[tuple(svc["command"][:2])]
    env = {k: _substituted(v) for k, v in svc["environment"].items()}
    if "HERA_KAFKA_CONFIG" in env:
        env["HERA_KAFKA_CONFIG"] = str(_mounted_kafka_config(svc, tmp_path))
    known = _env_names(cls)
    unknown = sorted(k for k in env if k.startswith("HERA_") and k not in known)
    assert not unknown, f"{service}: {cls.__name__} does not read {unknown}"
    # And the command would start with exactly this environment (required ones given).
    for k in list(os.environ):
        if k.startswith("HERA_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cls()


def test_the_sql_layer_is_installed_before_capture_and_detect_start() -> None:
    services = _services()
    installers = [n for n, s in services.items()
                  if tuple(s.get("command", ())[:2]) == ("guard", "install")]
    assert installers, "a one-shot `guard install` service applies sql/"
    installer = installers[0]
    assert services[installer]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services[installer].get("restart") == "no"
    for name in ("capture", "detect"):
        assert (services[name]["depends_on"][installer]["condition"]
                == "service_completed_successfully"), name
    # The image copies sql/ before installing, and a regular install puts it where
    # `guard install` looks for it (pyproject data-files -> <prefix>/share/hera-guard/sql).
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY sql ", dockerfile, re.M)
    assert dockerfile.index("COPY sql ") < dockerfile.index("pip install")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"share/hera-guard/sql" = ["sql/*.sql"]' in pyproject


def test_services_wait_for_healthy_dependencies_and_have_health_checks() -> None:
    services = _services()
    for name in ("postgres", "kafka", "capture", "archive", "detect"):
        assert services[name].get("healthcheck", {}).get("test"), name
    for name in _hera_services():
        deps = services[name]["depends_on"]
        assert all(d.get("condition") for d in deps.values()), name
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"


def test_the_archive_lives_in_the_bucket_the_object_store_creates_at_start() -> None:
    compose = _compose()
    services = compose["services"]
    archive = services["archive"]
    env = archive["environment"]
    uri = env["HERA_ARCHIVE"]
    assert uri.startswith("s3://")
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    # a one-shot service creates exactly that bucket, after the store is healthy
    inits = [n for n, s in services.items() if f"s3.bucket.create -name {bucket}"
             in " ".join(s.get("entrypoint", []) + s.get("command", []))]
    assert inits, f"no service creates the bucket {bucket}"
    init = services[inits[0]]
    assert init.get("restart") == "no"
    store = next(iter(init["depends_on"]))
    assert init["depends_on"][store]["condition"] == "service_healthy"
    assert archive["depends_on"][inits[0]]["condition"] == "service_completed_successfully"
    # the archiver talks to that store, with the standard AWS variables StorageSettings reads
    assert env["AWS_ENDPOINT_URL"].startswith(f"http://{store}:")
    port = env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    assert f"-s3.port={port}" in services[store]["command"]
    known = {f"AWS_{f}".upper() for f in StorageSettings.model_fields}
    assert {k for k in env if k.startswith("AWS_")} <= known
    assert re.fullmatch(r"\$\{S3_SECRET_KEY:\?[^}]*\}", env["AWS_SECRET_ACCESS_KEY"])
    # the store keeps its data on a named volume
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services[store]["volumes"]}
    assert mounts["/data"] in compose["volumes"]


def test_the_archive_health_check_asks_its_readiness_probe() -> None:
    archive = _services()["archive"]
    port = str(archive["environment"]["HERA_METRICS_PORT"])
    assert f":{port}/readyz" in " ".join(archive["healthcheck"]["test"])
    assert archive["environment"]["HERA_METRICS_HOST"] == "0.0.0.0"


def test_the_capture_health_check_uses_the_metrics_port_it_configures() -> None:
    capture = _services()["capture"]
    port = str(capture["environment"]["HERA_METRICS_PORT"])
    assert f":{port}/metrics" in " ".join(capture["healthcheck"]["test"])
    assert capture["environment"]["HERA_METRICS_HOST"] == "0.0.0.0"


def test_no_password_is_written_into_the_file() -> None:
    for name, svc in _services().items():
        for key, value in (svc.get("environment") or {}).items():
            text = str(value)
            if "password" in text.lower() or "PASSWORD" in key:
                assert re.search(r"\$\{(POSTGRES|KAFKA)_PASSWORD[^}]*\}", text), (name, key)
            if "SECRET" in key:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", text), (name, key)
    for config in (_compose().get("configs") or {}).values():
        for secret in re.findall(r'"secretKey":\s*"([^"]*)"', config.get("content", "")):
            assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", secret), secret
