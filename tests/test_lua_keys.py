"""The Lua boundary (issue 22): every script is assembled by the one loader (relay/store/scripts.py) from
a ``Spec`` that names its KEYS and ARGV (relay/store/wire.py, workers/wire.py), and reads them only by
those names; every Redis key is built in relay/constants.py (issue 10): a script gets its keys through
KEYS or the ``key.*`` functions generated from ``relay.constants.KEY_TEMPLATES``, never by spelling
``relay:…`` itself. No script is exempt.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from redis.asyncio import Redis

from relay.store import wire as store_wire
from relay.store.scripts import COMMON_FRAGMENTS, Spec, key_functions, load, source
from workers import wire as workers_wire

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("relay/store/lua/*.lua"), *ROOT.glob("workers/lua/*.lua")])
SPECS: dict[str, Spec] = {
    name: spec for module in (store_wire, workers_wire) for name, spec in vars(module).items() if isinstance(spec, Spec)
}

_LUA_STRING = re.compile(r"""(['"])((?:relay|arq):[^'"]*)\1""")
_POSITIONAL = re.compile(r"\b(KEYS|ARGV)\[\s*\d")
_VARIADIC = {
    "KEYS": re.compile(r"#KEYS\b|unpack\(KEYS|KEYS\[(?!K\.)"),
    "ARGV": re.compile(r"#ARGV\b|unpack\(ARGV|ARGV\[(?!A\.)"),
}


def _code(lua: str) -> str:
    """The script without its comments (they may name keys to explain them)."""
    return "\n".join(line.split("--", 1)[0] for line in lua.splitlines())


def _file(path: Path) -> tuple[str, str]:
    """(package, name) of a script file, as a Spec names it."""
    return ("workers" if path.parent.parent.name == "workers" else "relay.store"), path.stem


def _written(spec: Spec) -> str:
    """The code of a spec's own files and fragments (not the generated preamble)."""
    from relay.store.scripts import fragments_of

    return _code("".join(load(f) for f in fragments_of(spec)) + "".join(load(p, spec.package) for p in spec.parts))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_lua_scripts_build_no_key_by_hand(path: Path) -> None:
    spelled = [m.group(2) for m in _LUA_STRING.finditer(_code(path.read_text(encoding="utf-8")))]
    assert spelled == [], f"{path.name} builds keys by hand: pass them in KEYS or use key.* ({spelled})"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_script_file_is_assembled_by_a_spec(path: Path) -> None:
    """A file is a script's part (its own or a shared one, complete.lua in step), or a fragment in use."""
    package, name = _file(path)
    if name.startswith("_"):
        assert package == "relay.store" and any(name in (*COMMON_FRAGMENTS, *s.fragments) for s in SPECS.values()), (
            f"fragment {name}.lua is used by no spec"
        )
    else:
        assert any(s.package == package and name in s.parts for s in SPECS.values()), (
            f"{path.name} has no Spec in relay/store/wire.py or workers/wire.py"
        )


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_script_reads_keys_or_argv_by_a_number(path: Path) -> None:
    found = _POSITIONAL.findall(_code(path.read_text(encoding="utf-8")))
    assert found == [], f"{path.name} reads KEYS/ARGV by position: name it in its Spec and read K.x / A.x"


@pytest.mark.parametrize("name", sorted(SPECS), ids=str)
def test_each_spec_names_exactly_what_its_script_reads(name: str) -> None:
    """K.x and A.x the script reads are named in its spec; every name of the spec is read; a script that
    walks KEYS or ARGV past its named ones declares that tail in its spec (and one that declares it does)."""
    spec = SPECS[name]
    code = _written(spec)
    for table, named in (("K", spec.keys), ("A", spec.args)):
        used = set(re.findall(rf"\b{table}\.(\w+)", code))
        assert used <= set(named), f"{name}: {table}.{sorted(used - set(named))} not in its spec"
        assert set(named) <= used, f"{name}: {sorted(set(named) - used)} named but never read by the script"
    for what, rest in (("KEYS", spec.keys_rest), ("ARGV", spec.args_rest)):
        walks = bool(_VARIADIC[what].search(code))
        assert walks == bool(rest), f"{name}: {what} tail {'undeclared' if walks else 'declared but unread'}"
    assert len(set(spec.keys)) == len(spec.keys) and len(set(spec.args)) == len(spec.args)
    assert spec.optional <= {*spec.keys, *spec.args}


def test_packing_checks_the_names() -> None:
    """The Python side packs by the same names: one missing, unknown or a tail a script does not take raises."""
    spec = store_wire.RESOLVE
    assert spec.pack_keys(resent="a", failed="b", resolved="c") == ["a", "b", "c"]
    with pytest.raises(TypeError, match="resolve_keys.* missing .*'failed'"):
        spec.pack_keys(resent="a", resolved="c")
    with pytest.raises(TypeError, match="resolve_keys.* unexpected keyword argument 'extra'"):
        spec.pack_keys(resent="a", failed="b", resolved="c", extra="d")
    with pytest.raises(TypeError, match="resolve_args.* takes 0 positional"):
        spec.pack_args("x", ep="e", per_call=1, retention_ms=2)
    ingest = store_wire.INGEST
    keys = ingest.pack_keys(**{n: n for n in ingest.keys if n not in ingest.optional})
    assert keys == [("" if n in ingest.optional else n) for n in ingest.keys]


def test_key_functions_cover_every_template_key_a_script_uses() -> None:
    """A script calling ``key.x`` for an x that has no template would fail only when that line runs."""
    defined = set(re.findall(r"function key\.(\w+)\(", key_functions()))
    for path in SCRIPTS:
        used = set(re.findall(r"\bkey\.(\w+)\(", _code(path.read_text(encoding="utf-8"))))
        assert used <= defined, f"{path.name} calls undefined key functions: {sorted(used - defined)}"


def test_the_clock_is_read_by_the_shared_fragment_only() -> None:
    """``now_ms`` is written once (relay/store/lua/_clock.lua), not copied into each script."""
    for path in SCRIPTS:
        if path.name != "_clock.lua":
            assert "'TIME'" not in _code(path.read_text(encoding="utf-8")), f"{path.name} reads TIME itself"


@pytest.mark.parametrize("name", sorted(SPECS), ids=str)
async def test_every_script_compiles_in_redis(name: str, redis: Redis) -> None:
    """SCRIPT LOAD compiles the assembled script: a Lua syntax error or a local limit shows here."""

    assert len(await redis.script_load(source(SPECS[name]))) == 40


def test_the_engine_sends_results_in_wire_order() -> None:
    """engine.Result.args lists its fields by position: they must be wire.RESULT_FIELDS' order."""
    from types import SimpleNamespace
    from typing import cast

    from config.settings import Endpoint
    from workers import wire
    from workers.attempt import Result

    ep = cast(Endpoint, SimpleNamespace(name="ep-name"))  # args() reads only its name
    result = Result(
        ep=ep,
        nid="nid",
        attempt=3,
        outcome="outcome",
        delay_ms=4,
        record="record",
        last="last",
        lat_bucket=5,
        lat_us=6,
        recv=7,
        deadline=0.0,
    )
    sent = dict(zip(wire.RESULT_FIELDS, result.args(), strict=True))
    assert sent == {name: ("ep-name" if name == "ep" else getattr(result, name)) for name in wire.RESULT_FIELDS}


def test_the_engine_reads_claims_in_wire_order() -> None:
    """step.claimed unpacks claim.lua's reply by position: it must be wire.CLAIMED_FIELDS' order."""
    from workers import wire
    from workers.step import claimed as _claimed

    numeric = {"attempt": b"3", "recv": b"7", "paused_ms": b"9", "unsent": b"1", "packed": 0}
    values = [numeric.get(name, name.encode()) for name in wire.CLAIMED_FIELDS]
    c = _claimed(values)
    assert (c.nid, c.body, c.content_type, c.source, c.channel, c.resend_of, c.flag) == (
        "nid",
        b"body",
        "ct",
        "source",
        "channel",
        "resend_of",
        "flag",
    )
    assert (c.attempt, c.received_ms, c.paused_ms, c.unsent) == (3, 7, 9, 1)


async def test_one_script_object_runs_on_any_client_and_after_a_script_flush(redis: Redis) -> None:
    """The loader assembles and hashes each script once per process (the sweeper used to register
    sweep.lua again every 5 s); bound to no client, it runs on whichever connection or pipeline a call
    names, and loads itself again after Redis lost its scripts (restart, failover, SCRIPT FLUSH)."""
    from relay.store.scripts import script

    hourly = script(store_wire.HOURLY)
    assert hourly is script(store_wire.HOURLY)
    args = store_wire.HOURLY.pack_args("ep", first_ms=0, hour_ms=1000, hours=2)
    await redis.script_flush()
    assert await hourly(args=args, client=redis) == [[0, 0, 0, 0]]
    await redis.script_flush()
    async with redis.pipeline(transaction=False) as pipe:
        await hourly(args=args, client=pipe)
        assert await pipe.execute() == [[[0, 0, 0, 0]]]
    with pytest.raises(TypeError, match="client="):
        await hourly(args=args)
