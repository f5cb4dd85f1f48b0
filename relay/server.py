"""What ``relay serve`` runs: the public app (relay.web) and the admin app (relay.admin, relay.dashboard),
each on its own listener."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from config.settings import Settings, http_base
from relay import constants as k
from relay import tasks
from relay.admin.api import setup_api
from relay.alerting.watch import Watcher
from relay.dashboard.app import setup_dashboard
from relay.store.connection import REDIS_ERRORS, connect, redis_url, safe_url
from relay.store.ingest import NotDurable, Store
from relay.store.reload import Reloader
from relay.web import appkeys, ingress, limits, middleware, probes
from relay.web.metrics import IngressMetrics, MembersCollector

logger = structlog.get_logger()


@dataclass(frozen=True)
class Member:
    """This process is one of ``relay serve --processes N``'s (relay/cli/supervise.py starts them).

    ``index``: 0 … N-1; process 0 also runs the admin listener. ``metrics_dir``: prometheus_client's
    multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, set before prometheus_client was imported):
    every member writes its counters there, and /metrics sums them over all members.
    ``ready_fd``: a pipe to the supervisor, written to once the listeners are up."""

    index: int
    metrics_dir: str
    ready_fd: int | None = None


def create_app(
    settings: Settings,
    *,
    public: bool = True,
    admin: bool = True,
    live: appkeys.Live | None = None,
    metrics: IngressMetrics | None = None,
    scrape: CollectorRegistry | None = None,
    member: Member | None = None,
) -> web.Application:
    """Build the relay's web app.

    ``public``: the 2Checkout listeners. ``admin``: the admin API and the dashboard. Both carry the
    probes and metrics. ``relay serve`` runs them as two apps on two listeners (the admin one on
    loopback by default, see ``[admin]``); tests and ``[admin] port = 0`` use one app with both.
    ``metrics``: the process's one metrics registry (with the ingress counters), shared by both
    listeners so they serve the same series. The public-only app serves /metrics only with ``[server] public_metrics``.
    ``scrape``: what /metrics serves, when not ``metrics``' own registry (``Member``: the sum over all members).
    """
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[middleware.front],
    )
    # one Live per process (shared by its apps), so a reload reaches every listener at once
    app[appkeys.LIVE] = live or appkeys.Live(settings)
    # ``metrics``: the process's one registry, shared by both listeners so they serve the same series
    if metrics is None:
        metrics = IngressMetrics(CollectorRegistry())
    app[appkeys.REGISTRY] = scrape or metrics.registry
    app[appkeys.METRICS] = metrics
    if member is not None:
        app[appkeys.PROCESS] = member.index
    # with two listeners each app opens its own connection, but the process is ready once: the public
    # app says so (the admin one alone would have said "ingress_ready" a second time)
    app.cleanup_ctx.append(functools.partial(_redis, announce=public))
    _add_routes(app, settings, public=public, admin=admin)
    return app


def _add_routes(app: web.Application, settings: Settings, *, public: bool, admin: bool) -> None:
    channel = "{channel:ipn|lcn|ins}"
    if public:
        app.add_routes(
            [
                web.post(f"/{channel}", ingress.receive),
                web.post(f"/{channel}/{{source}}", ingress.receive),
                web.get(f"/{channel}", ingress.listener_check),  # GET also answers HEAD
                web.get(f"/{channel}/{{source}}", ingress.listener_check),
            ]
        )
    app.add_routes([web.get("/healthz", probes.healthz)])
    if admin or settings.server.public_metrics:
        # the public listener faces the internet and the series name internal endpoints: opt-in there
        app.add_routes([web.get("/metrics", probes.metrics)])
    if admin:
        setup_api(app)
        setup_dashboard(app)


async def _redis(app: web.Application, *, announce: bool = True) -> AsyncIterator[None]:
    settings = app[appkeys.LIVE].settings
    redis = connect(redis_url(settings), timeout=settings.server.redis_timeout)
    app[appkeys.REDIS] = redis
    server = settings.server
    store = Store(
        redis,
        retention_ms=settings.delivery.retention_ms,
        ack_after=server.ack_after,
        ack_replicas=server.ack_replicas,
        ack_timeout=server.ack_timeout,
    )
    app[appkeys.STORE] = store
    # a reload changes how long what is stored from now on is kept; the durability mode needs a restart
    app[appkeys.LIVE].on_reload.append(lambda new: setattr(store, "retention_ms", new.delivery.retention_ms))
    try:
        # asked of Redis whatever ack_after is: with "write" the durability check asks it nothing, and
        # ingress_ready was logged with Redis down
        await redis.ping()
        via = await store.check_durability()
        if announce:
            logger.info("ingress_ready", ack_after=server.ack_after, durability=via)
    except NotDurable as exc:
        if announce:
            logger.error("durability_unavailable", ack_after=server.ack_after, problem=str(exc))
    except REDIS_ERRORS as exc:
        # not fatal: the ingress answers 503 until Redis is back, and 2Checkout retries
        if announce:
            logger.warning("redis_unreachable_at_start", error=type(exc).__name__, url=safe_url(redis_url(settings)))
    yield
    await redis.aclose()


async def serve(
    settings: Settings, *, host: str | None = None, port: int | None = None, member: Member | None = None
) -> None:
    """Run until SIGTERM or SIGINT. The admin API and dashboard get their own listener (loopback by
    default) so the public one, which 2Checkout reaches, never serves them. A ``member`` of
    ``relay serve --processes N`` listens on the public port with SO_REUSEPORT beside the others,
    and also stops when its supervisor is gone."""
    before, soft = limits.raise_nofile()
    live = appkeys.Live(settings)
    listeners = _listeners(settings, host, port, live, member)
    cap = limits.connection_cap(settings.server.max_connections, len(listeners), soft)
    logger.info("descriptor_limit", soft_before=before, soft=soft, connections_per_listener=cap)
    runners: list[web.AppRunner] = []
    redis = connect(redis_url(settings), timeout=settings.server.redis_timeout)
    reloader = Reloader(redis, settings, role="serve", apply=lambda old, new: _reconfigure(live, old, new))
    # the alerts no worker can send (no_worker, redis_unreachable); it follows reloads through ``live``
    watcher = Watcher(redis, lambda: live.settings)
    supervisor = os.getppid() if member is not None else None
    reloads: set[asyncio.Task[None]] = set()  # SIGHUP reloads under way
    try:
        await _listen(settings, listeners, cap, runners, reuse_port=member is not None)
        _freeze_gc()
        watcher.start()
        await _until_stopped(reloader, supervisor, member.ready_fd if member is not None else None, reloads)
    finally:
        await _shut_down(watcher, reloader, redis, runners, reloads)


# a shutdown step taking longer is logged while it waits (``shutdown_waiting``), so a process that
# does not stop says what holds it; past its limit the step is given up (``shutdown_step_abandoned``)
SLOW_STEP_S = 1.0
STEP_LIMIT_S = 10.0
# the listeners wait for in-flight requests up to aiohttp's shutdown_timeout (60 s, AppRunner's
# default); the supervisor of ``--processes N`` allows 75 s (relay/cli/supervise.py)
LISTENERS_LIMIT_S = 65.0


async def _shut_down(
    watcher: Watcher,
    reloader: Reloader,
    redis: Redis,
    runners: list[web.AppRunner],
    reloads: set[asyncio.Task[None]],
) -> None:
    """Stop in order, each step bounded: a CI run saw a member that never ended after SIGTERM
    (killed by its supervisor) without a word on what it waited for."""
    started = time.monotonic()
    for task in list(reloads):  # a SIGHUP's reload still running: asyncio.run would wait on it unbounded
        await _step("reload", tasks.stop(task))
    await _step("alert_watcher", watcher.stop())
    await _step("reloader", reloader.stop())
    await _step("redis", redis.aclose())
    for runner in reversed(runners):
        await _step("listeners", runner.cleanup(), LISTENERS_LIMIT_S)
    # what is left (a handler's task, a client's) asyncio.run would cancel and wait for, unbounded and
    # unnamed: stopped here, each bounded, and named by relay/tasks.py if one does not end
    left = asyncio.all_tasks() - {asyncio.current_task()}
    for task in left:
        await _step(f"task {task.get_name()}", tasks.stop(task))
    logger.info("serve_stopped", took_s=round(time.monotonic() - started, 2), tasks_left=len(left))


async def _step(name: str, step: Awaitable[object], limit_s: float = STEP_LIMIT_S) -> None:
    """Await ``step`` for at most ``limit_s``; say so after ``SLOW_STEP_S`` (before the end, so a
    process killed meanwhile has said what it waited on). asyncio.wait, not wait_for: wait_for waits
    for a cancelled step to end, which a lost cancel makes for ever (relay/tasks.py)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=min(SLOW_STEP_S, limit_s))
    if not done:
        logger.warning("shutdown_waiting", step=name, waited_s=SLOW_STEP_S)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, limit_s - SLOW_STEP_S))
    if not done:
        task.cancel()
        logger.error("shutdown_step_abandoned", step=name, waited_s=limit_s)
    elif not task.cancelled() and task.exception() is not None:
        logger.warning("shutdown_step_failed", step=name, error=repr(task.exception()))


Listener = tuple[web.Application, str, int, str]  # app, host, port, role


def _listeners(
    settings: Settings, host: str | None, port: int | None, live: appkeys.Live, member: Member | None = None
) -> list[Listener]:
    """The public app on ``[server]`` and the admin app on ``[admin]``, or one app with both. Of the
    members of ``relay serve --processes N`` every one runs the public app, and only member 0 the
    admin one (``[admin] port = 0``: every member serves both on the public port)."""
    server, admin = settings.server, settings.admin
    metrics = IngressMetrics(CollectorRegistry())  # one per process: both listeners serve the same series
    scrape = None
    if member is not None:
        # what /metrics serves: the counters every member wrote to the multiprocess directory (its own
        # included), summed; metrics.registry would give this one process's
        scrape = CollectorRegistry()
        scrape.register(MembersCollector(member.metrics_dir, metrics.registry))

    def app(*, public: bool = True, admin: bool = True) -> web.Application:
        return create_app(
            settings, public=public, admin=admin, live=live, metrics=metrics, scrape=scrape, member=member
        )

    address = (host or server.host, port or server.port)
    if not admin.port:
        return [(app(), *address, "public+admin")]
    listeners = [(app(admin=False), *address, "public")]
    if member is None or member.index == 0:
        listeners.append((app(public=False), admin.host, admin.port, "admin"))
    return listeners


async def _listen(
    settings: Settings, listeners: list[Listener], cap: int, runners: list[web.AppRunner], *, reuse_port: bool = False
) -> None:
    """Start each listener behind its connection guard; ``runners`` collects what to clean up, also
    when a later listener fails to start. ``reuse_port``: the public listeners of ``relay serve
    --processes N`` (the admin one, in member 0 alone, binds as usual: a second relay on its port fails)."""
    server = settings.server
    options = {
        "max_line_size": server.max_header_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_headers,
        "keepalive_timeout": server.idle_timeout,
    }
    for app, host, port, role in listeners:
        guard = limits.ConnectionGuard(
            role=role, cap=cap, header_timeout=server.header_timeout, idle_timeout=server.idle_timeout
        )
        app[limits.GUARD] = guard
        runner = web.AppRunner(app, access_log=None, **options)  # type: ignore[arg-type]
        await runner.setup()
        runners.append(runner)
        await limits.GuardedSite(runner, host, port, guard, reuse_port=reuse_port and role != "admin").start()
        logger.info("listening", role=role, url=http_base(host, port))


def _freeze_gc() -> None:
    # everything allocated so far lives for the whole process: keep the cyclic GC from re-scanning
    # it, and let it run less often (request objects are freed by reference counting anyway)
    gc.collect()
    gc.freeze()
    gc.set_threshold(k.GC_THRESHOLD, 20, 20)


async def _until_stopped(
    reloader: Reloader,
    supervisor: int | None = None,
    ready_fd: int | None = None,
    reloads: set[asyncio.Task[None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; SIGHUP (or ``relay reload``) re-reads the config meanwhile.
    ``supervisor``: the pid of ``relay serve --processes N``'s parent; once it is gone (SIGKILLed, so
    it could not stop its members), stop too rather than serve on unsupervised. ``ready_fd``: the
    member's readiness pipe, written to once the signals are handled: the supervisor passes a SIGHUP
    on only after that, since before it the signal's default action would end the process. ``reloads``:
    where the SIGHUP reloads under way are kept, for the shutdown to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop(sig: signal.Signals) -> None:
        if not stop.is_set():
            logger.info("serve_stopping", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    reloader.start()
    reloads = set() if reloads is None else reloads

    def on_sighup() -> None:
        task = loop.create_task(reloader.on_signal())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)
    if supervisor is None:
        await stop.wait()
        return
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=ORPHAN_CHECK_S)
        except TimeoutError:
            if os.getppid() != supervisor:
                logger.warning("supervisor_gone", supervisor_pid=supervisor)
                return


ORPHAN_CHECK_S = 1.0

# what a running `relay serve` cannot change: its listeners, its Redis connection, its logging
RESTART_ONLY = (
    "server.host",
    "server.port",
    "server.processes",
    "server.max_header_bytes",
    "server.max_headers",
    "server.max_body_bytes",
    "server.ack_after",
    "server.ack_replicas",
    "server.ack_timeout",
    "server.redis_timeout",
    "admin",
    "redis",
    "logging",
)


async def _reconfigure(live: appkeys.Live, old: Settings, new: Settings) -> dict[str, Any]:
    """A reload in ``relay serve``: every request from now on sees the new settings."""
    live.replace(new)
    before, after = old.file.model_dump(), new.file.model_dump()
    needs_restart = [key for key in RESTART_ONLY if _pick(before, key) != _pick(after, key)]
    if needs_restart:
        logger.warning("config_reload_needs_restart", keys=needs_restart)
    return {"sources": sorted(new.sources), "endpoints": sorted(new.endpoints), "needs_restart": needs_restart}


def _pick(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        value = value.get(part, {}) if isinstance(value, dict) else None
    return value
