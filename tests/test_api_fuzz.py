"""Schemathesis against the running admin API: no 5xx, and every answer conforms to /api/openapi.json.

The app runs for real (aiohttp on a free port, real Redis) in a thread of its own, because
schemathesis calls it through ``requests``. Examples are bounded so the whole run stays well under
a minute.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.settings import Settings
from relay.server import create_app
from tests.support import RedisServer, free_port, ins_body, ipn_fields, signed_body
from tests.test_api import SOURCES, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]


@pytest.fixture
def live_api(make_settings: Callable[..., Settings], redis_server: RedisServer) -> Iterator[str]:
    """The real app on a free port, served from its own event loop in a thread."""
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    settings = make_settings(
        sources=SOURCES,
        env={"RELAY_ADMIN_TOKEN": TOKEN},
        endpoints=[
            {"name": "billing", "url": "http://127.0.0.1:9/hook", "order_statuses": ["COMPLETE"]},
            {"name": "crm", "url": "http://127.0.0.1:9/hook", "concurrent": True},
        ],
    )
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings), access_log=None)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="live-api", daemon=True)
    thread.start()
    assert ready.wait(10), "the app did not start"
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def seed(base: str) -> list[str]:
    """A few real notifications and a resend, so listing and detail answer with real data."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, path in [
        (signed_body(ipn_fields("100")), "/ipn"),
        (signed_body(ipn_fields("200", status="PENDING")), "/ipn"),
        (ins_body(), "/ins"),
        (signed_body(ipn_fields("300")), "/ipn/eu-shop"),
    ]:
        assert requests.post(base + path, data=body, headers=form, timeout=10).status_code == 200
    items = requests.get(f"{base}/api/notifications", headers=AUTH, timeout=10).json()["items"]
    ids = [i["id"] for i in items]
    resp = requests.post(f"{base}/api/notifications/{ids[-1]}/resend", headers=AUTH, json={}, timeout=10)
    assert resp.status_code == 202, resp.text
    return [resp.json()["id"], *ids]


@pytest.mark.slow  # a schemathesis fuzz run (~30 s here): in make test, not in make check
def test_admin_api_conforms_to_its_openapi_document(live_api: str) -> None:
    ids = seed(live_api)
    schema = schemathesis.openapi.from_url(f"{live_api}/api/openapi.json", headers=AUTH, timeout=10)
    session = requests.Session()

    def call(case: Any, checks: list[Any]) -> None:
        case.call_and_validate(base_url=live_api, session=session, headers=AUTH, checks=checks, timeout=10)

    # real data through every operation, so the documented shapes are checked against real answers
    for nid in ids:
        call(schema["/api/notifications/{id}"]["GET"].Case(path_parameters={"id": nid}), CHECKS)
    call(schema["/api/notifications"]["GET"].Case(query={"limit": 2}), CHECKS)
    call(
        schema["/api/notifications/{id}/resend"]["POST"].Case(
            path_parameters={"id": ids[-1]}, body={"endpoint": "crm"}, media_type="application/json"
        ),
        CHECKS,
    )
    call(
        schema["/api/resend"]["POST"].Case(
            body={"ids": ids, "idempotency_key": "fuzz-1"}, media_type="application/json"
        ),
        CHECKS,
    )
    call(
        schema["/api/resend"]["POST"].Case(
            body={"filter": {"channel": "ipn"}, "dry_run": True}, media_type="application/json"
        ),
        CHECKS,
    )

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5  # schemathesis leaves out the document's own route
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                call(case, checks)  # noqa: B023  (run at once, inside this iteration)

            fuzz()
