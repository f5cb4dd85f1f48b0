"""The admin API's request parameters and bodies as pydantic models: the one definition of their rules.

The API validates every request with these models, ``relay/admin/openapi.py`` generates the OpenAPI
document's parameters and request bodies from their JSON schema, and the CLI and the dashboard parse
their filters through the same ``Filters`` (via ``relay/store/queries.py``), so a pattern, an enum or a
bound is written once and the document cannot drift from the behaviour.

A rule that pydantic's constraints cannot say (a time in two notations, "until is not before since")
is a validator that raises ``PydanticCustomError("bad_param", reason)``; a constraint's own failure is
worded by the ``Reason`` in the field's metadata. ``relay.store.queries.validate`` turns either into
``BadParam`` ("invalid limit='501': expected an integer from 1 to 500").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from config.event_types import EVENT_TYPES
from config.settings import CHANNELS, NAME_PATTERN, Channel
from relay import constants as k

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_IDS = 1000
MAX_EPOCH_MS = 10**15 - 1
NID_PATTERN = r"^(ipn|lcn|ins)_[0-9a-f]{24}(~r[0-9]{1,9})?$"
REF_PATTERN = r"^[^\x00-\x1f\x7f]{1,128}$"
EPOCH_MS_PATTERN = r"^[0-9]{1,15}$"
# the ISO-8601 forms relay reads: a date, or a date and a time (seconds, fraction and offset optional;
# no offset means UTC). Whether the date exists (no February 30th) is checked when it is read.
ISO_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?)?$"
)
IDEMPOTENCY_KEY_PATTERN = r"^[A-Za-z0-9._:~-]{1,128}$"
# compiled for callers outside pydantic; match with fullmatch, as pydantic and JSON Schema do
# (Python's "$" also matches before a trailing newline)
NAME = re.compile(NAME_PATTERN)
NID = re.compile(NID_PATTERN)
EPOCH_MS = re.compile(EPOCH_MS_PATTERN)
ISO_TIME = re.compile(ISO_TIME_PATTERN)
BAD_PARAM = "bad_param"


@dataclass(frozen=True)
class Reason:
    """How a field's constraint failure reads in the error: ``invalid <name>=<value>: <reason>``."""

    text: str


def bad(reason: str) -> PydanticCustomError:
    """A validation error whose message is ``reason`` as it is (the field and value are added around it)."""
    return PydanticCustomError(BAD_PARAM, reason)  # a literal template: reasons hold no "{...}"


def to_ms(value: object) -> int:
    """ISO-8601 (naive means UTC) or epoch milliseconds, to epoch milliseconds."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 1714564800000.0 is an integer too
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MS:
        return value
    if not isinstance(value, str):
        raise bad("expected an ISO-8601 time or epoch milliseconds")
    if EPOCH_MS.fullmatch(value):
        return int(value)
    if not ISO_TIME.fullmatch(value):
        raise bad("expected an ISO-8601 time (2024-05-01T12:00:00Z) or epoch milliseconds")
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise bad(f"no such date or time ({exc})") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return max(0, int(when.timestamp() * 1000))
    except (OverflowError, OSError, ValueError):
        raise bad("time is out of range") from None


def _digits(value: object) -> object:
    # a query string carries an integer as its digits; pydantic alone would also take "+5", " 5" or "5_0"
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise bad(f"expected an integer from 1 to {MAX_LIMIT}")
    return value


def _member_of(values: tuple[str, ...]) -> Any:
    def check(value: str) -> str:
        if value not in values:
            raise bad(f"expected one of {', '.join(values)}")
        return value

    return AfterValidator(check)


# -- the types, each with its rule and its JSON schema -----------------------------------------------

Name = Annotated[str, Field(pattern=NAME_PATTERN), Reason("expected a name of lowercase letters, digits, '_' and '-'")]
ChannelName = Annotated[Channel, Reason(f"expected one of {', '.join(CHANNELS)}")]
State = Annotated[
    str,
    _member_of(k.STATES),
    Field(json_schema_extra={"enum": list(k.STATES)}),
    Reason(f"expected one of {', '.join(k.STATES)}"),
]
Ref = Annotated[str, Field(pattern=REF_PATTERN), Reason("expected 1 to 128 printable characters")]
Time = Annotated[
    int,
    BeforeValidator(to_ms),
    WithJsonSchema(
        {
            "description": "ISO-8601 time (a time without an offset is UTC) or epoch milliseconds",
            "anyOf": [
                {"type": "string", "pattern": ISO_TIME_PATTERN},
                {"type": "string", "pattern": EPOCH_MS_PATTERN},
                {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS},
            ],
        }
    ),
]
# the bounds before the validator, so pydantic writes them as JSON Schema's minimum and maximum
Limit = Annotated[
    int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_digits), Reason(f"expected an integer from 1 to {MAX_LIMIT}")
]
CursorText = Annotated[str, Field(min_length=1), Reason("is empty; omit it for the first page")]
IdempotencyKey = Annotated[
    str, Field(pattern=IDEMPOTENCY_KEY_PATTERN), Reason("expected 1 to 128 of A-Z a-z 0-9 . _ : ~ -")
]
Ids = Annotated[
    list[StrictStr],
    Field(min_length=1, max_length=MAX_IDS),
    Reason(f"expected a list of notification ids, at most {MAX_IDS} per request"),
]
EventType = Annotated[
    str,
    _member_of(EVENT_TYPES),
    Field(json_schema_extra={"enum": list(EVENT_TYPES)}),
    Reason(f"expected one of {', '.join(EVENT_TYPES)}"),
]
DryRun = Annotated[StrictBool, Reason("expected true or false")]


def _flag(value: object, info: ValidationInfo) -> object:
    # a query string says "true" or "false" (validate(..., unknown="parameter") marks text input);
    # pydantic's lax bool would also take "0", "yes", "off"..., which the document (type boolean)
    # does not promise, and a JSON body says true or false itself
    if isinstance(value, str) and info.context and info.context.get("text") and value in ("true", "false"):
        return value == "true"
    return value


Flag = Annotated[StrictBool, BeforeValidator(_flag), Reason("expected true or false")]


# -- the models ----------------------------------------------------------------------------------------


class Filters(BaseModel):
    """Which notifications a listing or a bulk resend selects; every filter combines with AND."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: ChannelName | None = Field(None, description="the 2Checkout channel")
    source: Name | None = Field(None, description="the configured source the notification arrived on")
    state: State | None = Field(
        None, description="a delivery state; with endpoint, that endpoint's delivery, else any delivery"
    )
    endpoint: Name | None = Field(
        None, description="routed to this endpoint (with state: its delivery is in that state)"
    )
    since: Time | None = Field(None, description="received at or after")
    until: Time | None = Field(None, description="received at or before")
    ref: Ref | None = Field(None, description="REFNO (IPN), LICENSE_CODE (LCN) or sale_id (INS)")
    type: EventType | None = Field(None, description="the event type (docs/events.md)")
    include_resolved: Flag = Field(
        False, description="with state=failed: also the failures a delivered resend resolved (default false)"
    )

    @field_validator("until")
    @classmethod
    def _not_before_since(cls, until: int | None, info: ValidationInfo) -> int | None:
        since = info.data.get("since")
        if until is not None and since is not None and since > until:
            raise bad("is before since")
        return until

    @property
    def empty(self) -> bool:
        return all(v is None for name, v in self.model_dump().items() if name != "include_resolved")

    def fingerprint(self) -> str:
        blob = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.blake2b(blob, digest_size=6).hexdigest()


FILTER_NAMES = tuple(Filters.model_fields)


class ListQuery(Filters):
    """``GET /api/notifications``: the filters, and the page."""

    limit: Limit = Field(DEFAULT_LIMIT, description=f"page size (default {DEFAULT_LIMIT})")
    cursor: CursorText | None = Field(None, description="next_cursor of the previous page (same filters)")

    def filters(self) -> Filters:
        return Filters.model_construct(**{name: getattr(self, name) for name in FILTER_NAMES})


# include_resolved only widens state=failed, so a filter of it alone selects nothing
SELECTING_FILTERS = tuple(name for name in FILTER_NAMES if name != "include_resolved")


def _not_empty(filters: Filters) -> Filters:
    if filters.empty:
        raise bad(f"is empty: name at least one of {', '.join(SELECTING_FILTERS)}")
    return filters


class ResendRequest(BaseModel):
    """``POST /api/notifications/{id}/resend``: the optional body."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Name | None = Field(None, description="only this endpoint (default: every endpoint that receives it now)")
    idempotency_key: IdempotencyKey | None = Field(
        None, description="a retry with the same key is answered from the first, for 24 hours"
    )


class BulkRequest(BaseModel):
    """``POST /api/resend``: exactly one of ids or filter."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["ids"]}, {"required": ["filter"]}]}
    )

    ids: Ids | None = Field(None, description="the notifications to resend; each original at most once")
    filter: Annotated[Filters, AfterValidator(_not_empty), Reason("expected an object of filters")] | None = Field(
        None, description="select by the listing's filters (at least one)", json_schema_extra={"minProperties": 1}
    )
    endpoint: Name | None = Field(
        None,
        description="resend to this endpoint only (default: filter.endpoint, else every endpoint that receives it now)",
    )
    dry_run: DryRun = Field(False, description="count only, queue nothing")
    idempotency_key: IdempotencyKey | None = Field(
        None, description="a retry with the same key is answered from the first, for 24 hours"
    )

    @model_validator(mode="after")
    def _ids_or_filter(self) -> BulkRequest:
        if (self.ids is None) == (self.filter is None):
            raise bad("give either ids or filter, not both or neither")
        return self


class NotificationPath(BaseModel):
    """The ``{id}`` in ``/api/notifications/{id}``: a malformed id is simply not found (404)."""

    id: Annotated[str, Field(pattern=NID_PATTERN, description="notification id")]


# -- operator control (relay/store/control.py, relay/store/audit.py) ---------------------------------


class EndpointPath(BaseModel):
    """The ``{name}`` in ``/api/endpoints/{name}/...``: an unknown endpoint is not found (404)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, description="a configured endpoint")]


class TargetRequest(BaseModel):
    """``POST /api/notifications/{id}/retry`` and ``/cancel``: the optional body."""

    model_config = ConfigDict(extra="forbid")

    endpoint: Name | None = Field(
        None,
        description="only this endpoint's delivery (default: each of the "
        "notification's deliveries the action applies to)",
    )


AUDIT_ACTIONS = ("pause", "resume", "retry", "cancel", "resend", "reload")
AUDIT_MAX = 1000
AuditLimit = Annotated[
    int, Field(ge=1, le=AUDIT_MAX), BeforeValidator(_digits), Reason(f"expected an integer from 1 to {AUDIT_MAX}")
]
AuditAction = Annotated[
    str,
    _member_of(AUDIT_ACTIONS),
    Field(json_schema_extra={"enum": list(AUDIT_ACTIONS)}),
    Reason(f"expected one of {', '.join(AUDIT_ACTIONS)}"),
]


class AuditQuery(BaseModel):
    """``GET /api/audit``: newest first."""

    model_config = ConfigDict(extra="forbid")

    limit: AuditLimit = Field(50, description="at most this many entries (default 50)")
    action: AuditAction | None = Field(None, description="only this action")
