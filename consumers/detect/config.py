"""The rules file: thresholds and severities, with sane defaults built in.

TOML (``.toml``, standard library) or YAML (``.yaml``/``.yml``, needs PyYAML). Every key is
optional; unknown keys are an error so a typo never silently leaves a default in place::

    [mass_deletion]
    per_transaction = 10          # more than this many removals in one transaction
    window_seconds = 300
    per_organization_window = 25  # more than this many in the window, per organization
    global_window = 100           # ... and over all organizations
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumers.detect.alerts import Severity
from consumers.detect.errors import RulesFileError

# The plan's constraint v3 (core_relationships_smart_code_ck); NULL is allowed too.
SMART_CODE_V3_PATTERNS: tuple[str, ...] = (
    r"^HERA\.ACCOUNTING\.[A-Z]+(\.[A-Z]+)*\.v2$",
    r"^HERA\.UNIVERSAL\.[A-Z]+(\.[A-Z]+)*\.V1$",
    r"^HERA\.[A-Z]+(\.[A-Z]+)*\.v1$",
    r"^HERA\.WORKFLOW\.[A-Z]+(\.[A-Z]+)*\.v1$",
    r"^HERA\.AUTH\.[A-Z]+(\.[A-Z]+)*\.v1$",
    r"^HERA\.EMERGENCY\.[A-Z]+(\.[A-Z]+)*\.v1$",
)


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True


class MassDeletionRule(_Rule):
    severity: Severity = Severity.EMERGENCY
    table: str = "public.core_relationships"
    per_transaction: int = Field(10, ge=0)
    window_seconds: float = Field(300.0, gt=0)
    per_organization_window: int = Field(25, ge=0)
    global_window: int = Field(100, ge=0)
    count_deactivations: bool = True


class TruncateRule(_Rule):
    severity: Severity = Severity.EMERGENCY


class OrphanedUserRule(_Rule):
    severity: Severity = Severity.CRITICAL
    table: str = "public.core_relationships"
    membership_type: str = "USER_MEMBER_OF_ORG"


class RoleRemovedRule(_Rule):
    severity: Severity = Severity.CRITICAL
    table: str = "public.core_dynamic_data"
    fields: tuple[str, ...] = ("role", "salon_role")


class SmartCodeRule(_Rule):
    severity: Severity = Severity.WARNING
    tables: tuple[str, ...] = ("public.core_relationships",)
    patterns: tuple[str, ...] = SMART_CODE_V3_PATTERNS


class RulesConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: int = Field(5, ge=0, le=100)  # affected rows quoted in each alert
    mass_deletion: MassDeletionRule = MassDeletionRule()
    truncate: TruncateRule = TruncateRule()
    orphaned_user: OrphanedUserRule = OrphanedUserRule()
    role_removed: RoleRemovedRule = RoleRemovedRule()
    smart_code: SmartCodeRule = SmartCodeRule()


def load_rules(path: Path | None) -> RulesConfig:
    """The rules from ``path`` (TOML or YAML by extension), or the defaults when None."""
    if path is None:
        return RulesConfig()
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesFileError(f"cannot read rules file {path}: {exc.strerror}") from exc
    raw: Any
    try:
        is_yaml = path.suffix in {".yaml", ".yml"}
        raw = _load_yaml(text, path) if is_yaml else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"rules file {path} is not valid TOML: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RulesFileError(f"rules file {path} must be a mapping of rule sections")
    try:
        return RulesConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RulesFileError(
            f"rules file {path}: {where}: {first['msg']} (fix the value or remove the key "
            "to use the default)"
        ) from exc


def _load_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is a dev dependency
        raise RulesFileError(
            f"rules file {path} is YAML but PyYAML is not installed: pip install pyyaml, "
            "or write the rules as TOML"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesFileError(f"rules file {path} is not valid YAML: {exc}") from exc
