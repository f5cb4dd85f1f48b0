"""Lua scripts: each is one atomic Redis round trip, so a crash never leaves half a write.

What crosses between Python and a script is named on the Python side only: ``names`` turns a list of
field names into a Lua table of their positions, and ``key_functions`` turns relay/constants.py's
key templates into Lua functions. A script that reads ``r[R.outcome]`` or builds ``key.delivery(nid,
ep)`` follows whatever order or spelling Python defines, so neither side can silently read the
other's fields at the wrong place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from relay import constants as k

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def load(name: str, package: str = "relay.store") -> str:
    return (files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register(redis: Redis, name: str, package: str = "relay.store") -> AsyncScript:
    return redis.register_script(key_functions() + load(name, package))


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


_shared: dict[tuple[str, str], AsyncScript] = {}


def shared(redis: Redis, name: str, package: str = "relay.store") -> AsyncScript:
    """One script object per script for the whole process (its SHA computed once); call it with
    ``client=`` to run it on any connection. Like ``register``, the script can build keys with
    ``key.*``."""
    script = _shared.get((package, name))
    if script is None:
        script = _shared[(package, name)] = redis.register_script(key_functions() + load(name, package))
    return script
