"""The README's configuration reference is generated from the settings classes; it must be
the one the code generates today, so an operator never reads a stale variable list."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("config_reference",
                                                  ROOT / "scripts" / "config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["config_reference"] = module
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_reference_is_the_generated_one() -> None:
    gen = _generator()
    readme = (ROOT / "README.md").read_text()
    section = readme.split(gen.START, 1)[1].split(gen.END, 1)[0]
    assert section.strip() == gen.reference().strip(), (
        "README.md's configuration reference is stale: run "
        ".venv/bin/python scripts/config_reference.py --write README.md")
