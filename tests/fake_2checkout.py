"""A fake of 2Checkout's REST API 6.0 order listing, built from 2Checkout's documentation, for tests.

It checks what the real API checks (REST API reference, "Authentication"): the header
``X-Avangate-Authentication: code="…" date="…" hash="…" algo="…"`` (double or single quotes), the
merchant code, a UTC date ``YYYY-MM-DD HH:MM:SS`` close to now, and the HMAC (sha256 or sha3-256, keyed
with the secret key) of LEN(code) + code + LEN(date) + date, lengths in UTF-8 bytes; anything else is
401 with 2Checkout's error body. ``GET /rest/6.0/orders/`` ("Order" reference) takes ``StartDate`` and
``EndDate`` (Y-m-d), ``IncludeTestOrders`` (YES, NO, ONLY), ``Page`` and ``Limit`` (at most 200, the
documented maximum), and answers ``{"Items": [...], "Pagination": {"Page", "Limit", "Count"}}``.

It is written apart from workers/tco_api.py on purpose: the client is checked against the document,
not against itself.

Standalone, to try reconciliation by hand against ``relay dev`` (docs/operations.md, "Reconciliation")::

    python -m tests.fake_2checkout --merchant-code MYCODE --port 8089 --orders orders.json

with the secret key in ``$TCO_SECRET_KEY`` (``--secret-env``) and ``orders.json`` a list of
``{"ref": "230000001", "status": "COMPLETE", "test": false}``; the file is read again at every request,
so editing it changes what the next listing returns.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support import free_port

# how far the request's date may be from the API's clock; 2Checkout does not publish its tolerance
MAX_SKEW = timedelta(minutes=10)
_HEADER = re.compile(r"""(\w+)=(["'])(.*?)\2""")
_ALGOS = {"sha256": hashlib.sha256, "sha3-256": hashlib.sha3_256}


@dataclass
class FakeOrder:
    ref: str
    status: str
    placed: datetime = field(default_factory=lambda: datetime.now(UTC))
    test: bool = False

    def item(self) -> dict[str, Any]:
        # a few of the Order Information object's fields; the relay reads RefNo and Status
        return {
            "RefNo": self.ref,
            "Status": self.status,
            "OrderDate": self.placed.strftime("%Y-%m-%d %H:%M:%S"),
            "TestOrder": self.test,
            "ApproveStatus": "OK",
        }


@dataclass
class Fake2Checkout:
    merchant_code: str
    secret_key: str
    orders: list[FakeOrder] = field(default_factory=list)
    # what the next requests meet instead of an answer: ("status", code) or ("slow", seconds); the last repeats
    script: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None
    # standalone: the orders are read from this JSON file at every request
    orders_file: Path | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rest/6.0"

    def add(self, ref: str, status: str, **kw: Any) -> FakeOrder:
        order = FakeOrder(ref, status, **kw)
        self.orders = [o for o in self.orders if o.ref != ref] + [order]
        return order

    async def start(self) -> Fake2Checkout:
        app = web.Application()
        app.add_routes([web.get("/rest/6.0/orders/", self.list_orders)])
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    def _unauthorized(self, why: str) -> web.Response:
        self.refused.append(why)
        return web.json_response(
            {"error_code": "AUTHENTICATION_ERROR", "message": "Authentication needed for this resource"}, status=401
        )

    def _authenticate(self, header: str | None) -> str | None:
        """Why the header is refused, or None."""
        if not header:
            return "no X-Avangate-Authentication header"
        parts = {m.group(1): m.group(3) for m in _HEADER.finditer(header)}
        if set(parts) - {"code", "date", "hash", "algo"} or not {"code", "date", "hash"} <= set(parts):
            return f"malformed header {header!r}"
        if parts["code"] != self.merchant_code:
            return "unknown merchant code"
        try:
            date = datetime.strptime(parts["date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            return f"bad date {parts['date']!r}"
        if abs(datetime.now(UTC) - date) > MAX_SKEW:
            return "date too far from now"
        algo = _ALGOS.get(parts.get("algo", ""))
        if algo is None:
            return f"unsupported algo {parts.get('algo')!r}"
        code, when = parts["code"].encode(), parts["date"].encode()
        message = str(len(code)).encode() + code + str(len(when)).encode() + when
        expected = hmac.new(self.secret_key.encode(), message, algo).hexdigest()
        if not hmac.compare_digest(expected, parts["hash"].lower()):
            return "wrong hash"
        return None

    def _read_orders_file(self) -> None:
        assert self.orders_file is not None
        self.orders = [
            FakeOrder(str(o["ref"]), str(o["status"]), test=bool(o.get("test", False)))
            for o in json.loads(self.orders_file.read_text(encoding="utf-8"))
        ]

    async def list_orders(self, request: web.Request) -> web.Response:
        self.requests.append({"query": dict(request.query), "headers": dict(request.headers)})
        if self.orders_file is not None:
            self._read_orders_file()
        if self.script:
            action = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
            if action[0] == "status":
                return web.json_response(
                    {"error_code": "INTERNAL_ERROR", "message": "Something went wrong"}, status=action[1]
                )
            if action[0] == "slow":
                await asyncio.sleep(action[1])
            if action[0] == "garbage":
                return web.Response(text="<html>maintenance</html>", content_type="text/html")
        why = self._authenticate(request.headers.get("X-Avangate-Authentication"))
        if why is not None:
            return self._unauthorized(why)
        q = request.query
        try:
            start = datetime.strptime(q["StartDate"], "%Y-%m-%d").date()
            end = datetime.strptime(q.get("EndDate", datetime.now(UTC).strftime("%Y-%m-%d")), "%Y-%m-%d").date()
            page, limit = int(q.get("Page", "1")), int(q.get("Limit", "10"))
            tests = q.get("IncludeTestOrders", "YES")
            if not (page >= 1 and 1 <= limit <= 200 and tests in ("YES", "NO", "ONLY")):
                raise ValueError
        except (KeyError, ValueError):
            return web.json_response({"error_code": "INVALID_DATA", "message": "Invalid search parameters"}, status=400)
        found = [
            o
            for o in sorted(self.orders, key=lambda o: o.placed, reverse=True)
            if start <= o.placed.date() <= end and (tests == "YES" or (tests == "ONLY") == o.test)
        ]
        items = found[(page - 1) * limit : page * limit]
        return web.Response(
            text=json.dumps(
                {"Items": [o.item() for o in items], "Pagination": {"Page": page, "Limit": limit, "Count": len(found)}}
            ),
            content_type="application/json",
        )


async def _serve(args: argparse.Namespace, secret: str) -> None:
    fake = Fake2Checkout(args.merchant_code, secret, port=args.port, orders_file=args.orders)
    fake._read_orders_file()  # a bad file stops it here, before it listens
    await fake.start()
    print(f'fake 2Checkout API: api_url = "{fake.api_url}"', flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.fake_2checkout",
        description="a fake of 2Checkout's order listing, for trying reconciliation by hand",
    )
    p.add_argument("--merchant-code", required=True)
    p.add_argument("--secret-env", default="TCO_SECRET_KEY", help="the variable holding the secret key")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--orders", type=Path, required=True, help='JSON: [{"ref", "status", "test"}, ...]')
    args = p.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        print(f"fake_2checkout: {args.secret_env} is not set", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(args, secret))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
