"""The admin API's OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Parameters and request bodies are generated from the pydantic models in ``relay/store/params.py``
(their JSON schema), the same models that validate every request, so the document states exactly the
rules the API enforces; ``tests/test_api_schema.py`` and the schemathesis fuzz in
``tests/test_api_fuzz.py`` check it. The answers' schemas are written here by hand.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relay import __version__
from relay.admin.answers import (
    ANSWERS,
    ANY_OBJECT,
    COMMON,
    REF_TEMPLATE,
    Schema,
    error_answer,
    not_null,
    ok_answer,
    ref,
)
from relay.store.params import (
    AuditQuery,
    BulkRequest,
    EndpointPath,
    ListQuery,
    NotificationPath,
    ResendRequest,
    TargetRequest,
)


def parameters(
    model: type[BaseModel], where: str, *, only: tuple[str, ...] | None = None, names: dict[str, str] | None = None
) -> list[Schema]:
    """``model``'s fields as OpenAPI parameters ``in`` query, path or header (``names`` renames them)."""
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        if only is not None and name not in only:
            continue
        param = not_null(prop)
        out.append(
            {
                "name": (names or {}).get(name, name),
                "in": where,
                "required": name in required,
                "description": param.pop("description", ""),
                "schema": param,
            }
        )
    return out


def body_schemas() -> dict[str, Schema]:
    """The request bodies' schemas and every model they refer to, for ``components.schemas``."""
    _, doc = models_json_schema(
        [(ResendRequest, "validation"), (BulkRequest, "validation"), (TargetRequest, "validation")],
        ref_template=REF_TEMPLATE,
    )
    return dict(doc.get("$defs", {}))


def _body(model: type[BaseModel], *, required: bool) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": ref(model.__name__)}}}


def id_param() -> list[Schema]:
    return parameters(NotificationPath, "path")


def idem_header() -> list[Schema]:
    return parameters(ResendRequest, "header", only=("idempotency_key",), names={"idempotency_key": "Idempotency-Key"})


# -- answers, by hand ------------------------------------------------------------------------------


def list_notifications() -> Schema:
    return {
        "get": {
            "operationId": "listNotifications",
            "summary": "List notifications, newest first",
            "description": "Filters combine with AND. A page may be short, even empty, and still carry a "
            "next_cursor when many candidates did not match: keep following next_cursor "
            "until it is null. With endpoint and state the order is by the delivery's last "
            "change; otherwise by receipt.",
            "parameters": parameters(ListQuery, "query"),
            "responses": {
                **ok_answer("200", "a page of notifications", "NotificationPage"),
                "400": error_answer("a bad parameter, named in the error"),
                **COMMON,
            },
        }
    }


def get_notification() -> Schema:
    return {
        "get": {
            "operationId": "getNotification",
            "summary": "One notification: parsed fields, raw body, deliveries, attempts and resends",
            "parameters": id_param(),
            "responses": {**ok_answer("200", "the notification", "Notification"), **COMMON},
        }
    }


def resend_notification() -> Schema:
    return {
        "post": {
            "operationId": "resendNotification",
            "summary": "Queue a resend of the original body (a resend id resends its original)",
            "parameters": [*id_param(), *idem_header()],
            "requestBody": _body(ResendRequest, required=False),
            "responses": {
                **ok_answer("202", "the resend is queued", "Resent"),
                "400": error_answer("a bad body field, named in the error"),
                "409": error_answer("no endpoint receives it, or the idempotency key was used for another request"),
                "413": error_answer("the body is too large"),
                **COMMON,
            },
        }
    }


def bulk_resend() -> Schema:
    return {
        "post": {
            "operationId": "bulkResend",
            "summary": "Resend many notifications, by ids or by filter; each original at most once",
            "parameters": idem_header(),
            "requestBody": _body(BulkRequest, required=True),
            "responses": {
                **ok_answer("200", "dry run: how many would be resent", "BulkResult"),
                **ok_answer("202", "the resends are queued", "BulkResult"),
                "400": error_answer("a bad body field, named in the error"),
                "409": error_answer("the idempotency key was used for another request"),
                "413": error_answer("the body is too large"),
                "422": error_answer("the filter selects too many notifications"),
                **COMMON,
            },
        }
    }


def health() -> Schema:
    return {
        "get": {
            "operationId": "health",
            "summary": "The evaluation of health: status, problems, the figures per endpoint and source",
            # always 200 whatever the verdict (it is in ``status``); 503 only when Redis does not answer
            "responses": {
                "200": {
                    "description": "the evaluation; healthy, degraded or unhealthy in status",
                    "content": ANY_OBJECT,
                },
                **COMMON,
            },
        }
    }


def reconcile() -> Schema:
    return {
        "get": {
            "operationId": "reconcile",
            "summary": "Orders in 2Checkout's order list whose IPN never reached the relay, per reconciled source "
            "(the last pass's result: {sources: [{source, missing: [{reference, status, first_seen}], "
            "error}]})",
            "responses": {
                "200": {
                    "description": "per source with [sources.reconcile]: only its missing orders, and "
                    "error (null, or why the last pass could not read the API)",
                    "content": ANY_OBJECT,
                },
                **COMMON,
            },
        }
    }


def event_schema() -> Schema:
    return {
        "get": {
            "operationId": "eventSchema",
            "summary": 'The JSON Schema of the typed event document (format = "event", docs/events.md)',
            "responses": {"200": {"description": "JSON Schema draft 2020-12", "content": ANY_OBJECT}, **COMMON},
        }
    }


def endpoint_action(operation: str, summary: str) -> Schema:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "parameters": parameters(EndpointPath, "path"),
            "responses": {
                "200": {"description": "done; count says how many deliveries it touched", "content": ANY_OBJECT},
                "409": error_answer("refused: paused, or not paused"),
                **COMMON,
            },
        }
    }


def notification_action(operation: str, summary: str) -> Schema:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "parameters": id_param(),
            "requestBody": _body(TargetRequest, required=False),
            "responses": {
                "200": {"description": "done; count says how many deliveries it touched", "content": ANY_OBJECT},
                "400": error_answer("a bad body field, named in the error"),
                "409": error_answer("refused: in flight, finished, not retrying, or the endpoint is paused"),
                "413": error_answer("the body is too large"),
                **COMMON,
            },
        }
    }


def reload_action() -> Schema:
    return {
        "post": {
            "operationId": "reload",
            "summary": "Ask every running relay process to re-read its config file; each answers with its config hash",
            "responses": {
                "200": {"description": "every process that received it reloaded", "content": ANY_OBJECT},
                "409": {"description": "a process refused (invalid config) or did not answer", "content": ANY_OBJECT},
                **COMMON,
            },
        }
    }


def audit_log() -> Schema:
    return {
        "get": {
            "operationId": "audit",
            "summary": "The audit log of operator actions, newest first",
            "parameters": parameters(AuditQuery, "query"),
            "responses": {
                "200": {"description": "the entries", "content": ANY_OBJECT},
                "400": error_answer("a bad parameter, named in the error"),
                **COMMON,
            },
        }
    }


def openapi() -> Schema:
    return {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": ANY_OBJECT}, **COMMON},
        }
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call)."""
    doc = _document()
    # every route refuses a query parameter (and a POST a body field) it does not take, naming it
    for ops in doc["paths"].values():
        for op in ops.values():
            op["responses"].setdefault("400", error_answer("a parameter or body field it does not take, named"))
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "relay admin API",
            "version": __version__,
            "description": "Inspect 2Checkout notifications and their deliveries, and resend them. "
            "Every route needs Authorization: Bearer <token>, the value of the environment "
            "variable named by server.admin_token_env; without it the API is off (404).",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/notifications": list_notifications(),
            "/api/notifications/{id}": get_notification(),
            "/api/notifications/{id}/resend": resend_notification(),
            "/api/resend": bulk_resend(),
            "/api/health": health(),
            "/api/reconcile": reconcile(),
            "/api/schema/event.json": event_schema(),
            "/api/openapi.json": openapi(),
            "/api/endpoints/{name}/pause": endpoint_action(
                "pauseEndpoint", "Pause an endpoint: its waiting deliveries wait as paused, no attempts are made"
            ),
            "/api/endpoints/{name}/resume": endpoint_action(
                "resumeEndpoint", "Resume a paused endpoint (serial: in receipt order)"
            ),
            "/api/endpoints/{name}/retry": endpoint_action(
                "retryEndpoint", "Retry now every retrying delivery of the endpoint (serial: its head)"
            ),
            "/api/notifications/{id}/retry": notification_action(
                "retryNotification", "Retry now a retrying delivery of the notification"
            ),
            "/api/notifications/{id}/cancel": notification_action(
                "cancelNotification", "Cancel a waiting delivery of the notification"
            ),
            "/api/reload": reload_action(),
            "/api/audit": audit_log(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**ANSWERS, **body_schemas()},
        },
    }
