"""Lua scripts: each is one atomic Redis round trip, so a crash never leaves half a write.

The one loader of every script (relay/store/lua/, workers/lua/). A script is described by a ``Spec``:
the files it is assembled from and the names of its KEYS and ARGV, in order. relay/store/wire.py holds
the store's specs, workers/wire.py the workers' (each beside the records it names); tests/test_lua_keys.py
checks that every script file has its spec and reads its KEYS and ARGV only by those names.

What crosses between Python and a script is named on the Python side only: each script is preceded by
``local K = {name = 1, ...}`` and ``local A = {...}`` (its KEYS and ARGV, ``KEYS[K.notification]``),
the tables of its records (``names``), the key templates of relay/constants.py as Lua functions
(``key.delivery(nid, ep)``) and the shared fragments (relay/store/lua/_*.lua: ``now_ms()``, ...). The
Python side packs its KEYS and ARGV by the same names (``Spec.keys``, ``Spec.args``), so neither side can
silently read the other's fields at the wrong place.

Each script is assembled and hashed once per process (``script``); its object is bound to no client, so
every call says which connection or pipeline runs it (``client=``). EVALSHA with the NOSCRIPT fallback
(redis-py's AsyncScript): one round trip per call, as before.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

from redis.commands.core import AsyncScript

from relay import constants as k

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# fragments every script may use (relay/store/lua/_clock.lua: now_ms() from Redis's TIME)
COMMON_FRAGMENTS = ("_clock",)


@dataclass(frozen=True)
class Spec:
    """One script: ``parts`` (files of ``package``'s lua/ folder, in order, the script's own last), the
    names of its KEYS and ARGV in order, and what follows them (``keys_rest``/``args_rest``: a variadic
    tail, described; empty when there is none). ``optional`` names may be left out (sent as '')."""

    parts: tuple[str, ...]
    package: str = "relay.store"
    keys: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    keys_rest: str = ""
    args_rest: str = ""
    optional: frozenset[str] = frozenset()
    fragments: tuple[str, ...] = ()  # relay/store/lua/_{name}.lua used besides COMMON_FRAGMENTS
    tables: Callable[[], str] | None = None  # generated Lua naming the records it exchanges (``names``)

    pack_keys: Callable[..., list[Any]] = field(init=False, repr=False, compare=False)
    pack_args: Callable[..., list[Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen: set once, here. pack_keys(*tail, name=value, ...) and pack_args(...) return KEYS and
        # ARGV in the script's order; a name missing or unknown, or a tail the script does not take,
        # raises TypeError naming the script
        object.__setattr__(self, "pack_keys", _packer(self, "keys", self.keys, self.keys_rest))
        object.__setattr__(self, "pack_args", _packer(self, "args", self.args, self.args_rest))

    @property
    def name(self) -> str:
        return self.parts[-1]


def _packer(spec: Spec, what: str, order: tuple[str, ...], tail: str) -> Callable[..., list[Any]]:
    """A function whose keyword-only parameters are ``order`` (optional ones default to ''): Python binds
    and checks the names itself, as fast as building the list by hand (ingest's hot path)."""
    if not all(n.isidentifier() and not keyword.iskeyword(n) and n != "rest" for n in order):
        raise ValueError(f"{spec.name}.lua: {what} must be named by identifiers: {order}")
    params = [
        *(["*rest"] if tail else (["*"] if order else [])),
        *(f"{n}=''" if n in spec.optional else n for n in order),
    ]
    body = f"[{', '.join([*order, *(['*rest'] if tail else [])])}]"
    fn_name = f"{spec.name}_{what}"
    namespace: dict[str, Any] = {}
    # only the spec's own names go in: identifiers written in relay/store/wire.py and workers/wire.py
    exec(f"def {fn_name}({', '.join(params)}):\n    return {body}\n", namespace)
    fn: Callable[..., list[Any]] = namespace[fn_name]
    return fn


def load(name: str, package: str = "relay.store") -> str:
    return (files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def names(table: str, fields: Sequence[str]) -> str:
    """``local T = {a = 1, b = 2}``, and ``T_LIST = {'a', 'b'}`` to emit values in the same order."""
    pos = ", ".join(f"{name} = {i}" for i, name in enumerate(fields, 1))
    listed = ", ".join(f"'{name}'" for name in fields)
    return f"local {table} = {{{pos}}}\nlocal {table}_LIST = {{{listed}}}\n"


def constants(values: Mapping[str, int | str | Sequence[int]]) -> str:
    lines = []
    for name, value in values.items():
        if isinstance(value, int):
            lines.append(f"local {name} = {value}")
        elif isinstance(value, str):
            lines.append(f"local {name} = '{value}'")
        else:
            lines.append(f"local {name} = {{{', '.join(str(int(v)) for v in value)}}}")
    return "\n".join(lines) + "\n"


def key_functions() -> str:
    """``local key = {}`` with one function per template in ``relay.constants.KEY_TEMPLATES``."""
    out = ["local key = {}"]
    for name, template in k.KEY_TEMPLATES.items():
        params = _PLACEHOLDER.findall(template)
        parts = [f"'{piece}'" if i % 2 == 0 else piece for i, piece in enumerate(_PLACEHOLDER.split(template))]
        body = " .. ".join(p for p in parts if p != "''")
        out.append(f"function key.{name}({', '.join(params)}) return {body} end")
    return "\n".join(out) + "\n"


def fragments_of(spec: Spec) -> Iterable[str]:
    return (*COMMON_FRAGMENTS, *spec.fragments)


@cache
def source(spec: Spec) -> str:
    """The whole script: names of KEYS and ARGV, record tables, key functions, fragments, parts."""
    return (
        names("K", spec.keys)
        + names("A", spec.args)
        + (spec.tables() if spec.tables else "")
        + key_functions()
        + "".join(load(f) for f in fragments_of(spec))
        + "".join(load(part, spec.package) for part in spec.parts)
    )


class Script(AsyncScript):
    """One script for the whole process, bound to no client: each call names it (``client=``)."""

    def __init__(self, spec: Spec) -> None:
        # bytes: redis-py hashes them as they are, without asking a client for its encoder
        super().__init__(None, source(spec).encode())  # type: ignore[arg-type]
        self.spec = spec

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if client is None:
            raise TypeError(f"{self.spec.name}.lua: say which connection runs it (client=)")
        return await super().__call__(keys, args, client)


@cache
def script(spec: Spec) -> Script:
    """``spec``'s script, assembled and hashed once per process."""
    return Script(spec)


def forget() -> None:
    """Assemble every script again at its next use: for a test that changes a constant a script embeds."""
    source.cache_clear()
    script.cache_clear()
