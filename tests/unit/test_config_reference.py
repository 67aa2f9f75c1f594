"""The README's configuration reference is generated from the settings classes; it must be
the one the code generates today, so an operator never reads a stale variable list."""

from __future__ import annotations

from types import ModuleType

from tests.script_fixtures import ROOT, load_script


def _generator() -> ModuleType:
    return load_script("config_reference")


def test_readme_configuration_reference_is_the_generated_one() -> None:
    gen = _generator()
    readme = (ROOT / "README.md").read_text()
    section = readme.split(gen.START, 1)[1].split(gen.END, 1)[0]
    assert section.strip() == gen.reference().strip(), (
        "README.md's configuration reference is stale: run "
        ".venv/bin/python scripts/config_reference.py --write README.md")
