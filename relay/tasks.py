"""Stopping a background task for sure: the one discipline every long-lived task of a process uses.

A cancel can be lost. redis-py turns a cancellation that lands as its socket timeout expires into a
``TimeoutError``, and it can swallow one that lands while it subscribes; a loop that treats Redis
errors as "try again later" then runs on, and a process waiting for it on SIGTERM never ends (its
supervisor kills it after a minute, and a test saw exit -9). So: cancel, wait a bounded time, ask
again, and give up with a warning rather than hang shutdown.
"""

from __future__ import annotations

import asyncio

import structlog

logger = structlog.get_logger()

TRIES, WAIT_S = 3, 1.0


async def stop(task: asyncio.Task[None] | None, *, tries: int = TRIES, wait_s: float = WAIT_S) -> bool:
    """Cancel ``task`` until it ends, waiting ``wait_s`` after each of ``tries`` cancels; True once it
    has ended (also when it was None or done), False when it is left running (logged as ``task_not_stopped``)."""
    if task is None:
        return True
    for _ in range(tries):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=wait_s)
        if done:
            if not task.cancelled() and task.exception() is not None:
                logger.warning("task_failed", task=task.get_name(), error=repr(task.exception()))
            return True
    logger.warning("task_not_stopped", task=task.get_name(), waited_s=tries * wait_s)
    return False
