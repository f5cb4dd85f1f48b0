"""The README's "where to look" table and docs/design.md name paths that exist, and design.md names
every module, so a newcomer finds each one from the docs (issue 10).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# what the docs may name that is not a file of the tree
_PATH = re.compile(r"`((?:relay|workers|config|tests|docs|bench|scripts)/[\w./-]*)(?::\w+)?`")


def _named_paths(text: str) -> set[str]:
    return {m.group(1) for m in _PATH.finditer(text)}


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _table_rows(section: str) -> dict[str, str]:
    """``| `folder/` | cell |`` rows: folder -> the rest of the row."""
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`([\w/]+/)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


@pytest.mark.parametrize("doc", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.md"))])
def test_every_path_the_docs_name_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    # what a run makes (bench/results/) is named but ignored by git
    missing = sorted(
        p
        for p in _named_paths(text)
        if not (ROOT / p).exists() and subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", p]).returncode != 0
    )
    assert missing == [], f"{doc} names paths that do not exist: {missing}"


def test_the_readme_table_names_modules_that_exist() -> None:
    section = _section((ROOT / "README.md").read_text(encoding="utf-8"), "## How it works, and where to look")
    rows = _table_rows(section)
    assert {"relay/store/", "relay/web/", "relay/cli/"} <= set(rows)
    missing = [
        f"{folder}{name}"
        for folder, cell in rows.items()
        for name in re.findall(r"`([\w/.]+\.(?:py|lua))`", cell)
        if not (ROOT / folder / name).exists()
    ]
    assert missing == []


def _modules() -> list[Path]:
    found = []
    for top in ("relay", "workers", "config"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in {".py", ".lua", ".toml", ".json"} and path.name not in {"__init__.py", "__main__.py"}:
                found.append(path)
    return found


def test_design_names_every_module() -> None:
    """Each module is in its folder's row of design.md's table (a Lua script may be named anywhere)."""
    text = (ROOT / "docs/design.md").read_text(encoding="utf-8")
    rows = _table_rows(_section(text, "## 0. Where the code lives"))
    unnamed = []
    for path in _modules():
        rel = path.relative_to(ROOT)
        if path.suffix == ".lua":
            if f"lua/{path.name}" not in text:
                unnamed.append(str(rel))
            continue
        folder = str(rel.parent) + "/"
        if f"`{path.name}`" not in rows.get(folder, "") and f"`{rel}`" not in text:
            unnamed.append(str(rel))
    assert unnamed == [], f"docs/design.md's table does not name: {unnamed}"
