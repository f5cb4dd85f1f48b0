"""Typed aiohttp application keys (never string keys)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from config.networks import Network
from config.settings import Settings
from relay.store.ingest import Store
from relay.store.resend import Resender
from relay.web.metrics import IngressMetrics

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", IngressMetrics)
RESENDER = web.AppKey("resender", Resender)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])
