"""Retry schedule arithmetic with a time source the test controls: no sleeps."""

from __future__ import annotations

import pytest

from config.settings import DeliveryConfig, load_settings
from tests.support import TEST_ENV, write_config
from workers import schedule

POLICY = DeliveryConfig(jitter=0)
HOUR = 3600.0


def _endpoint(tmp_path, **kw):  # type: ignore[no-untyped-def]
    path = write_config(tmp_path / "r.toml", endpoints=[{"name": "e", "url": "http://x/", **kw}])
    return load_settings(path, TEST_ENV).endpoints["e"]


def test_default_schedule_mirrors_2checkout(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ep = _endpoint(tmp_path)
    received = 0
    now = 0.0
    delays = []
    attempt = 1
    while True:
        d = schedule.retry_delay(attempt, received, int(now * 1000), ep, POLICY)
        if d is None:
            break
        delays.append(d)
        now += d
        attempt += 1
    # at once, twice more within 5 minutes, four times 15 minutes apart, then hourly...
    assert delays[:6] == [60, 180, 900, 900, 900, 900]
    assert sum(delays[:2]) <= 300
    assert set(delays[6:]) == {HOUR}
    # ...until 48 hours after receipt
    assert now <= 48 * HOUR < now + HOUR
    assert len(delays) + 1 == 53  # attempts in all, like 2Checkout's ~54


def test_window_counts_from_receipt_not_from_first_attempt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ep = _endpoint(tmp_path)
    received_ms = 0
    assert schedule.retry_delay(1, received_ms, int(47.99 * HOUR * 1000), ep, POLICY) is None
    assert schedule.retry_delay(1, received_ms, int(47.0 * HOUR * 1000), ep, POLICY) == 60


def test_endpoint_delays_replace_the_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ep = _endpoint(tmp_path, retry_delays=[0.5, 2.5, 10])
    got = [schedule.retry_delay(n, 0, 0, ep, POLICY) for n in range(1, 5)]
    assert got == [0.5, 2.5, 10, None]


@pytest.mark.parametrize(("retry_after", "expected"), [(30, 30), (999_999, 3600), (0, 0)])
def test_retry_after_is_clamped(tmp_path, retry_after: float, expected: float) -> None:  # type: ignore[no-untyped-def]
    ep = _endpoint(tmp_path)
    assert schedule.retry_delay(1, 0, 0, ep, POLICY, retry_after=retry_after) == expected


def test_jitter_stays_within_bounds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ep = _endpoint(tmp_path)
    policy = DeliveryConfig(jitter=0.1)
    assert schedule.retry_delay(1, 0, 0, ep, policy, rand=lambda: 0.0) == pytest.approx(54)
    assert schedule.retry_delay(1, 0, 0, ep, policy, rand=lambda: 1.0) == pytest.approx(66)
    assert schedule.retry_delay(1, 0, 0, ep, policy, rand=lambda: 0.5) == pytest.approx(60)
