"""The design documents live in the repository: every relative link of the README and of
docs/ names a file that exists, and the README's Development section links the docs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _relative_links(doc: Path) -> list[str]:
    return [t for t in _LINK.findall(doc.read_text()) if "://" not in t]


def test_every_relative_link_of_the_readme_and_the_docs_names_an_existing_file() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    missing = [f"{doc.relative_to(ROOT)} -> {target}" for doc in docs
               for target in _relative_links(doc) if not (doc.parent / target).exists()]
    assert missing == []


def test_the_readmes_development_section_links_each_design_document() -> None:
    readme = (ROOT / "README.md").read_text()
    development = readme[readme.index("## Development"):]
    for name in ("architecture", "event-contract", "schema-log", "archive-commit-protocol",
                 "identity"):
        assert f"(docs/{name}.md)" in development, name
    assert "/work/shared" not in development
