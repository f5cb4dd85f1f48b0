"""The OpenAPI document states exactly the rules the API enforces.

For every parameter and request-body field the document describes, values on both sides of each of
its patterns, enums and bounds are judged by the document's own schema (jsonschema_rs), then sent to
the running API: a value the document rejects must be answered 400 naming the field and the value; a
value the document accepts must not be refused for its form. Which values are tried comes from the
document, so a rule added to it is checked without touching this test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jsonschema_rs
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from config.settings import Settings
from relay.server import create_app
from tests.test_api import SOURCES, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MISSING = "ipn_" + "0" * 24  # well-formed, never stored
# refused for what they mean, not for their form: the document cannot know the configuration, which
# cursors the API issued, or that February has no 30th (a pattern states a time's shape, not its calendar)
SEMANTIC = (
    "not a configured endpoint",
    "not a configured source",
    "not a cursor this API returned",
    "no such date or time",
)
STRINGS = [
    "",
    " ",
    "true",
    "false",
    "True",
    "1",
    "a",
    "A",
    "0",
    "-1",
    "1.5",
    "ipn",
    "a b",
    "x\n",
    "\x00",
    "\x7f",
    "é",
    "failed",
    "Billing!",
    "yesterday",
    "2024-05-01",
    "2024-05-01T12:00:00Z",
    "2024-05-01T14:00:00+02:00",
    "2024-02-30",
    "2024-W18-3",
    "2024-05-01T12:00:00.1234567Z",
    "1714564800000",
    "9" * 15,
    "9" * 16,
    "a" * 129,
]
SAMPLES = [
    "billing",
    MISSING,
    f"{MISSING}~r12",
    "fuzz-1.2:3~x",
    "2024-05-01T12:00",
    "2024-05-01 12:00:00.123456z",
    "eu-shop",
    "230000001",
    *STRINGS,
]
OTHERS: list[Any] = [None, True, False, 0, -1, 1, 1.5, 10**15, [], ["x"], [1], {}, {"state": "failed"}]


@dataclass(frozen=True)
class Field:
    """One thing the document describes: where it goes, how the error names it, and its schema."""

    where: str  # query | header | path | body
    operation: str  # "METHOD /path"
    name: str  # as the error names it: limit, idempotency_key, filter.since
    wire: str  # as sent: the query or header name, or the body field's path
    schema: dict[str, Any]


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis) -> TestClient:
    settings = make_settings(
        sources=SOURCES,
        env={"RELAY_ADMIN_TOKEN": TOKEN},
        endpoints=[
            {"name": "billing", "url": "http://127.0.0.1:9/hook"},
            {"name": "crm", "url": "http://127.0.0.1:9/hook"},
        ],
    )
    return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The schema with its references inlined (the document's refer one level, to components)."""
    if "$ref" in schema:
        target = components[schema["$ref"].rsplit("/", 1)[1]]
        return _resolve({**{k: v for k, v in schema.items() if k != "$ref"}, **target}, components)
    return {
        key: [_resolve(b, components) for b in value] if key in ("anyOf", "oneOf") else value
        for key, value in schema.items()
    }


def fields(doc: dict[str, Any]) -> Iterator[Field]:
    components = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            operation = f"{method.upper()} {path}"
            for p in op.get("parameters", []):
                name = p["name"].lower().replace("-", "_")
                yield Field(p["in"], operation, name, p["name"], _resolve(p["schema"], components))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is None:
                continue
            body = _resolve(body, components)
            for name, prop in body["properties"].items():
                prop = _resolve(prop, components)
                yield Field("body", operation, name, name, prop)
                nested = next((b for b in prop.get("anyOf", [prop]) if b.get("type") == "object"), None)
                for inner, schema in (nested or {}).get("properties", {}).items():
                    yield Field("body", operation, f"{name}.{inner}", f"{name}.{inner}", schema)


def _leaves(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield schema
    for branch in schema.get("anyOf", []):
        yield from _leaves(branch)


def candidates(schema: dict[str, Any]) -> list[Any]:
    """Values at and just past each pattern, enum and bound in ``schema``, and a fixed set of odd ones."""
    values: list[Any] = [*STRINGS, *OTHERS]
    for leaf in _leaves(schema):
        for member in leaf.get("enum", []):
            values += [member, member + "x", member.upper(), " " + member]
        if "pattern" in leaf:
            # the first few samples the pattern accepts, pushed past each of its edges
            for good in [v for v in SAMPLES if re.fullmatch(leaf["pattern"], v)][:3]:
                values += [
                    good,
                    good + "\n",
                    good + "!",
                    "~" + good,
                    good.upper(),
                    good[:-1],
                    good[1:],
                    *(good + good[-1] * n for n in (1, 40, 127, 128, 200)),
                    good + "~r1",
                ]
        for bound in ("minimum", "maximum"):
            if bound in leaf:
                values += [leaf[bound] - 1, leaf[bound], leaf[bound] + 1]
        for bound in ("minLength", "maxLength"):
            if bound in leaf:
                values += ["a" * max(0, leaf[bound] - 1), "a" * leaf[bound], "a" * (leaf[bound] + 1)]
        for bound in ("minItems", "maxItems"):
            if bound in leaf:
                values += [[MISSING] * n for n in (max(0, leaf[bound] - 1), leaf[bound], leaf[bound] + 1)]
    unique: dict[str, Any] = {json.dumps(v): v for v in values}
    return list(unique.values())


def documented(f: Field, value: Any) -> bool:
    """Does the document accept ``value`` for ``f``? A query or header value is text on the wire."""
    validator = jsonschema_rs.validator_for(f.schema, validate_formats=True)  # formats too, should one appear
    if f.where == "body":
        return bool(validator.is_valid(value))
    text = str(value)
    # a boolean is written as true or false (OpenAPI's form style), and nothing else
    if text in ("true", "false") and validator.is_valid(text == "true"):
        return True
    # a number is written as its digits: "007" is text, not the integer 7
    as_int = int(text) if text.isascii() and text.lstrip("-").isdigit() and str(int(text)) == text else None
    return bool(validator.is_valid(text) or (as_int is not None and validator.is_valid(as_int)))


def sendable(f: Field, value: Any) -> bool:
    if f.where == "body":
        return True
    if not isinstance(value, str | int) or isinstance(value, bool):
        return False  # a query string or header carries text, or a number written as text
    text = str(value)
    if f.where == "header":
        return text.isascii() and text.isprintable() and text == text.strip() and text != ""
    if f.where == "path":
        return text != "" and "/" not in text and text not in (".", "..")
    return True


def _body(path: str, f: Field, value: Any) -> dict[str, Any]:
    """The smallest body that is valid but for ``value``: a bulk resend needs ids or a filter."""
    bulk = path == "/api/resend"
    if f.where != "body":
        return {"ids": [MISSING]} if bulk else {}
    outer, _, inner = f.wire.partition(".")
    if inner:
        return {outer: {inner: value}}
    if bulk and outer not in ("ids", "filter"):
        return {"ids": [MISSING], outer: value}
    return {outer: value}


async def send(client: TestClient, f: Field, value: Any) -> tuple[int, str]:
    method, path = f.operation.split(" ", 1)
    # the parameter under test takes the value; any other path parameter a valid one
    for param, valid in (("id", MISSING), ("name", "billing")):
        path = path.replace(
            f"{{{param}}}", quote(str(value), safe="") if f.where == "path" and f.name == param else valid
        )
    kwargs: dict[str, Any] = {"headers": dict(AUTH)}
    if f.where == "query":
        kwargs["params"] = {f.wire: str(value)}
    elif f.where == "header":
        kwargs["headers"][f.wire] = str(value)
    if method == "POST":
        kwargs["data"] = json.dumps(_body(path, f, value))
        kwargs["headers"]["Content-Type"] = "application/json"
    resp = await client.request(method, path, **kwargs)
    assert resp.content_type == "application/json", await resp.text()
    doc = await resp.json()
    return resp.status, doc.get("error", "") if isinstance(doc, dict) else ""


async def test_every_documented_rule_is_the_one_enforced(client: TestClient) -> None:
    resp = await client.get("/api/openapi.json", headers=AUTH)
    doc = await resp.json()
    checked: dict[str, tuple[int, int]] = {}
    for f in fields(doc):
        inside = outside = 0
        for value in candidates(f.schema):
            if not sendable(f, value):
                continue
            status, error = await send(client, f, value)
            where = f"{f.operation} {f.where} {f.name}={value!r}: {status} {error}"
            if f.where == "path" and f.name == "name":
                # a configured endpoint is acted on; any other name, well-formed or not, is not found
                if documented(f, value):
                    inside += 1
                    assert status == 200 if value == "billing" else status == 404 and "no endpoint" in error, where
                else:
                    outside += 1
                    assert status == 404 and "no endpoint" in error, where
            elif f.where == "path":
                # a malformed id is not found either way, but is told what ids look like
                assert status == 404, where
                if documented(f, value):
                    inside += 1
                    assert "ids look like" not in error, where
                else:
                    outside += 1
                    assert "ids look like" in error, where
            elif documented(f, value):
                inside += 1
                refused = status == 400 and error.startswith(f"invalid {f.name}=")
                assert not refused or any(reason in error for reason in SEMANTIC), where
            else:
                outside += 1
                assert status == 400 and error.startswith(f"invalid {f.name}="), where
        checked[f"{f.operation} {f.where} {f.name}"] = (inside, outside)
    # each field saw values on both sides of its rules, so no check above ran empty
    assert all(inside and outside for inside, outside in checked.values()), {
        name: n for name, n in checked.items() if not all(n)
    }
    # the list's 10 parameters; the id twice; the header, endpoint and key of a resend; the bulk body's 5
    # fields, its filter's 8 and the header
    assert len(checked) >= 10 + 2 + 3 + 14, sorted(checked)


# -- answers carry documented fields only ------------------------------------------------------------

RECORDS = ("Notification", "NotificationSummary", "Delivery", "DeliverySummary", "Attempt")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _validator(doc: dict[str, Any], name: str) -> Any:
    return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


async def test_a_notification_and_its_deliveries_carry_documented_fields_only(
    aiohttp_client: Any, make_settings: Callable[..., Settings], redis: Redis, sink: Callable[..., Any]
) -> None:
    import asyncio

    from relay.store.ingest import notification_id
    from tests.cli import run_cli
    from tests.support import close_worker, ipn_fields, signed_body, wait_for
    from workers.main import create_worker

    ok, down = await sink([200]), await sink([500])
    settings = make_settings(
        sources=SOURCES,
        env={"RELAY_ADMIN_TOKEN": TOKEN},
        endpoints=[
            {"name": "ok", "url": ok.url, "channels": ["ipn"]},
            {"name": "down", "url": down.url, "channels": ["ipn"], "concurrent": True, "retry_delays": [60, 60]},
            {"name": "refunds", "url": ok.url, "channels": ["ipn"], "order_statuses": ["REFUND"]},
        ],
    )
    client = await aiohttp_client(create_app(settings))
    spec = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    # the document closes every record: a field it does not name is a violation, not an extra
    for name in RECORDS:
        assert spec["components"]["schemas"][name].get("additionalProperties") is False, name
    worker = create_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())

    async def post(refno: str) -> str:
        body = signed_body(ipn_fields(refno))
        resp = await client.post("/ipn", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 200, await resp.text()
        return notification_id("default", "ipn", body)

    async def state(nid: str, ep: str) -> str:
        return ((await redis.hget(f"relay:d:{nid}:{ep}", "state")) or b"").decode()

    try:
        first = await post("510001")
        assert await wait_for(lambda: _is(state(first, "down"), "retrying"), 15)
        assert await wait_for(lambda: _is(state(first, "ok"), "delivered"), 15)
        resp = await client.post(f"/api/notifications/{first}/cancel", json={"endpoint": "down"}, headers=AUTH)
        assert resp.status == 200, await resp.text()
        assert (await client.post("/api/endpoints/down/pause", headers=AUTH)).status == 200
        second = await post("510002")
        assert await wait_for(lambda: _is(state(second, "down"), "paused"), 15)
    finally:
        await close_worker(worker)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    answers = {}
    for nid in (first, second):
        resp = await client.get(f"/api/notifications/{nid}", headers=AUTH)
        answers[nid] = await resp.json()
        errors = [e.message for e in _validator(spec, "Notification").iter_errors(answers[nid])]
        assert not errors, errors
    listing = await (await client.get("/api/notifications", headers=AUTH)).json()
    page = _validator(spec, "NotificationPage")
    assert not [e.message for e in page.iter_errors(listing)]
    # and the check bites: one field the document does not name is refused
    leaky = json.loads(json.dumps(answers[first]))
    leaky["deliveries"]["ok"]["rec:1"] = "delivered"
    assert not _validator(spec, "Notification").is_valid(leaky)

    d = answers[first]["deliveries"]
    assert d["ok"]["state"] == "delivered" and ISO.match(d["ok"]["delivered_at"]) and d["ok"]["attempts"] == 1
    assert d["down"]["state"] == "cancelled" and ISO.match(d["down"]["cancelled_at"])
    assert d["down"]["cancelled_by"].startswith("api (")
    assert d["refunds"]["state"] == "skipped" and d["refunds"]["reason"]
    assert ISO.match(d["down"]["attempt_log"][0]["at"]) and d["down"]["attempt_log"][0]["status"] == 500
    paused = answers[second]["deliveries"]["down"]
    assert paused["state"] == "paused" and paused["paused_by"].startswith("api (") and ISO.match(paused["paused_since"])

    # the same record in the CLI's --json, and its words in the text
    cmd = ["--config", str(settings.config_path), "notifications", "show", first]
    shown = run_cli(*cmd, "--json", redis_url=settings.redis_url or "")
    assert json.loads(shown.stdout)["deliveries"] == d, shown.stderr
    text = run_cli(*cmd, redis_url=settings.redis_url or "").stdout
    assert f"down: cancelled by {d['down']['cancelled_by']} at {d['down']['cancelled_at']}" in text, text


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)
