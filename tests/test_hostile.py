"""Hostile clients against a real ``relay serve`` (issue 13): bytes that are not UTF-8, slow and idle
connections, a connection flood under systemd's descriptor limit, terminal escapes through the CLI,
and secrets in raw bodies and cut snippets.

Requests with bad bytes go over raw sockets: aiohttp's client refuses to send them.
"""

from __future__ import annotations

import json
import re
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import Settings, load_settings
from relay import protocol
from relay.server import create_app
from relay.store.ingest import notification_id
from tests.cli import Done, run_cli
from tests.procs import RelayProcess
from tests.support import (
    INS_WORD,
    SECRET_KEY,
    SELLER_ID,
    TEST_ENV,
    RedisServer,
    free_port,
    ipn_fields,
    signed_body,
    write_config,
)

TOKEN = "hostile-admin-token-0123456789abcdef"
HEADER_SECRET = 'hdr-"quoted"\\secret-4242'
REDACTED = "**redacted**"
ERROR_EVENTS = ("Traceback", "unhandled_error", "admin_api_error", "dashboard_error")


@dataclass
class Relay:
    public: int
    admin: int
    proc: RelayProcess
    config: Path
    settings: Settings
    redis_url: str

    def log(self) -> str:
        return self.proc.output()


def start_relay(
    directory: Path,
    redis: RedisServer,
    *,
    server: str = "",
    endpoints: list[dict[str, Any]] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    command: str = "serve",
) -> Relay:
    public, admin = free_port(), free_port()
    config = write_config(
        directory / "relay.toml",
        admin={"port": admin},
        endpoints=endpoints,
        delivery={"retry_delays": [0.2], "retry_window_hours": 0.01},
        extra=f"[server]\nport = {public}\n{server}\n",
    )
    env = {"RELAY_ADMIN_TOKEN": TOKEN, "HDR_SECRET": HEADER_SECRET}
    proc = RelayProcess(config, redis.url, command, env=env, preexec_fn=preexec_fn)
    relay = Relay(
        public, admin, proc, config, load_settings(config, {**TEST_ENV, **env, "REDIS_URL": redis.url}), redis.url
    )
    deadline = time.monotonic() + 20
    for port in (public, admin):
        while True:
            try:
                if raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200:
                    break
            except OSError:
                pass
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                proc.stop()
                raise AssertionError(f"relay did not come up:\n{proc.output()[-3000:]}")
            time.sleep(0.05)
    return relay


def raw(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is and read the answer until the server closes (requests say Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def request(method: str, path: str, headers: list[bytes] | None = None, body: bytes = b"") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1".encode(),
        b"Host: 127.0.0.1",
        b"Connection: close",
        f"Content-Length: {len(body)}".encode(),
        *(headers or []),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def login(relay: Relay) -> tuple[str, str]:
    """A dashboard session: (cookie value, CSRF token)."""
    from relay.dashboard.sessions import COOKIE, parse_cookie, signing_key

    status, headers, _ = raw(
        relay.admin,
        request(
            "POST",
            "/dashboard/login",
            [b"Content-Type: application/x-www-form-urlencoded"],
            urlencode({"token": TOKEN}).encode(),
        ),
    )
    assert status == 303, status
    match = re.search(COOKIE + r"=([^;]+)", headers["set-cookie"])
    assert match
    session = parse_cookie(match.group(1), signing_key(relay.settings), time.time())
    assert session is not None
    return match.group(1), session.csrf


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Relay]:
    started = start_relay(tmp_path_factory.mktemp("hostile"), redis_server)
    yield started
    started.proc.stop()


# -- 1. bytes that are not UTF-8 -------------------------------------------------------------------


def test_non_utf8_headers_cookies_forms_and_queries_get_a_reason(relay: Relay) -> None:
    cookie, csrf = login(relay)
    form = b"Content-Type: application/x-www-form-urlencoded"
    cases = [
        ("GET", "/api/notifications", [b"Authorization: Bearer \xff\xfe"], b""),
        ("GET", "/dashboard/", [b"Cookie: relay_dashboard=\xff\xfe.9999999999.x"], b""),
        ("POST", "/dashboard/login", [form], b"token=\xff\xfe"),
        (
            "POST",
            "/dashboard/notifications/ipn_000000000000000000000000/resend",
            [f"Cookie: relay_dashboard={cookie}".encode(), b"X-CSRF-Token: \xff\xfe", form],
            b"",
        ),
        (
            "POST",
            "/dashboard/resend",
            [f"Cookie: relay_dashboard={cookie}".encode(), form],
            b"csrf=" + csrf.encode() + b"&state=\xff",
        ),
        ("GET", "/api/notifications?source=%FF%FE", [f"Authorization: Bearer {TOKEN}".encode()], b""),
        ("GET", "/dashboard/notifications?ref=%C3", [f"Cookie: relay_dashboard={cookie}".encode()], b""),
        ("GET", "/api/notifications", [f"Authorization: Bearer {TOKEN}".encode(), b"Idempotency-Key: \xc3("], b""),
    ]
    for method, path, headers, body in cases:
        status, _, text = raw(relay.admin, request(method, path, headers, body))
        assert status in (400, 401), (path, status, text)
        assert b"UTF-8" in text, (path, text)
    # a form that does not parse at all (found by the fuzz below) is a 400 with the reason too
    status, _, text = raw(
        relay.admin, request("POST", "/dashboard/login", [b"Content-Type: multipart/form-data; boundary=x"], b"junk")
    )
    assert status == 400 and b"does not parse" in text, (status, text)
    # the public listener too
    status, _, text = raw(relay.public, request("POST", "/ipn", [b"X-Forwarded-For: \xff", form], b"a=1"))
    assert status == 400 and b"UTF-8" in text
    # valid UTF-8 beyond ASCII is no problem at all: a wrong token is simply wrong
    status, _, text = raw(relay.admin, request("GET", "/api/notifications", ["Authorization: Bearer é".encode()]))
    assert status == 401 and b"invalid bearer token" in text
    assert not any(event in relay.log() for event in ERROR_EVENTS), relay.log()[-3000:]


def test_a_request_aiohttp_cannot_parse_is_one_log_line_without_a_traceback(relay: Relay) -> None:
    before = relay.log()
    for port in (relay.public, relay.admin):
        status, _, _ = raw(port, b"POST /ipn HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert status == 400
    deadline = time.monotonic() + 5
    while relay.log().count("bad_http_request") - before.count("bad_http_request") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    added = relay.log()[len(before) :]
    assert added.count("bad_http_request") == 2, added
    assert "Traceback" not in added and "Error handling request" not in added, added


def _admin_routes() -> list[tuple[str, str]]:
    """Every admin route, read from the app itself so a new one is fuzzed too."""
    app = create_app(_offline_settings(), public=False)
    found: list[tuple[str, str]] = []

    def walk(router: web.UrlDispatcher) -> None:
        for res in router.resources():
            info = res.get_info()
            if "app" in info:
                walk(info["app"].router)  # its resources carry the prefix already
                continue
            path = info.get("path") or info.get("formatter") or info.get("prefix", "")
            if "directory" in info:
                continue
            for route in res:
                if route.method != "HEAD":
                    found.append((route.method, path))

    walk(app.router)
    return sorted(set(found))


def _offline_settings() -> Settings:
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="relay-routes-"))
    return load_settings(write_config(directory / "relay.toml"), {**TEST_ENV, "RELAY_ADMIN_TOKEN": TOKEN})


ADMIN_ROUTES = _admin_routes()
HEADER_NAMES = [
    "Authorization",
    "Cookie",
    "X-CSRF-Token",
    "Idempotency-Key",
    "Content-Type",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "Sec-Fetch-Site",
    "Accept",
    "Origin",
    "Referer",
    "User-Agent",
]
line_bytes = st.binary(max_size=48).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(ADMIN_ROUTES),
    segment=line_bytes,
    header=st.sampled_from(HEADER_NAMES),
    value=line_bytes,
    query=st.binary(max_size=24),
    body=st.binary(max_size=120),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "multipart/form-data; boundary=x", "text/plain"]
    ),
    authed=st.booleans(),
    session=st.booleans(),
)
def test_fuzz_every_admin_route_and_header_with_arbitrary_bytes(
    relay: Relay,
    route: tuple[str, str],
    segment: bytes,
    header: str,
    value: bytes,
    query: bytes,
    body: bytes,
    content_type: str,
    authed: bool,
    session: bool,
) -> None:
    method, template = route
    global _SESSION
    if session and _SESSION is None:
        _SESSION = login(relay)
    fill = "".join(f"%{b:02X}" for b in segment) or "x"
    path = re.sub(r"\{[^}]+\}", fill, template) + "?q=" + "".join(f"%{b:02X}" for b in query)
    headers = [f"Content-Type: {content_type}".encode(), header.encode() + b": " + value]
    if authed:
        headers.append(f"Authorization: Bearer {TOKEN}".encode())
    if session and _SESSION is not None:
        headers += [f"Cookie: relay_dashboard={_SESSION[0]}".encode(), f"X-CSRF-Token: {_SESSION[1]}".encode()]
    status, _, text = raw(relay.admin, request(method, path, headers, body))
    assert status < 500, (method, path, header, value, status, text[:300])
    if status >= 400:
        assert text.strip(), (method, path, status)
    if template.endswith("/logout"):
        _SESSION = None  # it ended the session; the next example logs in again
    assert not any(event in relay.log() for event in ERROR_EVENTS), relay.log()[-3000:]


_SESSION: tuple[str, str] | None = None


# -- 2. slow and idle connections --------------------------------------------------------------------


def _closed_within(sock: socket.socket, limit: float, dribble: bytes | None = None) -> float | None:
    """Seconds until the server closes ``sock`` (sending ``dribble`` a byte at a time), or None."""
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < limit:
        if dribble is not None:
            try:
                sock.send(dribble[sent % len(dribble) :][:1])
                sent += 1
            except OSError:
                return time.monotonic() - started
        readable, _, _ = select.select([sock], [], [], 0.25)
        if readable:
            try:
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except OSError:
                return time.monotonic() - started
    return None


@pytest.fixture(scope="module")
def strict_relay(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Relay]:
    started = start_relay(
        tmp_path_factory.mktemp("strict"), redis_server, server="header_timeout = 0.5\nidle_timeout = 0.8\n"
    )
    yield started
    started.proc.stop()


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_header_slowloris_and_silent_connections_are_dropped(strict_relay: Relay, listener: str) -> None:
    port = getattr(strict_relay, listener)
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"POST /ipn HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = _closed_within(slow, 20, dribble=b"abcdefgh")
    assert took is not None, "a header dribbled a byte every 0.25 s was never cut off"
    with socket.create_connection(("127.0.0.1", port)) as silent:
        took = _closed_within(silent, 20)
    assert took is not None, "a connection that sent nothing was kept open"


def test_an_idle_keep_alive_connection_is_closed_after_idle_timeout(strict_relay: Relay) -> None:
    with socket.create_connection(("127.0.0.1", strict_relay.public)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        took = _closed_within(conn, 20)
    assert took is not None, "an idle keep-alive connection stayed open"
    # it is the idle timeout (0.8 s) that ended it, not the header timeout (0.5 s) or anything sooner;
    # the clock starts when this side has read the answer, after the server's idle timer did, so a
    # loaded machine measures less than 0.8 (0.788 seen): the line is midway between the two timeouts
    assert took >= 0.65, took


# -- 3. a flood of idle and dribbling connections under systemd's descriptor limit -------------------


def _systemd_default_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def _until_accepted(pid: int) -> int:
    """Wait until the relay holds the flood: its descriptor count stops growing (at most 15 s)."""
    counts: list[int] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        counts.append(len(list(Path(f"/proc/{pid}/fd").iterdir())))
        if len(counts) >= 4 and counts[-1] > 1000 and len(set(counts[-4:])) == 1:
            break
        time.sleep(0.5)
    return counts[-1]


def test_a_signed_ipn_gets_its_receipt_under_2000_idle_and_dribbling_connections(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4200:
        pytest.fail(f"this test needs a descriptor hard limit of 4200 or more (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    # default settings: the test is over well within the 10 s header timeout, so what holds the door
    # open here is the connection cap and its eviction of the longest-waiting idle connection
    relay = start_relay(tmp_path, redis_server, preexec_fn=_systemd_default_nofile)
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(2000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", relay.public))
            socks.append(s)
        dribblers = socks[1::2]
        _until_accepted(relay.proc.proc.pid)
        for s in dribblers:
            try:
                s.send(b"POST /ipn HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            except OSError:
                pass

        def dribble() -> None:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                for s in dribblers:
                    try:
                        s.send(b"z")
                    except OSError:
                        pass
                stop.wait(0.5)

        thread = threading.Thread(target=dribble, daemon=True)
        thread.start()
        time.sleep(1.0)
        took = []
        for n in range(5):
            body = signed_body(ipn_fields(f"77700000{n}"))
            started = time.monotonic()
            status, _, text = raw(
                relay.public,
                request("POST", "/ipn", [b"Content-Type: application/x-www-form-urlencoded"], body),
                timeout=10,
            )
            took.append(time.monotonic() - started)
            assert status == 200 and (b"<sig" in text or b"<EPAYMENT>" in text), (status, text)
        print(f"receipt latency under 2,000 hostile connections: {', '.join(f'{t * 1000:.0f} ms' for t in took)}")
        # the target is 1 s (docs/reliability.md); the bound is looser so a loaded machine cannot fail it,
        # while the code before issue 13 left the IPN unanswered (no receipt within 10 s)
        assert max(took) < 5, took
    finally:
        stop.set()
        for s in socks:
            s.close()
        relay.proc.stop()
    # the subprocess started at systemd's 1,024 and raised its soft limit to the hard one
    line = next((line for line in relay.log().splitlines() if "descriptor_limit" in line), "")
    assert re.search(r"soft_before\W+1024\b", line), relay.log()[-2000:]
    raised = re.search(r"[^_]soft\W+(\d+)", line)
    assert raised and int(raised.group(1)) > 4000, line
    # and the cap made room by closing idle connections
    closed = next(
        line for line in relay.log().splitlines() if "connections_closed" in line and re.search(r"role\W+public", line)
    )
    evicted = re.search(r"evicted\W+(\d+)", closed)
    assert evicted and int(evicted.group(1)) > 0, closed
    assert not any(e in relay.log() for e in ERROR_EVENTS)


# -- 4. terminal escapes through the CLI ------------------------------------------------------------


def relay_cli(relay: Relay, *args: str) -> Done:
    """``relay`` run in the test process (tests/cli.py): what it prints and its exit code."""
    env = {"RELAY_ADMIN_TOKEN": TOKEN, "HDR_SECRET": HEADER_SECRET}
    return run_cli("--config", str(relay.config), *args, redis_url=relay.redis_url, env=env)


def test_cli_output_escapes_control_characters_from_a_genuine_ins(relay: Relay) -> None:
    status_value = "approved\x1b[2J\x1b[31mRED\x9b31m\u202eevil\n999 ins default FAKE-ROW"
    sale, invoice = "9093720000017", "9093720000018"
    body = urlencode(
        [
            ("message_type", "INVOICE_STATUS_CHANGED"),
            ("message_id", "5"),
            ("vendor_id", SELLER_ID),
            ("sale_id", sale),
            ("invoice_id", invoice),
            ("md5_hash", protocol.ins_hash(sale, SELLER_ID, invoice, INS_WORD)),
            ("invoice_status", status_value),
        ]
    ).encode()
    status, _, text = raw(
        relay.public, request("POST", "/ins", [b"Content-Type: application/x-www-form-urlencoded"], body)
    )
    assert status == 200 and text.strip() == b"OK", text
    nid = notification_id("default", "ins", body)
    listing = relay_cli(relay, "notifications", "list", "--channel", "ins")
    show = relay_cli(relay, "notifications", "show", nid)
    as_json = relay_cli(relay, "notifications", "show", nid, "--json")
    for out in (listing, show, as_json):
        assert out.returncode == 0, out.stderr
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", out.stdout), out.stdout
        assert not any(line.startswith("999") for line in out.stdout.splitlines()), out.stdout
    assert "approved\\e[2J\\e[31mRED\\x9b31m\\u202eevil\\n999 ins default FAKE-ROW" in listing.stdout
    assert "\\e[2J" in show.stdout
    # the JSON is still exactly the stored value for a script that parses it
    assert json.loads(as_json.stdout)["status"] == status_value


# -- 5 and 6. secrets in raw bodies and in cut snippets ----------------------------------------------


def test_redact_covers_every_encoding_and_cut_prefixes() -> None:
    from relay.redact import redact

    secret = "SYNTH-secret_KEY/2024+ x"
    shapes = [
        secret,
        quote_plus(secret),
        quote(secret, safe=""),
        quote(secret, safe="").lower(),
        json.dumps(secret)[1:-1],
        json.dumps(HEADER_SECRET)[1:-1],
    ]
    for shape in shapes:
        out = redact({"a": [f"before {shape} after"]}, [secret, HEADER_SECRET])
        assert out == {"a": [f"before {REDACTED} after"]}, shape
    assert redact("y" * 500 + secret[:8], [secret]) == "y" * 500 + REDACTED
    assert redact(quote_plus(secret)[-9:] + " tail", [secret]) == REDACTED + " tail"
    assert redact("ends with SYNTH-s", [secret]) == "ends with SYNTH-s"  # 7 characters: ordinary text


def test_redact_covers_the_encoders_of_other_languages() -> None:
    """A form encoder escapes what it likes: JavaScript's encodeURIComponent keeps ``!*'()~`` and
    writes a space as %20, PHP's urlencode escapes ``~`` as %7E, some clients escape only what they
    must. Any mix of raw characters, percent-escapes and JSON escapes is still the secret."""
    from relay.redact import redact

    secret = "my~secret key!*(x)/ü"
    shapes = [
        quote(secret, safe="-_.!~*'()"),  # encodeURIComponent
        quote_plus(secret, safe="").replace("~", "%7E"),  # PHP urlencode
        quote(secret, safe="").replace("~", "%7e"),  # rawurlencode, lower-case hex
        "my~secret+key!*(x)%2Fü",  # only the space and the slash escaped
        json.dumps(secret).strip('"').replace("/", "\\/"),  # JSON with an escaped slash
    ]
    for shape in shapes:
        assert redact(f"a={shape}&b=1", [secret]) == f"a={REDACTED}&b=1", shape


class Endpoints:
    """Two real endpoints: one echoes the body it gets, one answers with a secret across the snippet's cut."""

    def __init__(self) -> None:
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def echo(request: web.Request) -> web.Response:
            return web.Response(body=await request.read())

        async def tail(request: web.Request) -> web.Response:
            await request.read()
            # the 512-byte snippet ends 20 characters into the secret
            return web.Response(text="y" * 492 + SECRET_KEY + json.dumps({"seen": HEADER_SECRET}))

        app = web.Application()
        app.add_routes([web.post("/echo", echo), web.post("/tail", tail)])
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()


async def test_no_secret_in_any_encoding_reaches_the_api_cli_or_dashboard(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    import asyncio

    endpoints = Endpoints()
    await endpoints.start()
    eps = [
        {"name": "echo", "url": f"http://127.0.0.1:{endpoints.port}/echo"},
        {"name": "tail", "url": f"http://127.0.0.1:{endpoints.port}/tail", "headers": {"X-Key": "${HDR_SECRET}"}},
    ]
    relay = await asyncio.to_thread(start_relay, tmp_path, redis_server, endpoints=eps)
    worker = RelayProcess(
        relay.config, relay.redis_url, "worker", env={"RELAY_ADMIN_TOKEN": TOKEN, "HDR_SECRET": HEADER_SECRET}
    )
    try:
        fields = [("NOTE", SECRET_KEY + " and " + HEADER_SECRET), *ipn_fields("555000111")]
        body = signed_body(fields)
        status, _, _ = await asyncio.to_thread(
            raw, relay.public, request("POST", "/ipn", [b"Content-Type: application/x-www-form-urlencoded"], body)
        )
        assert status == 200
        nid = notification_id("default", "ipn", body)
        auth = [f"Authorization: Bearer {TOKEN}".encode()]
        deadline = time.monotonic() + 30
        while True:
            _, _, text = await asyncio.to_thread(raw, relay.admin, request("GET", f"/api/notifications/{nid}", auth))
            doc = json.loads(text)
            if all(d.get("state") == "delivered" for d in doc["deliveries"].values()) and len(doc["deliveries"]) == 2:
                break
            assert time.monotonic() < deadline, doc
            await asyncio.sleep(0.1)
        cookie, _ = await asyncio.to_thread(login, relay)
        _, _, page = await asyncio.to_thread(
            raw,
            relay.admin,
            request("GET", f"/dashboard/notifications/{nid}", [f"Cookie: relay_dashboard={cookie}".encode()]),
        )
        show = await asyncio.to_thread(relay_cli, relay, "notifications", "show", nid)
        as_json = await asyncio.to_thread(relay_cli, relay, "notifications", "show", nid, "--json")
        answers = {"api": text.decode(), "dashboard": page.decode(), "cli": show.stdout, "cli --json": as_json.stdout}
        leaks = [
            SECRET_KEY,
            quote_plus(SECRET_KEY),
            quote(SECRET_KEY, safe=""),
            SECRET_KEY[:12],
            HEADER_SECRET,
            quote_plus(HEADER_SECRET),
            json.dumps(HEADER_SECRET)[1:-1],
            "secret-4242",
        ]
        for where, answer in answers.items():
            for leak in leaks:
                assert leak not in answer, (where, leak)
            assert REDACTED in answer, where
        attempts = {ep: d["attempt_log"][-1]["response"] for ep, d in doc["deliveries"].items()}
        assert attempts["tail"].endswith("y" * 8 + REDACTED), attempts["tail"][-40:]
        assert REDACTED in attempts["echo"]
    finally:
        worker.stop()
        relay.proc.stop()
        if endpoints.runner is not None:
            await endpoints.runner.cleanup()
