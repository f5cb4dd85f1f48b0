"""`make run` installs the runtime dependencies only; the dev tools come with `make test` and
`make check` (README, "Quick start"). Read from what make would run on a fresh clone (`make -n`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def plan(tmp_path: Path, target: str) -> str:
    """The commands `make TARGET` would run in a clone with no .venv yet."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    out = subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_installs_no_dev_tool(tmp_path: Path) -> None:
    run = plan(tmp_path, "run")
    assert "pip install -q -e ." in run and "[dev]" not in run, run
    assert "ensure-chromium" not in run and "relay dev" in run


@pytest.mark.parametrize("target", ["test", "check"])
def test_make_test_and_check_install_the_dev_tools(tmp_path: Path, target: str) -> None:
    assert "pip install -q -e '.[dev]'" in plan(tmp_path, target)


def test_make_help_aligns_its_descriptions(tmp_path: Path) -> None:
    """Every description starts in one column, the longest target name included (install-dev)."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    out = subprocess.run(["make", "-s", "help"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("make install-dev " in line for line in lines), out.stdout
    columns = set()
    for line in lines:
        target = line.split()[1]
        start = line.index(target) + len(target)
        columns.add(start + len(line[start:]) - len(line[start:].lstrip(" ")))
    assert len(columns) == 1, out.stdout
