"""The two reference servers the ingress is compared with, each run as its own process (uvloop).

``python -m bench.refservers const --port P``: (a) reads the body and answers a constant 200, the
ceiling of aiohttp on this machine.

``python -m bench.refservers naive --port P --redis URL``: (b) the least a correct ingress must do:
parse the form, check one HMAC (SHA3-256, the one the relay checks for these bodies) and store the
body with one pipelined HSET + ZADD, then answer 200.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qsl

from aiohttp import web
from redis.asyncio import Redis

from bench.bodies import signature_source
from bench.loadgen import KEY_ENV

REDIS = web.AppKey("redis", Redis)


async def constant(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="OK\n")


def naive_handler(key: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def naive(request: web.Request) -> web.Response:
        body = await request.read()
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
        given = next((v for k, v in pairs if k == "SIGNATURE_SHA3_256"), "")
        expected = hmac.new(key, signature_source(pairs), hashlib.sha3_256).hexdigest()
        if not hmac.compare_digest(expected, given):
            return web.Response(status=400, text="bad signature\n")
        nid = hashlib.blake2b(body, digest_size=12).hexdigest()
        now = int(time.time() * 1000)
        async with request.app[REDIS].pipeline(transaction=False) as pipe:
            pipe.hset(f"naive:n:{nid}", mapping={"body": body, "recv": now})
            pipe.zadd("naive:ix", {nid: now})
            await pipe.execute()
        return web.Response(text="OK\n")

    return naive


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def build(kind: str, redis_url: str | None) -> web.Application:
    app = web.Application()
    app.router.add_get("/health", health)
    if kind == "const":
        app.router.add_post("/ipn", constant)
        return app
    if not redis_url:
        raise SystemExit("naive needs --redis")
    url = redis_url

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = Redis.from_url(url)
        yield
        await app[REDIS].aclose()

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_post("/ipn", naive_handler(os.environ.get(KEY_ENV, "").encode()))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.refservers")
    parser.add_argument("kind", choices=["const", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis")
    ns = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        build(ns.kind, ns.redis),
        host="127.0.0.1",
        port=ns.port,
        access_log=None,
        print=lambda msg: print(msg, file=sys.stderr),
    )


if __name__ == "__main__":
    main()
