"""Typed aiohttp application keys (never string keys)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from config.settings import Settings
from relay.metrics import IngressMetrics
from relay.networks import Network
from relay.resend import Resender
from relay.store import Store

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", Store)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", IngressMetrics)
RESENDER = web.AppKey("resender", Resender)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])
