"""Running the ARQ worker: ``relay worker`` and the tests both go through ``create_worker``."""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any

import structlog
from arq.worker import Worker, get_kwargs

from config.settings import Settings
from relay.alerting.watch import RedisOutage
from relay.constants import GC_THRESHOLD
from relay.store.connection import REDIS_ERRORS, arq_settings, redis_url
from workers.alerts import send_now
from workers.jobs import shutdown
from workers.settings import WorkerSettings
from workers.wake import RelayWorker

logger = structlog.get_logger()


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """ARQ's own construction from ``WorkerSettings`` (every attribute it declares is passed on),
    with the relay's settings in the job context; ``overrides`` are Worker arguments (tests)."""
    ctx = {"settings": settings, **overrides.pop("ctx", {})}
    url = redis_url(settings)
    # ARQ's create_worker, with the Worker that waits for work when idle (workers/wake.py); the ignore:
    # arq's protocol reads on_startup as an instance attribute (a bound method) on a class
    return RelayWorker(
        **{
            **get_kwargs(WorkerSettings),  # type: ignore[arg-type]
            "redis_settings": arq_settings(url),
            "ctx": ctx,
            **overrides,
        },
        redis_url=url,
    )


def run(settings: Settings) -> None:
    """``relay worker``: run the ARQ worker, and start it again if its Redis connection is lost.

    One loop of start, run and close. Long because each way out (a clean stop, a lost Redis, a
    worker that never started) is handled where it happens.

    ARQ's run loop ends with an exception when Redis goes away (a restart, a failover). Nothing is
    lost by then: in-flight deliveries' leases expire and are retried. Rather than leaving that
    to a process manager, the worker waits and starts again, with a capped backoff, running the
    configuration it last reloaded.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # as in relay serve: the start-up heap is permanent, and per-delivery objects die by refcount
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    backoff = 1.0
    # Redis unreachable: each failed start is a check; the alert is the host's (relay/alerting/watch.py),
    # and the recovery is sent by the worker that starts again (jobs.startup)
    outage = RedisOutage(redis_url(settings))
    while True:
        worker = create_worker(settings, ctx={"redis_outage": outage})
        main = loop.create_task(worker.main())
        worker.main_task = main
        loop.add_signal_handler(signal.SIGHUP, _on_sighup, loop, worker)
        try:
            loop.run_until_complete(main)
            return
        except asyncio.CancelledError:
            return  # SIGTERM / SIGINT: a clean stop
        except REDIS_ERRORS as exc:
            if worker.ctx.get("started"):
                # it had been running: a new outage, not a worker that cannot start (a full Redis lets
                # it connect and create its engine, then refuses the start's writes: that is no start,
                # or it restarted every second for as long as Redis stayed full)
                backoff = 1.0
            logger.error("worker_redis_lost", error=f"{type(exc).__name__}: {exc}", restart_in_s=backoff)
            notices = outage.down(settings, f"{type(exc).__name__}: {exc}")
            if notices:
                loop.run_until_complete(send_now(notices, settings))
        finally:
            _close(loop, worker)
            # the next worker runs the configuration last reloaded (jobs.reconfigure keeps it in the
            # context), not the one this process started with: a reload must survive a Redis restart
            settings = worker.ctx.get("settings", settings)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            loop.run_until_complete(asyncio.wait_for(stop.wait(), backoff))
            return
        except TimeoutError:
            backoff = min(backoff * 2, 30.0)


def _on_sighup(loop: asyncio.AbstractEventLoop, worker: Worker) -> None:
    """SIGHUP: re-read the config file (relay/store/reload.py); ignored until the worker has started."""
    reloader = worker.ctx.get("reloader")
    if reloader is None:
        logger.warning("reload_ignored", reason="the worker is still starting")
        return
    task = loop.create_task(reloader.on_signal(), name="sighup-reload")
    _signal_tasks.add(task)
    task.add_done_callback(_signal_tasks.discard)


# a task's only strong reference would otherwise be the loop's weak one
_signal_tasks: set[asyncio.Task[None]] = set()


def _close(loop: asyncio.AbstractEventLoop, worker: Worker) -> None:
    try:
        loop.run_until_complete(worker.close())
    except (*REDIS_ERRORS, asyncio.CancelledError):
        # close() gives up before on_shutdown when Redis is down, and when a job it cancels was
        # inside ARQ's shielded finish (arq gathers the cancelled tasks without return_exceptions):
        # stop the lanes ourselves (shutdown is safe twice), or a second set would run beside the
        # next worker's and a stopping worker would skip its graceful drain
        loop.run_until_complete(shutdown(worker.ctx))
