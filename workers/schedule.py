"""Retry schedule arithmetic: pure functions of the attempt number and a time source."""

from __future__ import annotations

import random
from collections.abc import Callable

from config.settings import DeliveryConfig, Endpoint


def retry_delay(
    attempts_done: int,
    received_ms: int,
    now_ms: int,
    endpoint: Endpoint,
    policy: DeliveryConfig,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next attempt, or None when the delivery has run out of tries.

    The default schedule mirrors 2Checkout's own (``[delivery] retry_delays``, then every
    ``retry_every`` seconds until ``retry_window_hours`` after receipt). An endpoint's own
    ``retry_delays`` replaces it: one retry per listed delay, no hourly tail.
    """
    if endpoint.retry_delays is not None:
        if attempts_done > len(endpoint.retry_delays):
            return None
        base = endpoint.retry_delays[attempts_done - 1]
        deadline_ms: float | None = None
    else:
        delays = policy.retry_delays
        base = delays[attempts_done - 1] if attempts_done <= len(delays) else policy.retry_every
        deadline_ms = received_ms + policy.retry_window_hours * 3_600_000
    if retry_after is not None:
        base = max(0.0, min(retry_after, policy.max_retry_after))
    # jitter spreads a burst of failures so a recovering endpoint is not hit all at once
    delay = base * (1 + policy.jitter * (2 * rand() - 1))
    if deadline_ms is not None and now_ms + delay * 1000 > deadline_ms:
        return None
    return delay
