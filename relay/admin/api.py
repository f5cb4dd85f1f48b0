"""The admin JSON API under ``/api``: list and inspect notifications, resend them, health, OpenAPI.

Auth: ``Authorization: Bearer <token>``, compared in constant time with the token in the environment
variable named by ``server.admin_token_env``. Without a configured token the API is **off**: every
``/api`` route answers 404 with a JSON error saying how to turn it on. It is never open.

Every answer is JSON; errors are ``{"error": "..."}`` with the reason (a bad parameter is named with
its value), never a traceback.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from relay import events
from relay.admin import openapi
from relay.redact import redact_notification, redact_rows
from relay.store import audit, detail, endpoints, queries, reconcile, reload
from relay.store.connection import REDIS_ERRORS, clock_ms
from relay.store.control import Control
from relay.store.params import AuditQuery, BulkRequest, EndpointPath, ListQuery, ResendRequest, TargetRequest
from relay.store.queries import BadParam, BadRequest, QueryError, validate
from relay.store.resend import Resender
from relay.store.resend_records import check_idempotency_key
from relay.store.stats import health_report
from relay.web import appkeys
from relay.web.inputs import NOT_UTF8

logger = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REALM = 'Bearer realm="relay admin API"'


def setup_api(app: web.Application) -> None:
    """Mount the admin API on ``app`` at ``/api`` (its own sub-application, auth and error handling)."""
    api = web.Application(middlewares=[guard])

    async def share(api: web.Application) -> AsyncIterator[None]:
        # the parent's resources, under the same keys, so views written for the parent app work here
        for key in (appkeys.LIVE, appkeys.REDIS, appkeys.STORE, appkeys.REGISTRY, appkeys.METRICS):
            if key in app:
                api[key] = app[key]  # type: ignore[misc]
        settings = app[appkeys.LIVE].settings
        api[appkeys.RESENDER] = resender = Resender(app[appkeys.REDIS], settings)
        app[appkeys.LIVE].on_reload.append(resender.follow)
        if settings.admin_token is None:
            logger.info("admin_api_off", enable_with=settings.server.admin_token_env)
        yield

    api.cleanup_ctx.append(share)
    api.add_routes(
        [
            web.get("/notifications", list_notifications),
            web.get("/notifications/{id}", show_notification),
            web.post("/notifications/{id}/resend", resend_one),
            web.post("/resend", resend_bulk),
            web.get("/health", health),
            web.get("/reconcile", reconciliation),
            web.get("/openapi.json", openapi_json),
            web.post("/endpoints/{name}/pause", pause_endpoint),
            web.post("/endpoints/{name}/resume", resume_endpoint),
            web.post("/endpoints/{name}/retry", retry_endpoint),
            web.post("/notifications/{id}/retry", retry_notification),
            web.post("/notifications/{id}/cancel", cancel_notification),
            web.post("/reload", reload_config),
            web.get("/audit", audit_log),
            web.get("/schema/event.json", event_schema),
        ]
    )
    app.add_subapp("/api", api)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.config_dict[appkeys.LIVE].settings
    token = settings.admin_token
    if token is None:
        return error(
            404,
            f"the admin API is off: set the environment variable {settings.server.admin_token_env} "
            "(named by server.admin_token_env) to a long random token and restart relay serve",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return error(401, "missing bearer token: send Authorization: Bearer <token>", {"WWW-Authenticate": REALM})
    if not hmac.compare_digest(given.strip().encode(), token.reveal().encode()):
        logger.warning("admin_auth_failed", path=request.path, remote=request.remote)
        return error(401, "invalid bearer token", {"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
    started = time.perf_counter()
    response = await _dispatch(request, handler)
    logger.info(
        "admin_request",
        method=request.method,
        path=request.path,
        status=response.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response


async def _dispatch(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except QueryError as exc:
        return error(exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except REDIS_ERRORS as exc:
        logger.warning("admin_redis_unavailable", path=request.path, error=type(exc).__name__)
        return error(503, f"Redis is unavailable ({type(exc).__name__}); retry later")
    except UnicodeError:
        return error(400, NOT_UTF8)
    except Exception:
        logger.exception("admin_api_error", path=request.path, method=request.method)
        return error(500, "internal error; see the relay's log")


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        return error(404, f"no API route {request.path} (see GET /api/openapi.json)")
    if exc.status == 405:
        allow = exc.headers.get("Allow", "")
        return error(
            405, f"method {request.method} is not allowed on {request.path} (allowed: {allow})", {"Allow": allow}
        )
    if exc.status == 413:
        return error(413, f"the request body is over the {request.client_max_size} byte limit")
    return error(exc.status, exc.reason)


# -- views ---------------------------------------------------------------------------------------


async def list_notifications(request: web.Request) -> web.Response:
    query = validate(ListQuery, _single_values(request))
    settings = request.config_dict[appkeys.LIVE].settings
    redis = request.config_dict[appkeys.REDIS]
    # a removed endpoint's name still selects its deliveries
    filters = queries.check_known(query.filters(), await endpoints.known_names(redis, settings))
    page = await queries.scan(
        request.config_dict[appkeys.REDIS],
        filters,
        limit=query.limit,
        endpoints=list(settings.endpoints),
        cursor=query.cursor,
    )
    items = redact_rows((row.summary() for row in page.items), settings)
    return web.json_response({"items": items, "next_cursor": page.next_cursor, "index": page.index})


async def show_notification(request: web.Request) -> web.Response:
    _no_query(request)
    doc = await detail.detail(request.config_dict[appkeys.REDIS], request.match_info["id"])
    return web.json_response(redact_notification(doc, request.config_dict[appkeys.LIVE].settings))


async def resend_one(request: web.Request) -> web.Response:
    _no_query(request)
    body = validate(ResendRequest, await _json_object(request), unknown="field")
    result = await request.config_dict[appkeys.RESENDER].one(
        request.match_info["id"],
        endpoint=body.endpoint,
        idempotency_key=_idempotency_key(request, body),
        origin=_origin(request),
    )
    return web.json_response(result, status=202)


async def resend_bulk(request: web.Request) -> web.Response:
    _no_query(request)
    body = validate(BulkRequest, await _json_object(request), unknown="field")
    if body.filter is not None:
        known = await endpoints.known_names(
            request.config_dict[appkeys.REDIS], request.config_dict[appkeys.LIVE].settings
        )
        queries.check_known(body.filter, known, prefix="filter.")
    result = await request.config_dict[appkeys.RESENDER].bulk(
        ids=body.ids,
        filters=body.filter,
        endpoint=body.endpoint,
        dry_run=body.dry_run,
        idempotency_key=_idempotency_key(request, body),
        origin=_origin(request),
    )
    return web.json_response(result, status=200 if body.dry_run else 202)


# -- operator control (relay/store/control.py): every action is audited as "api" with the caller -------


def _origin(request: web.Request) -> audit.Origin:
    return audit.Origin("api", request.remote)


def _control(request: web.Request) -> Control:
    return Control(request.config_dict[appkeys.REDIS], request.config_dict[appkeys.LIVE].settings)


def _endpoint_name(request: web.Request) -> str:
    try:
        return validate(EndpointPath, {"name": request.match_info["name"]}).name
    except BadParam:
        raise queries.NotFound(f"no endpoint {request.match_info['name']!r}") from None


async def pause_endpoint(request: web.Request) -> web.Response:
    await _no_input(request)
    return web.json_response(await _control(request).pause(_endpoint_name(request), _origin(request)))


async def resume_endpoint(request: web.Request) -> web.Response:
    await _no_input(request)
    return web.json_response(await _control(request).resume(_endpoint_name(request), _origin(request)))


async def retry_endpoint(request: web.Request) -> web.Response:
    """Every retrying delivery of the endpoint is due now (a serial endpoint: its head)."""
    await _no_input(request)
    return web.json_response(await _control(request).retry(_origin(request), endpoint=_endpoint_name(request)))


async def retry_notification(request: web.Request) -> web.Response:
    _no_query(request)
    body = validate(TargetRequest, await _json_object(request), unknown="field")
    nid = request.match_info["id"]
    return web.json_response(await _control(request).retry(_origin(request), nid=nid, endpoint=body.endpoint))


async def cancel_notification(request: web.Request) -> web.Response:
    _no_query(request)
    body = validate(TargetRequest, await _json_object(request), unknown="field")
    nid = request.match_info["id"]
    return web.json_response(await _control(request).cancel(nid, _origin(request), endpoint=body.endpoint))


async def reload_config(request: web.Request) -> web.Response:
    """Every live process re-reads its config; 200 if all reloaded, 409 if any refused or stayed silent."""
    await _no_input(request)
    result = await reload.request_reload(request.config_dict[appkeys.REDIS], _origin(request))
    return web.json_response(result, status=200 if result["ok"] else 409)


async def audit_log(request: web.Request) -> web.Response:
    query = validate(AuditQuery, _single_values(request))
    entries = await audit.read(request.config_dict[appkeys.REDIS], limit=query.limit, action=query.action)
    return web.json_response({"items": entries})


async def health(request: web.Request) -> web.StreamResponse:
    """``GET /api/health``: the report as JSON; the verdict is in ``status`` (the answer is always 200)."""
    _no_query(request)
    app = request.app
    redis = app[appkeys.REDIS]
    report = await health_report(redis, app[appkeys.LIVE].settings, await clock_ms(redis))
    return web.json_response(report)


async def reconciliation(request: web.Request) -> web.StreamResponse:
    """``GET /api/reconcile``: per reconciled source, the orders the last pass found missing and its error.

    What the workers found (relay/store/reconcile.py); it never calls 2Checkout itself (``relay reconcile`` does)."""
    _no_query(request)
    app = request.app
    states = await reconcile.read(app[appkeys.REDIS], app[appkeys.LIVE].settings)
    return web.json_response(reconcile.view(states))


async def openapi_json(request: web.Request) -> web.Response:
    _no_query(request)
    return web.json_response(openapi.document())


async def event_schema(request: web.Request) -> web.Response:
    """``GET /api/schema/event.json``: the JSON Schema of ``format = "event"`` documents, as in the repo."""
    _no_query(request)
    return web.Response(text=events.schema_text(), content_type="application/json")


# -- request parsing -----------------------------------------------------------------------------


def _no_query(request: web.Request) -> None:
    """A route that takes no query parameter refuses one, as the list refuses one it does not know:
    ignored, ``GET /api/reconcile?source=eu`` read as a filter applied that was not."""
    for name, value in request.query.items():
        raise BadParam(name, value, "unknown parameter (this route takes none)")


async def _no_input(request: web.Request) -> None:
    """No query parameter, and no body but an empty one or ``{}`` (``{"wait": 30}`` to /api/reload was
    ignored: the CLI's --wait is not the API's)."""
    _no_query(request)
    for name, value in (await _json_object(request)).items():
        raise BadParam(name, value, "unknown field (this route takes no body)")


def _single_values(request: web.Request) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query.items():
        if name in params:
            raise BadParam(name, value, "is given more than once")
        params[name] = value
    return params


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    return doc


def _idempotency_key(request: web.Request, body: ResendRequest | BulkRequest) -> str | None:
    header = request.headers.get("Idempotency-Key")
    given = body.idempotency_key
    if header is not None and given is not None and header != given:
        raise BadParam("idempotency_key", given, "differs from the Idempotency-Key header")
    return given if given is not None else check_idempotency_key(header)
