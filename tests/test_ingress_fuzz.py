"""Property: no generated body, header set, method or path makes the ingress answer 5xx."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import Settings
from relay.server import create_app
from tests.support import free_port, ipn_fields, signed_body


@pytest.fixture
def live(make_settings: Callable[..., Settings], redis_server: Any) -> Iterator[int]:
    """The real app on a real port, in its own thread and loop, for a synchronous real client."""
    app_settings = make_settings(extra="[server]\nmax_body_bytes = 4096\n")
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(app_settings), access_log=None)
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


VALID = signed_body(ipn_fields())
field_names = st.sampled_from(
    [
        "REFNO",
        "HASH",
        "SIGNATURE_SHA2_256",
        "SIGNATURE_SHA3_256",
        "IPN_PID[]",
        "IPN_PNAME[]",
        "IPN_DATE",
        "md5_hash",
        "sale_id",
        "invoice_id",
    ]
) | st.text(max_size=12)
form_bodies = st.lists(st.tuples(field_names, st.text(max_size=40)), max_size=12).map(
    lambda pairs: "&".join(f"{quote(a)}={quote(b)}" for a, b in pairs).encode()
)
bodies = st.one_of(
    st.binary(max_size=600),
    form_bodies,
    st.builds(lambda cut, junk: VALID[:cut] + junk, st.integers(0, len(VALID)), st.binary(max_size=20)),
    st.just(b"A=" + b"x" * 5000),
)
content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/json",
        "multipart/form-data; boundary=x",
        "text/plain",
        "",
        ";;;",
        'application/x-www-form-urlencoded; charset="',
    ]
)
paths = st.one_of(
    st.sampled_from(
        [
            "/ipn",
            "/lcn",
            "/ins",
            "/ipn/default",
            "/ipn/../ins",
            "//ipn",
            "/ipn/",
            "/IPN",
            "/ipn%2F..",
            "/ipn/%00",
            "/metrics",
            "/healthz",
            "/api/x",
            "/ipn?x=1",
            "/ins/" + "a" * 300,
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), max_size=30).map(
        lambda t: "/" + quote(t, safe="/%?&=")
    ),
)
methods = st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"])
extra_headers = st.dictionaries(
    st.sampled_from(["X-Forwarded-For", "Content-Encoding", "Transfer-Encoding-X", "Accept", "Cookie", "X-Junk"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=50),
    max_size=3,
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(method=methods, path=paths, body=bodies, ctype=content_types, headers=extra_headers)
def test_no_input_gets_a_5xx(
    live: int, method: str, path: str, body: bytes, ctype: str, headers: dict[str, str]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", live, timeout=10)
    try:
        hdrs = {**headers, "Content-Type": ctype} if ctype else dict(headers)
        conn.request(method, path, body=body if method not in ("GET", "HEAD") else None, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (resp.status, text)
    assert b"Traceback" not in text
    if resp.status == 200 and method == "POST":
        assert text.startswith((b"<sig", b"<EPAYMENT>", b"OK"))
