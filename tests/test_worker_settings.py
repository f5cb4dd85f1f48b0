"""workers.main builds the Worker with arq's own create_worker (nothing is dropped) and stops it
cleanly even when arq's close() gives up half-way."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable

from arq.worker import Worker
from redis import Redis

from config.settings import Settings
from relay import constants as k
from workers.main import _close, create_worker
from workers.settings import WorkerSettings


def test_every_worker_settings_attribute_is_a_worker_argument_and_reaches_it(
    make_settings: Callable[..., Settings],
) -> None:
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


def test_a_cancellation_surfacing_from_arqs_close_still_stops_the_lanes(make_settings: Callable[..., Settings]) -> None:
    """arq's close() cancels the jobs it is running and gathers them without return_exceptions: a job
    cancelled inside arq's shielded finish raises out of close() before on_shutdown. relay worker's
    _close must then stop the engine itself: before, the lanes and heartbeat of a stopping worker
    ran on (and in the tests, a half-closed worker kept answering reloads of later tests)."""
    settings = make_settings()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # as relay worker does: arq's Worker keeps the current loop
    redis = Redis.from_url(settings.redis_url)
    try:
        worker = create_worker(settings, handle_signals=False, ctx={"worker_name": "closing"})
        worker.main_task = main = loop.create_task(worker.main())

        async def started() -> None:
            async with asyncio.timeout(15):
                while "engine" not in worker.ctx or redis.zscore(k.WORKERS, "closing") is None:
                    await asyncio.sleep(0.02)
            # a job that is cancelled by close() and re-raises its cancellation, as arq's own
            # run_job does when it is cancelled inside asyncio.shield(finish_job(...))
            worker.tasks["stuck"] = asyncio.ensure_future(asyncio.sleep(3600))

        loop.run_until_complete(started())
        engine = worker.ctx["engine"]
        _close(loop, worker)
        assert "engine" not in worker.ctx and "heartbeat" not in worker.ctx  # shutdown ran
        assert engine.stopping and all(lane.task is None or lane.task.done() for lane in engine.lanes.values())
        assert redis.zscore(k.WORKERS, "closing") is None  # no longer counted as alive
        main.cancel()
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
    finally:
        redis.close()
        asyncio.set_event_loop(None)
        loop.close()
