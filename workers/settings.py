"""The ARQ ``WorkerSettings`` for ``relay worker``."""

from __future__ import annotations

from arq import cron, func

from relay.constants import QUEUE_NAME
from workers.alerts import check_alerts
from workers.jobs import fanout, shutdown, startup, sweep
from workers.reconcile import PASS_BUDGET_S, reconcile


class WorkerSettings:
    """Short by design: deliveries run in the engine's lanes and the fan-out in its loop, not as ARQ jobs.

    ``fanout`` is the job an ingress older than the batched fan-out queued for each notification: kept,
    so such jobs still queued after an upgrade run (workers/jobs.py)."""

    functions = [func(fanout, max_tries=10, keep_result=0, timeout=30)]
    cron_jobs = [
        cron(sweep, second=set(range(0, 60, 5)), unique=True, timeout=60, run_at_startup=True),
        # every 10 s: a failing endpoint or a silent source is news within seconds; one health read each
        cron(check_alerts, second=set(range(0, 60, 10)), unique=True, timeout=60),
        # most ticks only find that no source's turn has come (relay/store/reconcile.py)
        cron(reconcile, second=set(range(0, 60, 5)), unique=True, timeout=PASS_BUDGET_S + 20),
    ]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    max_jobs = 100
    # ARQ sleeps this long between queue polls while it runs a job (a cron job, an old ingress's fan-out
    # job); an idle worker waits for a write to its queue instead (workers/wake.py, RelayWorker). The
    # fan-out does not wait on it: the engine's loop is woken by each stored notification
    poll_delay = 0.05
    job_timeout = 60
    keep_result = 0
    health_check_interval = 10
    health_check_key = QUEUE_NAME + ":health-check"
