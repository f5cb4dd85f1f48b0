"""The load generator, run as its own process: ``python -m bench.loadgen '<spec as JSON>'``.

It speaks minimal HTTP/1.1 over keep-alive connections on asyncio streams (uvloop) rather than
aiohttp's client: on a 2-core machine the client shares the CPU with the server it measures, and
this one costs about half the CPU per request of ``aiohttp.ClientSession`` (measured against the
constant server: 19,000 vs 9,800 requests/s from one process). It only understands answers with a
Content-Length, which is what every server in the bench sends.

Closed loop (``rate`` 0): each connection sends its next request as soon as the previous answer is
in. Open loop (``rate`` > 0): request i is due at ``start + i / rate``, and its latency counts from
that due time, so a server that falls behind is not hidden by the client waiting for it.
The secret key comes from the environment (BENCH_SECRET_KEY), never the command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from bench.bodies import BodySource
from bench.stats import summary_ms

KEY_ENV = "BENCH_SECRET_KEY"
RECEIPT_PREFIXES = (b'<sig algo="', b"<EPAYMENT>")


@dataclass
class Spec:
    port: int
    path: str = "/ipn"
    host: str = "127.0.0.1"
    connections: int = 64
    duration: float = 10.0  # measured seconds (closed/open loop); the upper bound in count mode
    warmup: float = 0.0
    rate: float = 0.0  # > 0: open loop at this many requests/s
    count: int = 0  # > 0: send exactly this many requests, then stop (used to pre-load)
    expect: str = "receipt"  # "receipt": 200 with a 2Checkout read receipt; "ok": any 200
    seed: int = 1
    dup_every: int = 20  # every n-th body repeats an earlier one; 0: all unique
    timeout: float = 10.0


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class BadResponse(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if not head.startswith(b"http/1.1 "):
        raise BadResponse("not an HTTP/1.1 answer")
    status = int(head[9:12])
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise BadResponse("answer without Content-Length")
    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
    body = await reader.readexactly(length)
    return status, body, b"\r\nconnection: close" in head


async def run(spec: Spec, key: bytes) -> dict[str, object]:
    source = BodySource(key, spec.seed, spec.dup_every)
    head = (
        f"POST {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
    ).encode()
    tally = Tally()
    measured = Tally()
    t0 = time.perf_counter()
    wall0 = time.time()
    measure_from = t0 + spec.warmup
    stop_at = measure_from + spec.duration

    def count_done() -> bool:
        return spec.count > 0 and tally.sent >= spec.count

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not count_done() and time.perf_counter() < stop_at:
            index = tally.sent
            tally.sent += 1
            body = source.next()
            start = time.perf_counter()
            if spec.rate:
                due = t0 + index / spec.rate
                if due >= stop_at:
                    break
                if due > start:
                    await asyncio.sleep(due - start)
                start = due
            try:
                async with asyncio.timeout(spec.timeout):
                    if writer is None or reader is None:
                        reader, writer = await asyncio.open_connection(spec.host, spec.port)
                    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                    status, answer, close = await read_response(reader)
            except (
                TimeoutError,
                OSError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                BadResponse,
                ValueError,
            ) as exc:
                kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
                _count_error(tally, measured, kind, measure_from, stop_at, spec.count)
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
                continue
            end = time.perf_counter()
            if close:
                writer.close()
                reader = writer = None
            if status != 200:
                _count_error(tally, measured, f"status_{status}", measure_from, stop_at, spec.count)
            elif spec.expect == "receipt" and not answer.startswith(RECEIPT_PREFIXES):
                _count_error(tally, measured, "no_receipt", measure_from, stop_at, spec.count)
            else:
                tally.ok += 1
                if spec.count or measure_from <= end <= stop_at:
                    measured.ok += 1
                    measured.latencies_ms.append((end - start) * 1000)
        if writer is not None:
            writer.close()

    cpu0 = time.process_time()
    await asyncio.gather(*(connection() for _ in range(spec.connections)))
    elapsed = time.perf_counter() - t0
    window = elapsed if spec.count else spec.duration
    errors = sum(measured.errors.values())
    return {
        "spec": asdict(spec),
        "sent": tally.sent,
        "ok": measured.ok,
        "errors": errors,
        "error_kinds": dict(measured.errors),
        "ok_total": tally.ok,
        "errors_total": sum(tally.errors.values()),
        "elapsed_s": round(elapsed, 3),
        "window_s": round(window, 3),
        "measure_from_wall": wall0 + spec.warmup,
        "rate_per_s": round(measured.ok / window, 1) if window else 0.0,
        "latency_ms": summary_ms(measured.latencies_ms),
        "cpu_pct": round(100 * (time.process_time() - cpu0) / elapsed, 1) if elapsed else 0.0,
        "cpu_s": round(time.process_time(), 3),  # the whole process, start-up included
    }


def _count_error(tally: Tally, measured: Tally, kind: str, measure_from: float, stop_at: float, count: int) -> None:
    tally.errors[kind] += 1
    now = time.perf_counter()
    if count or measure_from <= now <= stop_at:
        measured.errors[kind] += 1


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    key = os.environ.get(KEY_ENV, "").encode()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec, key))
    else:
        result = uvloop.run(run(spec, key))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
