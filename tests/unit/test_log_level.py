"""``--log-level`` / ``HERA_LOG_LEVEL``: the same option on the three services, and an unknown
level is one usage line before anything starts (logging's own check raised a traceback)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from capture.cli import main as capture_main
from consumers.cli import main as consumers_main

COMMANDS = [(capture_main, ["run"]), (consumers_main, ["archive"]),
            (consumers_main, ["detect"])]


@pytest.mark.parametrize(("group", "args"), COMMANDS, ids=["capture", "archive", "detect"])
def test_an_unknown_log_level_from_the_environment_is_one_usage_line(group: object,
                                                                     args: list[str]) -> None:
    result = CliRunner().invoke(group, args, env={"HERA_LOG_LEVEL": "LOUD"})  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert "Invalid value for '--log-level': 'LOUD'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("group", "args"), COMMANDS, ids=["capture", "archive", "detect"])
def test_every_service_names_hera_log_level_in_its_help(group: object,
                                                                args: list[str]) -> None:
    result = CliRunner().invoke(group, [*args, "--help"],  # type: ignore[arg-type]
                                env={"HERA_LOG_LEVEL": "debug"})  # a valid level passes
    assert result.exit_code == 0
    assert "HERA_LOG_LEVEL" in result.output
