"""The admin API's OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Written by hand so the validation in ``relay/store/queries.py`` and this description stay reviewable
side by side; ``tests/test_api_fuzz.py`` holds the two together.
"""

from __future__ import annotations

from typing import Any

from config.event_types import EVENT_TYPES
from relay import __version__
from relay import constants as k
from relay.store.queries import DEFAULT_LIMIT, MAX_LIMIT, NAME, NID
from relay.store.resend import IDEMPOTENCY_KEY, MAX_IDS

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(type_: str) -> Schema:
    return {"type": [type_, "null"]}


TIME: Schema = {
    "description": "ISO-8601 time (a time without an offset is UTC) or epoch milliseconds",
    "anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "pattern": r"^[0-9]{1,15}$"}],
}
NAME_SCHEMA: Schema = {"type": "string", "pattern": NAME.pattern}
CHANNEL: Schema = {"type": "string", "enum": ["ipn", "lcn", "ins"]}
STATE: Schema = {"type": "string", "enum": list(k.STATES)}
REF: Schema = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[^\x00-\x1f\x7f]+$"}
IDEM: Schema = {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern}

FILTER_DOCS = {
    "channel": ("the 2Checkout channel", CHANNEL),
    "source": ("the configured source the notification arrived on", NAME_SCHEMA),
    "state": ("a delivery state; with endpoint, that endpoint's delivery, else any delivery", STATE),
    "endpoint": ("routed to this endpoint (with state: its delivery is in that state)", NAME_SCHEMA),
    "since": ("received at or after", TIME),
    "until": ("received at or before", TIME),
    "ref": ("REFNO (IPN), LICENSE_CODE (LCN) or sale_id (INS)", REF),
    "type": ("the event type (docs/events.md)", {"type": "string", "enum": list(EVENT_TYPES)}),
}


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


UNAUTHORIZED: Schema = {
    **_error("no or wrong bearer token"),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
}
COMMON: dict[str, Schema] = {
    "401": UNAUTHORIZED,
    "404": _error("the admin API is off (no token configured), or the resource does not exist"),
    "503": _error("Redis is unavailable"),
}


def _ok(status: str, description: str, schema: str) -> dict[str, Schema]:
    return {status: {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


ID_PARAM: Schema = {
    "name": "id", "in": "path", "required": True, "description": "notification id",
    "schema": {"type": "string", "pattern": NID.pattern},
}
IDEM_HEADER: Schema = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "same as the body's idempotency_key", "schema": IDEM,
}

DELIVERY_SUMMARY: Schema = {
    "type": "object",
    "required": ["state", "attempts", "last", "updated_at", "next_at"],
    "properties": {
        "state": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 0},
        "last": _nullable("string"),
        "updated_at": _nullable("string"),
        "next_at": _nullable("string"),
    },
}
SUMMARY_PROPS: Schema = {
    "id": {"type": "string"},
    "channel": {"type": "string"},
    "source": {"type": "string"},
    "received_at": _nullable("string"),
    "ref": {"type": "string"},
    "status": {"type": "string"},
    "mtype": {"type": "string"},
    "type": {"type": "string", "description": "the event type (docs/events.md); empty if stored before types"},
    "test": {"type": "boolean"},
    "resend_of": _nullable("string"),
    "targets": {"type": ["array", "null"], "items": {"type": "string"}},
}
SUMMARY: Schema = {
    "type": "object",
    "required": [*SUMMARY_PROPS, "deliveries"],
    "properties": {**SUMMARY_PROPS,
                   "deliveries": {"type": "object", "additionalProperties": _ref("DeliverySummary")}},
}
DELIVERY: Schema = {
    "type": "object",
    "description": "every field of relay:d:{id}:{endpoint} (times as ISO-8601) and its attempts",
    "required": ["attempt_log"],
    "properties": {
        "state": {"type": "string"},
        "attempts": {"type": ["integer", "string"]},
        "attempt_log": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
DETAIL: Schema = {
    "type": "object",
    "required": [*SUMMARY_PROPS, "seq", "message_id", "license", "email", "algo", "content_type", "routed",
                 "fields", "body", "deliveries", "resends"],
    "properties": {
        **SUMMARY_PROPS,
        "seq": _nullable("integer"),
        "message_id": {"type": "string"},
        "license": {"type": "string"},
        "email": {"type": "string"},
        "algo": {"type": "string"},
        "content_type": {"type": "string"},
        "routed": {"type": "boolean"},
        "fields": {"type": ["object", "null"], "additionalProperties": {"type": "array",
                                                                          "items": {"type": "string"}}},
        "body": {"type": "string"},
        "body_error": {"type": "string"},
        "deliveries": {"type": "object", "additionalProperties": _ref("Delivery")},
        "resends": {"type": "array", "items": _ref("NotificationSummary")},
    },
}
# in a JSON body a time may also be a number of epoch milliseconds
BODY_TIME: Schema = {"anyOf": [*TIME["anyOf"], {"type": "integer", "minimum": 0, "maximum": 10**15 - 1}]}
FILTER: Schema = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {name: {**(BODY_TIME if name in ("since", "until") else schema), "description": text}
                   for name, (text, schema) in FILTER_DOCS.items()},
}
RESENT: Schema = {
    "type": "object",
    "required": ["id", "resend_of", "targets"],
    "properties": {
        "id": {"type": "string"},
        "resend_of": {"type": "string"},
        "targets": {"type": "array", "items": {"type": "string"}},
        "replayed": {"type": "boolean"},
    },
}
BULK_RESULT: Schema = {
    "type": "object",
    "required": ["dry_run", "count", "ids", "resends", "skipped_count", "skipped"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 0},
        "ids": {"type": "array", "items": {"type": "string"}},
        "resends": {"type": "array", "items": _ref("Resent")},
        "skipped_count": {"type": "integer", "minimum": 0},
        "skipped": {"type": "array", "items": {
            "type": "object", "required": ["id", "reason"],
            "properties": {"id": {"type": "string"}, "reason": {"type": "string"}}}},
        "replayed": {"type": "boolean"},
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each call)."""
    list_params = [_query(name, text, schema) for name, (text, schema) in FILTER_DOCS.items()]
    list_params += [
        _query("limit", f"page size (default {DEFAULT_LIMIT})",
               {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
        _query("cursor", "next_cursor of the previous page (same filters)", {"type": "string", "minLength": 1}),
    ]
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
            "/api/notifications": {"get": {
                "operationId": "listNotifications",
                "summary": "List notifications, newest first",
                "description": "Filters combine with AND. A page may be short, even empty, and still carry a "
                               "next_cursor when many candidates did not match: keep following next_cursor "
                               "until it is null. With endpoint and state the order is by the delivery's last "
                               "change; otherwise by receipt.",
                "parameters": list_params,
                "responses": {**_ok("200", "a page of notifications", "NotificationPage"),
                              "400": _error("a bad parameter, named in the error"), **COMMON},
            }},
            "/api/notifications/{id}": {"get": {
                "operationId": "getNotification",
                "summary": "One notification: parsed fields, raw body, deliveries, attempts and resends",
                "parameters": [ID_PARAM],
                "responses": {**_ok("200", "the notification", "Notification"), **COMMON},
            }},
            "/api/notifications/{id}/resend": {"post": {
                "operationId": "resendNotification",
                "summary": "Queue a resend of the original body (a resend id resends its original)",
                "parameters": [ID_PARAM, IDEM_HEADER],
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("ResendRequest")}}},
                "responses": {**_ok("202", "the resend is queued", "Resent"),
                              "400": _error("a bad body field, named in the error"),
                              "409": _error("no endpoint receives it, or the idempotency key was used "
                                            "for another request"),
                              "413": _error("the body is too large"), **COMMON},
            }},
            "/api/resend": {"post": {
                "operationId": "bulkResend",
                "summary": "Resend many notifications, by ids or by filter; each original at most once",
                "parameters": [IDEM_HEADER],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("BulkRequest")}}},
                "responses": {**_ok("200", "dry run: how many would be resent", "BulkResult"),
                              **_ok("202", "the resends are queued", "BulkResult"),
                              "400": _error("a bad body field, named in the error"),
                              "409": _error("the idempotency key was used for another request"),
                              "413": _error("the body is too large"),
                              "422": _error("the filter selects too many notifications"), **COMMON},
            }},
            "/api/health": {"get": {
                "operationId": "health",
                "summary": "Delivery health: endpoints, queues, workers",
                "responses": {
                    "200": {"description": "healthy", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "501": _error("this build has no health view"),
                    **COMMON,
                    "503": {"description": "unhealthy, or Redis is unavailable",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                },
            }},
            "/api/schema/event.json": {"get": {
                "operationId": "eventSchema",
                "summary": "The JSON Schema of the typed event document (format = \"event\", docs/events.md)",
                "responses": {"200": {"description": "JSON Schema draft 2020-12",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **COMMON},
            }},
            "/api/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **COMMON},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "DeliverySummary": DELIVERY_SUMMARY,
                "NotificationSummary": SUMMARY,
                "NotificationPage": {
                    "type": "object", "required": ["items", "next_cursor"],
                    "properties": {"items": {"type": "array", "items": _ref("NotificationSummary")},
                                   "next_cursor": _nullable("string"),
                                   "index": {"type": "string"}},
                },
                "Delivery": DELIVERY,
                "Notification": DETAIL,
                "ResendRequest": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "endpoint": {**NAME_SCHEMA, "description": "only this endpoint (default: every "
                                                                   "endpoint that receives it now)"},
                        "idempotency_key": {**IDEM, "description": "a retry with the same key is answered "
                                                                   "from the first, for 24 hours"},
                    },
                },
                "Filter": FILTER,
                "BulkRequest": {
                    "type": "object", "additionalProperties": False,
                    "oneOf": [{"required": ["ids"]}, {"required": ["filter"]}],
                    "properties": {
                        "ids": {"type": "array", "minItems": 1, "maxItems": MAX_IDS,
                                "items": {"type": "string"}},
                        "filter": _ref("Filter"),
                        "endpoint": {**NAME_SCHEMA, "description": "resend to this endpoint only (default: "
                                                                   "filter.endpoint, else every endpoint "
                                                                   "that receives it now)"},
                        "dry_run": {"type": "boolean", "description": "count only, queue nothing"},
                        "idempotency_key": IDEM,
                    },
                },
                "Resent": RESENT,
                "BulkResult": BULK_RESULT,
            },
        },
    }
