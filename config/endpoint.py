"""``[[endpoints]]``: one internal system the relay delivers to.

Each key is written once. A key the processes use as the file says it (``url``, ``timeout``,
``rate_limit`` ...) is a field of `EndpointFields`, which both the file's schema (`EndpointConfig`)
and the runtime object (`Endpoint`) inherit; a new option of that kind is one line there. Only a key
whose runtime form differs from its written form is declared in both subclasses: a list read as a set,
an environment variable's name resolved to its `Secret`, ``mode``/``concurrent`` resolved to one
mode, ``match`` compiled.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from config.event_types import EVENT_TYPES
from config.match import Rule, compile_match
from config.modes import Mode, check_rate
from config.modes import resolve as resolve_mode
from config.secrets import Secret, SecretReader
from config.sections import CHANNELS, Channel, EnvName, Model, Name
from config.wording import item


class EndpointFields(Model):
    """The keys the processes read exactly as the file writes them."""

    name: Name
    url: str = Field(pattern=r"^https?://[^\s/?#]+[^\s]*$")
    # requests per second across all workers (fractions allowed); rate_burst: how many may start at once
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    max_in_flight: int = Field(10, ge=1, le=1000)
    timeout: float = Field(10.0, gt=0, le=300)
    format: Literal["form", "json", "event"] = "form"
    test_orders: bool | None = None
    # per-endpoint overrides of [alerts] threshold_percent, min_deliveries and window_hours
    alert_threshold_percent: float | None = Field(None, ge=0, lt=100)
    alert_min_deliveries: int | None = Field(None, ge=1)
    alert_window_hours: float | None = Field(None, gt=0, le=24)


class EndpointConfig(EndpointFields):
    """An ``[[endpoints]]`` table as written: validated, nothing resolved (config hash and diff read it)."""

    sources: list[Name] = ["default"]
    channels: list[Channel] = list(CHANNELS)
    # serial | concurrent | per_order (config/modes.py); concurrent = true/false is its older spelling
    mode: Mode | None = None
    concurrent: bool | None = None
    rate_burst: int | None = Field(None, ge=1, le=10_000)
    signing_secret_env: EnvName | None = None
    retry_delays: list[Annotated[float, Field(ge=0, le=7 * 86400)]] | None = Field(None, max_length=200)
    headers: dict[str, str] = {}
    # typed-event subscription (docs/events.md); beside message_types / order_statuses, all must pass
    event_types: list[str] | None = None
    message_types: list[str] | None = None
    order_statuses: list[str] | None = None
    # a content filter on the event document's fields (config/match.py), checked at start-up
    match: dict[str, Any] | None = None
    retry_4xx: list[Annotated[int, Field(ge=400, le=499)]] = []

    @field_validator("url")
    @classmethod
    def _splits(cls, v: str) -> str:
        # the pattern lets brackets through that hold no IPv6 address, or are left open: every reader
        # of the URL (health's host, check-endpoints, the client) raised ValueError on it, a traceback
        try:
            urlsplit(v)
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        return v

    @field_validator("sources", "channels")
    @classmethod
    def _not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("must name at least one")
        if len(set(v)) != len(v):
            raise ValueError("has duplicates")
        return v

    @field_validator("event_types")
    @classmethod
    def _known_event_types(cls, v: list[str] | None) -> list[str] | None:
        unknown = [t for t in v or () if t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type {', '.join(map(repr, unknown))}; known: {', '.join(EVENT_TYPES)}")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> EndpointConfig:
        resolve_mode(self.mode, self.concurrent)  # raises ValueError: mode and concurrent disagree
        check_rate(self.rate_limit, self.rate_burst)
        return self

    @field_validator("match")
    @classmethod
    def _match_paths(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        compile_match(v)  # raises ValueError naming the path and the rule
        return v

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a valid header name")
            if "\n" in value or "\r" in value:
                raise ValueError(f"value of {name!r} contains a line break")
        return v


class Endpoint(EndpointFields):
    """An endpoint as the processes use it: the keys of `EndpointFields` as written, the rest resolved.

    Built by `resolve` from a validated `EndpointConfig` (``model_construct``: nothing is validated
    twice), or by relay/store/endpoints.py from a removed endpoint's routing rule.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sources: frozenset[str]
    channels: frozenset[str]
    # serial | concurrent | per_order; ``concurrent`` is True for the last two (more than one in flight)
    mode: Mode = "serial"
    concurrent: bool
    rate_burst: int = 1
    signing_secret: Secret | None
    retry_delays: tuple[float, ...] | None
    headers: Mapping[str, Secret]
    event_types: frozenset[str] | None
    message_types: frozenset[str] | None
    order_statuses: frozenset[str] | None
    match: Mapping[str, Rule] | None = None
    retry_4xx: frozenset[int]

    @property
    def in_flight_limit(self) -> int:
        return self.max_in_flight if self.concurrent else 1


def _names(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def resolve(i: int, e: EndpointConfig, secrets: SecretReader) -> Endpoint:
    """The runtime endpoint of the ``i``th table; an unset variable is a problem in ``secrets``."""
    mode = resolve_mode(e.mode, e.concurrent)
    return Endpoint.model_construct(
        **{name: getattr(e, name) for name in EndpointFields.model_fields},
        sources=frozenset(e.sources),
        channels=frozenset(e.channels),
        mode=mode,
        concurrent=mode != "serial",
        rate_burst=e.rate_burst or 1,
        signing_secret=_signing_secret(i, e, secrets),
        retry_delays=None if e.retry_delays is None else tuple(e.retry_delays),
        headers=_headers(i, e, secrets),
        event_types=_names(e.event_types),
        message_types=_names(e.message_types),
        order_statuses=_names(e.order_statuses),
        match=compile_match(e.match),
        retry_4xx=frozenset(e.retry_4xx),
    )


def _headers(i: int, e: EndpointConfig, secrets: SecretReader) -> dict[str, Secret]:
    """Extra headers; each ``${VAR}`` anywhere in a value ("Bearer ${ERP_TOKEN}") is read from the
    environment, and an unset one is an error naming it."""
    headers: dict[str, Secret] = {}
    for hname, hvalue in e.headers.items():
        resolved = secrets.substitute(f"{item('endpoints', i, e.name)}: headers.{hname}", hvalue)
        if resolved is not None:
            headers[hname] = resolved
    return headers


def _signing_secret(i: int, e: EndpointConfig, secrets: SecretReader) -> Secret | None:
    """The Standard Webhooks secret: whsec_ followed by base64."""
    where = item("endpoints", i, e.name)
    signing = secrets.get(f"{where}: signing_secret_env", e.signing_secret_env)
    if signing is None:
        return None
    key = f"{where}: signing_secret_env = {e.signing_secret_env!r}"
    if not signing.reveal().startswith("whsec_"):
        secrets.problems.append(f"  {key}: the secret must look like whsec_<base64>")
        return signing
    try:
        base64.b64decode(signing.reveal().removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        secrets.problems.append(f"  {key}: the part after whsec_ is not valid base64")
    return signing
