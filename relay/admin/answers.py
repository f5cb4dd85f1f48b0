"""The admin API's answers, as its OpenAPI document states them (relay/admin/openapi.py).

Requests are generated from the pydantic models that validate them; answers are written here by hand,
each record closed (``additionalProperties: false``) so ``tests/test_api_schema.py`` can check that an
answer never carries an undocumented field.
"""

from __future__ import annotations

from typing import Any

from relay.store.detail import ATTEMPT_FIELDS, DELIVERY_FIELDS

Schema = dict[str, Any]
REF_TEMPLATE = "#/components/schemas/{model}"
NULL: Schema = {"type": "null"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(type_: str) -> Schema:
    return {"type": [type_, "null"]}


# -- parameters and request bodies, from the models ----------------------------------------------


def not_null(schema: Schema) -> Schema:
    """A parameter's schema without the model's null branch: a query string or a header carries no null."""
    out = {key: value for key, value in schema.items() if key not in ("title", "default")}
    branches = [b for b in out.pop("anyOf", []) if b != NULL]
    if len(branches) == 1:
        out = {**branches[0], **out}  # the field's own description over its type's
    elif branches:
        out["anyOf"] = branches
    return out


def error_answer(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


UNAUTHORIZED: Schema = {
    **error_answer("no or wrong bearer token"),
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
}
COMMON: dict[str, Schema] = {
    "401": UNAUTHORIZED,
    "404": error_answer("the admin API is off (no token configured), or the resource does not exist"),
    "503": error_answer("Redis is unavailable"),
}


def ok_answer(status: str, description: str, schema: str) -> dict[str, Schema]:
    return {status: {"description": description, "content": {"application/json": {"schema": ref(schema)}}}}


DELIVERY_SUMMARY: Schema = {
    "type": "object",
    "required": ["state", "attempts", "last", "updated_at", "next_at"],
    "properties": {
        "state": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 0},
        "last": nullable("string"),
        "updated_at": nullable("string"),
        "next_at": nullable("string"),
        "resolved_by": nullable("string"),
        "resolved_at": nullable("string"),
    },
    "additionalProperties": False,
}
SUMMARY_PROPS: Schema = {
    "id": {"type": "string"},
    "channel": {"type": "string"},
    "source": {"type": "string"},
    "received_at": nullable("string"),
    "ref": {"type": "string"},
    "status": {"type": "string"},
    "mtype": {"type": "string"},
    "type": {"type": "string", "description": "the event type (docs/events.md); empty if stored before types"},
    "test": {"type": "boolean"},
    "resend_of": nullable("string"),
    "targets": {"type": ["array", "null"], "items": {"type": "string"}},
}
SUMMARY: Schema = {
    "type": "object",
    "required": [*SUMMARY_PROPS, "deliveries"],
    "properties": {**SUMMARY_PROPS, "deliveries": {"type": "object", "additionalProperties": ref("DeliverySummary")}},
    "additionalProperties": False,
}
_DELIVERY_TYPES: dict[str, Schema] = {
    "state": {"type": "string"},
    "attempts": {"type": "integer", "minimum": 0},
    "attempt_log": {"type": "array", "items": ref("Attempt")},
}
DELIVERY: Schema = {
    "type": "object",
    "description": "one endpoint's delivery of the notification: these fields and no others, times as ISO 8601 UTC",
    "required": list(DELIVERY_FIELDS),
    "properties": {
        name: {**_DELIVERY_TYPES.get(name, nullable("string")), "description": text}
        for name, text in DELIVERY_FIELDS.items()
    },
    "additionalProperties": False,
}
_ATTEMPT_TYPES: dict[str, Schema] = {
    "n": nullable("integer"),
    "ms": nullable("number"),
    "outcome": nullable("string"),
    "status": nullable("integer"),
    "response": nullable("string"),
    "resend": {"type": "boolean"},
}
ATTEMPT: Schema = {
    "type": "object",
    "description": "one attempt of a delivery, times as ISO 8601 UTC",
    "required": list(ATTEMPT_FIELDS),
    "properties": {
        name: {**_ATTEMPT_TYPES.get(name, nullable("string")), "description": text}
        for name, text in ATTEMPT_FIELDS.items()
    },
    "additionalProperties": False,
}
DETAIL: Schema = {
    "type": "object",
    "required": [
        *SUMMARY_PROPS,
        "seq",
        "message_id",
        "license",
        "email",
        "algo",
        "content_type",
        "routed",
        "fields",
        "body",
        "deliveries",
        "resends",
    ],
    "properties": {
        **SUMMARY_PROPS,
        "seq": nullable("integer"),
        "message_id": {"type": "string"},
        "license": {"type": "string"},
        "email": {"type": "string"},
        "algo": {"type": "string"},
        "content_type": {"type": "string"},
        "routed": {"type": "boolean"},
        "fields": {"type": ["object", "null"], "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "body": {"type": "string"},
        "body_error": {"type": "string"},
        "deliveries": {"type": "object", "additionalProperties": ref("Delivery")},
        "resends": {"type": "array", "items": ref("NotificationSummary")},
    },
    "additionalProperties": False,
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
        "resends": {"type": "array", "items": ref("Resent")},
        "skipped_count": {"type": "integer", "minimum": 0},
        "skipped": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "reason"],
                "properties": {"id": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
        "replayed": {"type": "boolean"},
    },
}


ANY_OBJECT: Schema = {"application/json": {"schema": {"type": "object"}}}
NOTIFICATION_PAGE: Schema = {
    "type": "object",
    "required": ["items", "next_cursor"],
    "properties": {
        "items": {"type": "array", "items": ref("NotificationSummary")},
        "next_cursor": nullable("string"),
        "index": {"type": "string"},
    },
}
ANSWERS: dict[str, Schema] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "DeliverySummary": DELIVERY_SUMMARY,
    "NotificationSummary": SUMMARY,
    "NotificationPage": NOTIFICATION_PAGE,
    "Delivery": DELIVERY,
    "Attempt": ATTEMPT,
    "Notification": DETAIL,
    "Resent": RESENT,
    "BulkResult": BULK_RESULT,
}


# -- the operations --------------------------------------------------------------------------------
