"""The one call the relay makes to 2Checkout's REST API 6.0: list the orders of a date range.

Authentication (2Checkout, REST API reference, "Authentication"): every request carries
``X-Avangate-Authentication: code="{MERCHANT}" date="{YYYY-MM-DD HH:MM:SS}" hash="{HASH}" algo="sha256"``,
where HASH is the hex HMAC-SHA256, keyed with the account's secret key, of
LEN(code) + code + LEN(date) + date, lengths in UTF-8 bytes and the date in UTC. The secret never
leaves this module: errors carry the HTTP status and 2Checkout's message, never the header.

``GET {api_url}/orders/?StartDate=Y-m-d&EndDate=Y-m-d&IncludeTestOrders=NO&Page=n&Limit=200`` answers
``{"Items": [{"RefNo": ..., "Status": ...}, ...], "Pagination": {"Page", "Limit", "Count"}}``; pages
are read until ``Count`` is covered (at most 200 a page, 2Checkout's maximum).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from config.reconcile import ReconcileConfig
from config.settings import Secret
from relay import __version__
from relay.store.reconcile import Order

PAGE_LIMIT = 200
# a bound on one listing: 250 pages of 200 orders; a busier shop lowers lookback_hours
MAX_PAGES = 250
ATTEMPTS = 3


class ApiError(Exception):
    """The order list could not be read: ``http_status`` (None for a timeout or a refused connection)
    and a message fit to show (2Checkout's own, or what went wrong)."""

    def __init__(self, message: str, http_status: int | None = None, *, retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.retry = retry


def signing_source(code: str, date: str) -> bytes:
    """LEN(code) + code + LEN(date) + date, each length in UTF-8 bytes (2Checkout: "8AVANGATE192010-05-13 12:12:12")."""
    return f"{len(code.encode())}{code}{len(date.encode())}{date}".encode()


def auth_header(code: str, secret: Secret, at: datetime) -> str:
    date = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    digest = hmac.new(secret.reveal().encode(), signing_source(code, date), hashlib.sha256).hexdigest()
    return f'code="{code}" date="{date}" hash="{digest}" algo="sha256"'


async def list_orders(
    session: aiohttp.ClientSession, cfg: ReconcileConfig, secret: Secret, now: datetime
) -> list[Order]:
    """Every order placed from ``lookback_hours`` before ``now`` (by UTC day) to today, each page retried
    with backoff on a timeout, a connection error, a 429 or 5xx, or an unreadable answer."""
    start = (now - timedelta(hours=cfg.lookback_hours)).astimezone(UTC).strftime("%Y-%m-%d")
    end = now.astimezone(UTC).strftime("%Y-%m-%d")
    orders: list[Order] = []
    page = 1
    while True:
        params = {
            "StartDate": start,
            "EndDate": end,
            "IncludeTestOrders": "YES" if cfg.include_test_orders else "NO",
            "Page": str(page),
            "Limit": str(PAGE_LIMIT),
        }
        doc = await _with_retries(session, cfg, secret, params)
        items, count = _page(doc)
        orders += items
        if page * PAGE_LIMIT >= count or not items:
            return orders
        page += 1
        if page > MAX_PAGES:
            raise ApiError(
                f"more than {MAX_PAGES * PAGE_LIMIT} orders in the lookback window ({count}); lower lookback_hours",
                retry=False,
            )


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.retry


async def _with_retries(
    session: aiohttp.ClientSession, cfg: ReconcileConfig, secret: Secret, params: dict[str, str]
) -> Any:
    # short waits: the whole pass must end well within its lease, and the next interval tries again
    retrying = AsyncRetrying(
        stop=stop_after_attempt(ATTEMPTS),
        wait=wait_random_exponential(multiplier=0.5, max=4),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await _get(session, cfg, secret, params)
    raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover


async def _get(session: aiohttp.ClientSession, cfg: ReconcileConfig, secret: Secret, params: dict[str, str]) -> Any:
    headers = {
        "X-Avangate-Authentication": auth_header(cfg.merchant_code, secret, datetime.now(UTC)),
        "Accept": "application/json",
        "Content-Type": "application/json",
        "User-Agent": f"2checkout-relay/{__version__}",
    }
    url = cfg.api_url.rstrip("/") + "/orders/"
    try:
        async with session.get(
            url,
            params=params,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout_seconds),
        ) as resp:
            body = await resp.read()
            status = resp.status
    except TimeoutError:
        raise ApiError(f"no answer within {cfg.timeout_seconds:g} s") from None
    except aiohttp.ClientError as exc:
        raise ApiError(f"{type(exc).__name__}: {exc}") from None
    if status != 200:
        raise ApiError(_reason(body, status), status, retry=status == 429 or status >= 500)
    try:
        return json.loads(body)
    except ValueError:
        raise ApiError("the answer is not JSON", status) from None


def _reason(body: bytes, status: int) -> str:
    """2Checkout's own error (``{"error_code": ..., "message": ...}``), else the start of the answer."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and (doc.get("message") or doc.get("error_code")):
        parts = [str(doc[key]) for key in ("error_code", "message") if doc.get(key)]
        return ": ".join(parts)[:300]
    text = body[:200].decode("utf-8", "replace").strip()
    return text or f"HTTP {status}"


def _page(doc: Any) -> tuple[list[Order], int]:
    """One page's orders and the listing's total count; anything else is an unreadable answer."""
    try:
        items, count = doc["Items"], int(doc["Pagination"]["Count"])
        orders = [Order(str(item["RefNo"]), str(item["Status"])) for item in items]
    except (KeyError, TypeError, ValueError):
        raise ApiError("unreadable answer: no Items with RefNo and Status, or no Pagination.Count") from None
    return orders, count
