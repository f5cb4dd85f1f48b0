"""Endpoint sinks: one process (uvloop) serving one port per endpoint, apart from the workers.

``python -m bench.sinks --ports P1,P2,... --control C``. Each sink answers 200 (after its delay,
0 unless set) and records, per ``Relay-Notification-Id``, the wall-clock ms at which it answered
the first delivery. The control port serves:

- ``POST /reset`` ``{"delays": [s, ...], "fail_every": n}``: forget everything, set each sink's answer
  delay; with ``fail_every``, the first request of one notification in n (by a hash of its id) is
  answered 503, so its delivery is retried (bench/memory.py);
- ``GET /stats``: ``{"requests": [...], "unique": [...], "repeats": [...]}`` per sink;
- ``GET /arrivals``: ``{"arrivals": [{nid: ms, ...}, ...]}`` per sink.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import zlib
from dataclasses import dataclass, field

from aiohttp import web

from bench.procs import HOST, http_get_json, http_post_json


@dataclass
class Sink:
    delay: float = 0.0
    fail_every: int = 0
    requests: int = 0
    repeats: int = 0
    arrivals: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        now = time.time() * 1000
        nid = request.headers.get("Relay-Notification-Id", "")
        self.requests += 1
        if self.fail_every and nid not in self.failed and zlib.crc32(nid.encode()) % self.fail_every == 0:
            self.failed.add(nid)
            return web.Response(status=503, text="try again")
        if nid in self.arrivals:
            self.repeats += 1
        else:
            self.arrivals[nid] = now
        return web.Response(text="ok")


def control_app(sinks: list[Sink]) -> web.Application:
    async def reset(request: web.Request) -> web.Response:
        doc = await request.json()
        delays = doc.get("delays") or []
        for i, sink in enumerate(sinks):
            sink.delay = float(delays[i]) if i < len(delays) else 0.0
            sink.fail_every = int(doc.get("fail_every") or 0)
            sink.requests = sink.repeats = 0
            sink.arrivals, sink.failed = {}, set()
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [s.requests for s in sinks],
                "unique": [len(s.arrivals) for s in sinks],
                "repeats": [s.repeats for s in sinks],
            }
        )

    async def arrivals(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": [s.arrivals for s in sinks]})

    app = web.Application()
    app.add_routes([web.post("/reset", reset), web.get("/stats", stats), web.get("/arrivals", arrivals)])
    return app


async def serve(ports: list[int], control: int) -> None:
    sinks = [Sink() for _ in ports]
    runners: list[web.AppRunner] = []
    for sink, port in zip(sinks, ports, strict=True):
        app = web.Application()
        app.router.add_post("/{tail:.*}", sink.handle)
        runners.append(web.AppRunner(app, access_log=None))
        await runners[-1].setup()
        await web.TCPSite(runners[-1], HOST, port).start()
    runners.append(web.AppRunner(control_app(sinks), access_log=None))
    await runners[-1].setup()
    await web.TCPSite(runners[-1], HOST, control).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        for runner in runners:
            await runner.cleanup()


class SinkControl:
    """The bench's side of the control port."""

    def __init__(self, control_port: int) -> None:
        self.base = f"http://{HOST}:{control_port}"

    def reset(self, delays: list[float], fail_every: int = 0) -> None:
        http_post_json(f"{self.base}/reset", {"delays": delays, "fail_every": fail_every})

    def stats(self) -> dict[str, list[int]]:
        doc: dict[str, list[int]] = http_get_json(f"{self.base}/stats")
        return doc

    def arrivals(self) -> list[dict[str, float]]:
        doc: dict[str, list[dict[str, float]]] = http_get_json(f"{self.base}/arrivals")
        return doc["arrivals"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sinks")
    parser.add_argument("--ports", required=True, help="comma-separated sink ports")
    parser.add_argument("--control", type=int, required=True)
    ns = parser.parse_args()
    ports = [int(p) for p in ns.ports.split(",")]
    import signal

    def stop(*_: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(ports, ns.control))
    else:
        uvloop.run(serve(ports, ns.control))


if __name__ == "__main__":
    main()
