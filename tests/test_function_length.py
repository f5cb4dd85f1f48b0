"""No product function over 50 lines unless its docstring says why (DEVELOPERS.md's house rule, issue 22).

A function's length is from its ``def`` line to its last line, docstring and comments included, as the
file reads after ``ruff format``. Its reason starts "Long because" or "Long on purpose".
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("relay", "workers", "config")
LIMIT = 50
MARKERS = ("Long because", "Long on purpose")


def _unexplained(source: str, where: str) -> dict[str, int]:
    """The functions of ``source`` over LIMIT lines without a reason in their docstring, with their length."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            if length > LIMIT and not any(marker in doc for marker in MARKERS):
                found[f"{where}:{node.name}"] = length
    return found


def _long_functions() -> dict[str, int]:
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found |= _unexplained(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    return found


def test_no_function_over_50_lines_without_a_reason_in_its_docstring() -> None:
    unexplained = _long_functions()
    assert not unexplained, (
        f"over {LIMIT} lines with no reason in the docstring (split it, or say 'Long because ...'): {unexplained}"
    )


def test_the_measure_finds_a_long_function_and_accepts_its_reason() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT - 2))
    short = f'def f():\n    """Adds up."""\n{body}'
    assert _unexplained(short, "m.py") == {}  # 50 lines
    assert _unexplained(short + "    return 0\n", "m.py") == {"m.py:f": LIMIT + 1}
    explained = f'def f():\n    """Adds up.\n\n    Long because: a table."""\n{body}    return 0\n'
    assert _unexplained(explained, "m.py") == {}
