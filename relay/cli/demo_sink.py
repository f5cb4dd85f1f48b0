"""A demo endpoint for the local run: prints one line per request the relay forwards (its Relay-* headers,
webhook-id and size) and answers 200. It does not check ``webhook-signature``: the docs promise only that
it prints what it receives (README, "Quick start"; ``relay demo-sink``); an endpoint of your own verifies it
(README, the delivery headers)."""

from __future__ import annotations

import sys

from aiohttp import web


async def _hook(request: web.Request) -> web.Response:
    body = await request.read()
    h = request.headers
    print(
        f"demo-sink: {request.method} {request.path} notification={h.get('Relay-Notification-Id')} "
        f"channel={h.get('Relay-Channel')} source={h.get('Relay-Source')} attempt={h.get('Relay-Attempt')} "
        f"resend={h.get('Relay-Resend')} webhook-id={h.get('webhook-id')} bytes={len(body)}",
        file=sys.stderr,
        flush=True,
    )
    return web.Response(text="ok")


async def _check(request: web.Request) -> web.Response:
    return web.Response(text="demo sink ready")


def run(host: str, port: int) -> None:
    app = web.Application()
    app.add_routes([web.post("/{tail:.*}", _hook), web.get("/{tail:.*}", _check)])
    web.run_app(app, host=host, port=port, access_log=None, print=lambda *_: None)
