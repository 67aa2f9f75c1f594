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
    # thresholds of 0 would alert on every single removal: refused (ge=1), not obeyed
    per_transaction: int = Field(10, ge=1)
    window_seconds: float = Field(300.0, gt=0)
    per_organization_window: int = Field(25, ge=1)
    global_window: int = Field(100, ge=1)
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


def named_tables(rules: RulesConfig) -> dict[str, str]:
    """Every table an enabled rule names -> where (for the refusal line)."""
    out: dict[str, str] = {}
    if rules.mass_deletion.enabled:
        out.setdefault(rules.mass_deletion.table, "rules mass_deletion.table")
    if rules.orphaned_user.enabled:
        out.setdefault(rules.orphaned_user.table, "rules orphaned_user.table")
    if rules.role_removed.enabled:
        out.setdefault(rules.role_removed.table, "rules role_removed.table")
    if rules.smart_code.enabled:
        for table in rules.smart_code.tables:
            out.setdefault(table, "rules smart_code.tables")
    return out


def check_settings(rules: RulesConfig, tables: tuple[str, ...], poll_ms: int) -> None:
    """Settings that cannot work, refused before anything starts (one line each)."""
    from consumers.detect.errors import ConfigError

    window_ms = rules.mass_deletion.window_seconds * 1000
    if rules.mass_deletion.enabled and window_ms < poll_ms:
        raise ConfigError(
            f"rules mass_deletion.window_seconds {rules.mass_deletion.window_seconds:g} is "
            f"shorter than the poll (--poll-ms {poll_ms}): make the window longer or the "
            "poll shorter")
    missing = {t: w for t, w in named_tables(rules).items() if t not in tables}
    if missing:
        t = sorted(missing)[0]
        raise ConfigError(
            f"{missing[t]} names {t}, which the detector does not read (--tables "
            f"{','.join(tables)}): add it to --tables or fix the name")
