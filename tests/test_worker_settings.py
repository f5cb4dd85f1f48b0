"""workers.main.create_worker builds the Worker with arq's own create_worker: nothing is dropped."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from arq.worker import Worker

from config.settings import Settings
from workers.main import create_worker
from workers.settings import WorkerSettings


def test_every_worker_settings_attribute_is_a_worker_argument_and_reaches_it(
        make_settings: Callable[..., Settings]) -> None:
    declared = {name: value for name, value in vars(WorkerSettings).items() if not name.startswith("_")}
    # a misspelt or unknown attribute would be ignored by arq: every one must be a Worker argument
    assert set(declared) <= set(inspect.signature(Worker).parameters)
    worker = create_worker(make_settings(), handle_signals=False, max_jobs=7)
    assert worker.queue_name == WorkerSettings.queue_name and worker.poll_delay_s == WorkerSettings.poll_delay
    assert worker.job_timeout_s == WorkerSettings.job_timeout and worker.keep_result_s == WorkerSettings.keep_result
    assert worker.health_check_key == WorkerSettings.health_check_key
    assert worker.on_startup is WorkerSettings.on_startup and worker.on_shutdown is WorkerSettings.on_shutdown
    assert set(worker.functions) >= {"fanout", "cron:sweep", "cron:check_alerts"}
    assert worker.max_jobs == 7  # overrides win
    assert worker.ctx["settings"] is not None
