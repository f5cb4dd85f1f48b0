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

# every script gets its keys through KEYS or key.* (health.lua too, since issue 23); a script that must
# still spell one would be listed here, and the test makes sure it is taken off once it no longer does
SPELLED_KEYS_PENDING: set[str] = set()

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


def test_the_engine_sends_results_in_wire_order() -> None:
    """engine.Result.args lists its fields by position: they must be wire.RESULT_FIELDS' order."""
    from types import SimpleNamespace
    from typing import cast

    from config.settings import Endpoint
    from workers import wire
    from workers.attempt import Result

    ep = cast(Endpoint, SimpleNamespace(name="ep-name"))  # args() reads only its name
    result = Result(ep=ep, nid="nid", attempt=3, outcome="outcome", delay_ms=4, record="record", last="last",
                    lat_bucket=5, lat_us=6, recv=7, deadline=0.0)
    sent = dict(zip(wire.RESULT_FIELDS, result.args(), strict=True))
    assert sent == {name: ("ep-name" if name == "ep" else getattr(result, name)) for name in wire.RESULT_FIELDS}


def test_the_engine_reads_claims_in_wire_order() -> None:
    """step.claimed unpacks claim.lua's reply by position: it must be wire.CLAIMED_FIELDS' order."""
    from workers import wire
    from workers.step import claimed as _claimed

    numeric = {"attempt": b"3", "recv": b"7", "paused_ms": b"9", "unsent": b"1"}
    values = [numeric.get(name, name.encode()) for name in wire.CLAIMED_FIELDS]
    c = _claimed(values)
    assert (c.nid, c.body, c.content_type, c.source, c.channel, c.resend_of, c.flag) == (
        "nid", b"body", "ct", "source", "channel", "resend_of", "flag")
    assert (c.attempt, c.received_ms, c.paused_ms, c.unsent) == (3, 7, 9, 1)
