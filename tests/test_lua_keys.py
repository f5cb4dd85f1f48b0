"""Every Redis key is built in relay/constants.py (issue 10): a Lua script gets its keys through KEYS
or the ``key.*`` functions generated from ``relay.constants.KEY_TEMPLATES``, never by spelling
``relay:…`` itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.store.scripts import key_functions

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("relay/store/lua/*.lua"), *ROOT.glob("workers/lua/*.lua")])

# health.lua (relay/store/stats.py's one read) still spells its keys: it is being reworked under
# issue 11 and is left to that change; every other script must not
SPELLED_KEYS_PENDING = {"relay/store/lua/health.lua"}

_LUA_STRING = re.compile(r"""(['"])((?:relay|arq):[^'"]*)\1""")


def _code(lua: str) -> str:
    """The script without its comments (they may name keys to explain them)."""
    return "\n".join(line.split("--", 1)[0] for line in lua.splitlines())


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_lua_scripts_build_no_key_by_hand(path: Path) -> None:
    name = str(path.relative_to(ROOT))
    spelled = [m.group(2) for m in _LUA_STRING.finditer(_code(path.read_text(encoding="utf-8")))]
    if name in SPELLED_KEYS_PENDING:
        assert spelled, f"{name} no longer spells keys: drop it from SPELLED_KEYS_PENDING"
    else:
        assert spelled == [], f"{name} builds keys by hand: pass them in KEYS or use key.* ({spelled})"


def test_key_functions_cover_every_template_key_a_script_uses() -> None:
    """A script calling ``key.x`` for an x that has no template would fail only when that line runs."""
    defined = set(re.findall(r"function key\.(\w+)\(", key_functions()))
    for path in SCRIPTS:
        used = set(re.findall(r"\bkey\.(\w+)\(", _code(path.read_text(encoding="utf-8"))))
        assert used <= defined, f"{path.name} calls undefined key functions: {sorted(used - defined)}"
