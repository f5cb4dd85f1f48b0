"""Typed aiohttp application keys (never string keys)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from config.networks import Network, parse_networks
from config.settings import Settings
from relay.store.ingest import Store
from relay.store.resend import Resender
from relay.web.metrics import IngressMetrics


class Live:
    """What a running app serves with. Apps are frozen once started, so a config reload
    (relay/server.py) swaps the settings in this one shared object, not in the apps' keys; what was
    built from the settings (a Resender) follows through ``on_reload``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trusted_proxies: tuple[Network, ...] = parse_networks(settings.server.trusted_proxies)
        self.on_reload: list[Callable[[Settings], None]] = []

    def replace(self, settings: Settings) -> None:
        self.settings = settings
        self.trusted_proxies = parse_networks(settings.server.trusted_proxies)
        for follow in self.on_reload:
            follow(settings)


LIVE = web.AppKey("live", Live)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", IngressMetrics)
RESENDER = web.AppKey("resender", Resender)
# which of ``relay serve --processes N``'s processes this is (0 … N-1); absent with one process
PROCESS = web.AppKey("process", int)
