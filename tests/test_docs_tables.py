"""Every markdown table in the README and docs/ renders as one table: a header, its separator, and rows
with as many cells, with no paragraph dropped between its rows (which ends the table there and shows
the rest as text with pipes, as docs/configuration.md and docs/api.md once did)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATOR = re.compile(r"^\|(\s*:?-{3,}:?\s*\|)+$")


def _cells(line: str) -> int:
    # a pipe splits cells even inside a code span (GitHub's tables): only \| does not
    return line.replace("\\|", "").strip().strip("|").count("|") + 1


def problems(text: str) -> list[str]:
    found = []
    lines = text.splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("|"):
            i += 1
            continue
        if i + 1 >= len(lines) or not SEPARATOR.match(lines[i + 1].strip()):
            found.append(f"line {i + 1}: a table row with no header and separator above it: {line[:80]}")
            i += 1
            continue
        width = _cells(line)
        j = i + 2
        while j < len(lines) and lines[j].startswith("|"):
            if _cells(lines[j]) != width:
                found.append(f"line {j + 1}: {_cells(lines[j])} cells in a table of {width}: {lines[j][:80]}")
            j += 1
        i = j
    return found


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_table_is_whole(path: Path) -> None:
    assert problems(path.read_text(encoding="utf-8")) == []


def test_the_check_finds_a_paragraph_inside_a_table() -> None:
    broken = "| a | b |\n|---|---|\n| 1 | 2 |\n\nsome text\n| 3 | 4 |\n"
    assert problems(broken) and not problems("| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n")


def test_every_markdown_file_the_docs_name_is_in_the_repository() -> None:
    # docs/events.md once cited `2checkout-protocol.md`, a note outside the repository
    known = {p.name for p in DOCS} | {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    missing = []
    for path in DOCS:
        prose = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)  # not examples
        for name in re.findall(r"[\w./-]*?([\w-]+\.md)\b", prose):
            if name not in known:
                missing.append(f"{path.name}: {name}")
    assert missing == []
