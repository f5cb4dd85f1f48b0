"""Lua scripts: each is one atomic Redis round trip, so a crash never leaves half a write."""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def load(name: str, package: str = "relay.store") -> str:
    return (files(package) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def register(redis: Redis, name: str, package: str = "relay.store") -> AsyncScript:
    return redis.register_script(load(name, package))
