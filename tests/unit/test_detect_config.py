"""The rules file: TOML or YAML, defaults for what it leaves out, typos rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.detect.alerts import Severity
from consumers.detect.config import RulesConfig, load_rules
from consumers.detect.errors import RulesFileError


def test_without_a_rules_file_the_defaults_apply() -> None:
    rules = load_rules(None)
    assert rules == RulesConfig()
    assert rules.mass_deletion.per_transaction == 10
    assert rules.truncate.severity is Severity.EMERGENCY


def test_a_toml_rules_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[mass_deletion]\nper_transaction = 3\nseverity = 'CRITICAL'\n")
    rules = load_rules(path)
    assert rules.mass_deletion.per_transaction == 3
    assert rules.mass_deletion.severity is Severity.CRITICAL
    assert rules.mass_deletion.window_seconds == 300


def test_a_yaml_rules_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("samples: 2\nrole_removed:\n  fields: [role]\n")
    rules = load_rules(path)
    assert rules.samples == 2 and rules.role_removed.fields == ("role",)


def test_a_misspelt_key_is_an_error_that_names_it(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[mass_deletion]\nper_transation = 3\n")
    with pytest.raises(RulesFileError, match=r"mass_deletion\.per_transation"):
        load_rules(path)


def test_a_missing_rules_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match="cannot read rules file"):
        load_rules(tmp_path / "nope.toml")
