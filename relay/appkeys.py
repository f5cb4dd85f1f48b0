"""Typed aiohttp application keys (never string keys)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from aiohttp import web

from config.settings import Settings
from relay.metrics import IngressMetrics
from relay.store import Store

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", IngressMetrics)
