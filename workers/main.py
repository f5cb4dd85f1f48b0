"""Running the ARQ worker: ``relay worker`` and the tests both go through ``create_worker``."""

from __future__ import annotations

from typing import Any

from arq.worker import Worker

from config.settings import Settings
from relay.redis_conn import arq_settings, redis_url
from workers.settings import WorkerSettings

_SETTINGS_ATTRS = ("functions", "cron_jobs", "on_startup", "on_shutdown", "queue_name", "max_jobs",
                   "poll_delay", "job_timeout", "keep_result", "health_check_interval", "health_check_key")


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    kwargs: dict[str, Any] = {name: getattr(WorkerSettings, name) for name in _SETTINGS_ATTRS}
    ctx = {"settings": settings, **overrides.pop("ctx", {})}
    kwargs.update(overrides)
    return Worker(redis_settings=arq_settings(redis_url(settings)), ctx=ctx, **kwargs)
