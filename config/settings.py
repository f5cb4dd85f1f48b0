"""The relay's one typed settings object.

`load_settings()` reads the TOML file (``--config``, ``RELAY_CONFIG`` or ``config/relay.toml``),
validates it with pydantic and resolves every secret from the environment variable the file
names. Entry points call it once and pass the result down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from config.event_types import EVENT_TYPES
from config.match import Rule, compile_match
from config.modes import Mode, check_rate
from config.modes import resolve as resolve_mode
from config.reconcile import ReconcileConfig
from config.reconcile import retention_problems as reconcile_retention_problems
from config.silence import retention_problems as silence_retention_problems
from config.wording import format_validation_error, item

DEFAULT_CONFIG_PATH = Path("config/relay.toml")
MAX_ENDPOINTS_PER_ROUTE = 8
Channel = Literal["ipn", "lcn", "ins"]
CHANNELS: tuple[Channel, ...] = ("ipn", "lcn", "ins")

Algo = Literal["md5", "sha256", "sha3-256"]
# a source or endpoint name; relay/store/params.py validates the admin API's names with the same pattern
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _networks(v: list[str]) -> list[str]:
    """CIDRs or presets; a bad entry is a validation error that names it."""
    from config.networks import parse_networks

    parse_networks(v)
    return v


class ConfigError(Exception):
    """The configuration is unusable; the message names every bad key and value."""


class _Model(BaseModel):
    # extra="forbid": a typo in a key is an error that names it, not a silently ignored setting
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(262_144, ge=1024, le=16 * 1024 * 1024)
    # Redis write budget before the ingress gives up and answers 503 (2Checkout then retries)
    redis_timeout: float = Field(2.0, gt=0, le=30)
    # env var holding the admin API bearer token; without it the admin API is off
    admin_token_env: EnvName = "RELAY_ADMIN_TOKEN"
    # what "stored" means before the receipt goes out: the write returned, the AOF was fsynced, or
    # ack_replicas replicas have it (see docs/reliability.md)
    ack_after: Literal["write", "fsync", "replica"] = "write"
    ack_replicas: int = Field(1, ge=1, le=16)
    ack_timeout: float = Field(1.0, gt=0, le=30)
    # X-Forwarded-For is believed only from these peers (CIDRs), e.g. your TLS proxy
    trusted_proxies: list[str] = []
    # a request body must arrive within this many seconds (slow uploads get 408)
    body_timeout: float = Field(10.0, gt=0, le=300)
    # header limits: a longer line or field is refused with 400 by the HTTP parser
    max_header_bytes: int = Field(8190, ge=1024, le=65536)
    max_headers: int = Field(100, ge=10, le=1000)
    # a request's headers must arrive within this many seconds of the connection opening (or of the
    # first byte after the previous request); slower clients are disconnected (slowloris)
    header_timeout: float = Field(10.0, gt=0, le=300)
    # a kept-alive connection with no request for this long is closed; above the 60 s that proxies
    # and load balancers commonly keep upstream connections, so the relay is never the one that races
    idle_timeout: float = Field(75.0, gt=0, le=3600)
    # open connections per listener; at the cap the longest-waiting connection without a request in
    # progress is closed to make room (lowered at start-up if the descriptor limit cannot hold it)
    max_connections: int = Field(1024, ge=16, le=1_000_000)
    # /metrics on this (internet-facing) listener: off by default, since the series name internal
    # endpoints; the admin listener always serves it
    public_metrics: bool = False
    # `relay serve` processes sharing the public port (SO_REUSEPORT); 0 or "auto": one per CPU
    processes: int | Literal["auto"] = 1

    _proxies = field_validator("trusted_proxies")(classmethod(lambda cls, v: _networks(v)))

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, v: Any) -> int | str:
        return parse_processes(v)


MAX_PROCESSES = 64


def parse_processes(value: Any) -> int | str:
    """``[server] processes`` and ``relay serve --processes``: 1 … 64, or 0 / "auto" (one per CPU)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PROCESSES):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"expected a number of processes 1 … {MAX_PROCESSES}, or 0 or \"auto\" for one per CPU")


def process_count(value: int | str, cpus: int | None = None) -> int:
    """How many processes ``processes`` means on this machine (\"auto\" and 0: one per CPU, at most 64)."""
    if value == "auto" or value == 0:
        return max(1, min(MAX_PROCESSES, cpus if cpus is not None else (os.cpu_count() or 1)))
    return int(value)


class AdminConfig(_Model):
    # the admin API and dashboard listen here, apart from the public listeners; port 0 serves them on
    # the public listener instead (only behind a proxy that keeps /api and /dashboard private)
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)


class RedisConfig(_Model):
    # used only when REDIS_URL is unset: the relay starts its own redis-server here, with AOF on
    data_dir: str = ".relay/redis"
    port: int = Field(6390, ge=1, le=65535)


class SourceConfig(_Model):
    name: Name
    secret_key_env: EnvName | None = None
    ins_secret_word_env: EnvName | None = None
    seller_id: str | None = Field(None, pattern=r"^[0-9]{1,20}$")
    min_signature: Algo = "md5"
    # during a key change-over both the new and the previous secret are accepted
    secret_key_previous_env: EnvName | None = None
    ins_secret_word_previous_env: EnvName | None = None
    # the channels this source accepts; leave "ins" out to turn INS off for it
    channels: list[Channel] = list(CHANNELS)
    # accept only from these networks (CIDRs, or the preset "2checkout"); empty: from anywhere
    allow_networks: list[str] = []
    # flag an INS whose signed triple (sale_id, vendor_id, invoice_id) was already seen with the same
    # message_type but another message_id: the md5_hash does not cover the rest of the message
    flag_ins_replays: bool = True
    # compare with 2Checkout's order list (config/reconcile.py); off unless the table is there
    reconcile: ReconcileConfig | None = None
    # source_silent when no notification was accepted from this source for this many hours (off: None)
    expect_within_hours: float | None = Field(None, gt=0, le=24 * 365)

    _allow = field_validator("allow_networks")(classmethod(lambda cls, v: _networks(v)))


class EndpointConfig(_Model):
    name: Name
    url: str = Field(pattern=r"^https?://[^\s/?#]+[^\s]*$")
    sources: list[Name] = ["default"]
    channels: list[Channel] = list(CHANNELS)
    # serial | concurrent | per_order (config/modes.py); concurrent = true/false is its older spelling
    mode: Mode | None = None
    concurrent: bool | None = None
    # requests per second across all workers (fractions allowed) and how many may start at once
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    rate_burst: int | None = Field(None, ge=1, le=10_000)
    max_in_flight: int = Field(10, ge=1, le=1000)
    timeout: float = Field(10.0, gt=0, le=300)
    signing_secret_env: EnvName | None = None
    retry_delays: list[Annotated[float, Field(ge=0, le=7 * 86400)]] | None = Field(None, max_length=200)
    headers: dict[str, str] = {}
    format: Literal["form", "json", "event"] = "form"
    # typed-event subscription (docs/events.md); beside message_types / order_statuses, all must pass
    event_types: list[str] | None = None
    message_types: list[str] | None = None
    order_statuses: list[str] | None = None
    test_orders: bool | None = None
    # a content filter on the event document's fields (config/match.py), checked at start-up
    match: dict[str, Any] | None = None
    retry_4xx: list[Annotated[int, Field(ge=400, le=499)]] = []
    # per-endpoint overrides of [alerts] threshold_percent, min_deliveries and window_hours
    alert_threshold_percent: float | None = Field(None, ge=0, lt=100)
    alert_min_deliveries: int | None = Field(None, ge=1)
    alert_window_hours: float | None = Field(None, gt=0, le=24)

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


class DeliveryConfig(_Model):
    # how long notifications, deliveries and attempts are kept
    retention_days: float = Field(30, gt=0, le=3650)
    # default schedule (mirrors 2Checkout's own): delays before each retry, then hourly until the window ends
    retry_delays: list[Annotated[float, Field(ge=0)]] = [60, 180, 900, 900, 900, 900]
    retry_every: float = Field(3600, gt=0)
    retry_window_hours: float = Field(48, gt=0, le=24 * 30)
    jitter: float = Field(0.1, ge=0, le=0.5)
    # a Retry-After header is honoured but clamped to this many seconds
    max_retry_after: float = Field(3600, ge=1)
    # how many response bytes an attempt record keeps
    response_snippet_bytes: int = Field(512, ge=0, le=65536)
    # how often idle workers look for due retries (new work wakes them at once)
    poll_interval: float = Field(0.25, gt=0, le=60)
    # a claimed delivery's lease is its endpoint's timeout plus this: how long a stalled or killed
    # worker's deliveries wait before another worker takes them over (docs/reliability.md)
    lease_margin: float = Field(5.0, ge=0.2, le=300)

    @property
    def retention_ms(self) -> int:
        return int(self.retention_days * 86_400_000)


class LoggingConfig(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HealthConfig(_Model):
    # `relay health` and /api/health say unhealthy when a delivery has waited longer than this
    max_pending_age: float = Field(300, gt=0)
    # an endpoint paused by an operator for longer than this is reported as the problem endpoint_paused
    max_pause_hours: float = Field(24, gt=0)


class AlertsConfig(_Model):
    threshold_percent: float = Field(25, ge=0, lt=100)
    # the per-minute counters the rate is computed from are kept 25 h
    window_hours: float = Field(4, gt=0, le=24)
    frequency_hours: float = Field(4, gt=0)
    min_deliveries: int = Field(10, ge=1)
    # source_rejecting: at least source_min_rejections refusals that make up more than
    # source_threshold_percent of a source's requests in the last source_window_minutes
    source_threshold_percent: float = Field(50, ge=0, lt=100)
    source_min_rejections: int = Field(10, ge=1)
    source_window_minutes: float = Field(15, gt=0, le=120)
    # how often each relay serve process checks for no_worker and an unreachable Redis (relay/alerting/watch.py)
    check_seconds: float = Field(10, ge=0.2, le=300)
    # env var holding a Slack-compatible incoming webhook URL (it embeds a credential)
    webhook_url_env: EnvName | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_from: str | None = None
    smtp_to: list[str] = []
    smtp_starttls: bool = True
    smtp_username_env: EnvName | None = None
    smtp_password_env: EnvName | None = None

    @model_validator(mode="after")
    def _smtp_complete(self) -> AlertsConfig:
        if self.smtp_host and not (self.smtp_from and self.smtp_to):
            raise ValueError("smtp_host needs smtp_from and smtp_to")
        if (self.smtp_from or self.smtp_to) and not self.smtp_host:
            raise ValueError("smtp_from and smtp_to need smtp_host")
        return self


class FileConfig(_Model):
    server: ServerConfig = ServerConfig()
    admin: AdminConfig = AdminConfig()
    redis: RedisConfig = RedisConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    logging: LoggingConfig = LoggingConfig()
    health: HealthConfig = HealthConfig()
    alerts: AlertsConfig = AlertsConfig()
    sources: list[SourceConfig] = Field(min_length=1)
    endpoints: list[EndpointConfig] = []

    @model_validator(mode="after")
    def _cross_checks(self) -> FileConfig:
        problems: list[str] = []
        for kind, names in (("sources", [s.name for s in self.sources]),
                            ("endpoints", [e.name for e in self.endpoints])):
            for name, n in Counter(names).items():
                if n > 1:
                    problems.append(f"{kind}: name {name!r} is used {n} times")
        known = {s.name for s in self.sources}
        routes: Counter[tuple[str, str]] = Counter()
        for i, ep in enumerate(self.endpoints):
            for src in ep.sources:
                if src not in known:
                    problems.append(f"{item('endpoints', i, ep.name)}: sources: {src!r} is not a configured source "
                                    f"(known: {', '.join(sorted(known))})")
                for ch in ep.channels:
                    routes[(src, ch)] += 1
        for (src, route_ch), n in sorted(routes.items()):
            if n > MAX_ENDPOINTS_PER_ROUTE:
                problems.append(f"endpoints: {n} endpoints receive source {src!r} channel {route_ch!r}; "
                                f"at most {MAX_ENDPOINTS_PER_ROUTE} are allowed")
        problems += _retention_problems(self.delivery, self.endpoints)
        problems += reconcile_retention_problems(self.delivery.retention_days,
                                                 [(s.name, s.reconcile) for s in self.sources])
        problems += silence_retention_problems(self.delivery.retention_days,
                                               [(s.name, s.expect_within_hours) for s in self.sources])
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _retention_problems(delivery: DeliveryConfig, endpoints: list[EndpointConfig]) -> list[str]:
    """Retention must outlast every retry schedule: a delivery still retrying when its notification
    expires would vanish without ever becoming ``failed``. Paused time is not counted (an operator's
    pause longer than retention is its own choice; the workers then write nothing back)."""
    problems: list[str] = []
    retention_h = delivery.retention_days * 24
    if retention_h <= delivery.retry_window_hours:
        problems.append(f"delivery.retention_days = {delivery.retention_days:g} ({retention_h:g} h) must be longer "
                        f"than delivery.retry_window_hours = {delivery.retry_window_hours:g}: a delivery still "
                        "retrying would expire with its notification instead of ending failed")
    for i, ep in enumerate(endpoints):
        if ep.retry_delays is None:
            continue
        # the longest an endpoint's own schedule can run: each delay stretched by jitter or replaced by
        # a Retry-After (clamped to max_retry_after), plus every attempt's timeout
        longest_s = sum(max(d, delivery.max_retry_after) * (1 + delivery.jitter) for d in ep.retry_delays)
        longest_s += (len(ep.retry_delays) + 1) * ep.timeout
        if longest_s / 3600 >= retention_h:
            problems.append(f"{item('endpoints', i, ep.name)}: retry_delays can run {longest_s / 3600:g} h "
                            "(with jitter, "
                            f"delivery.max_retry_after and timeouts), not shorter than delivery.retention_days = "
                            f"{delivery.retention_days:g} ({retention_h:g} h)")
    return problems


class Secret:
    """A secret value that never shows in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Source:
    name: str
    secret_key: Secret | None
    ins_secret_word: Secret | None
    seller_id: str | None
    min_signature: str
    previous_secret_key: Secret | None = None
    previous_ins_secret_word: Secret | None = None
    channels: frozenset[str] = frozenset(CHANNELS)
    allow_networks: tuple[Any, ...] = ()
    flag_ins_replays: bool = True
    reconcile: ReconcileConfig | None = None
    expect_within_hours: float | None = None

    @property
    def secret_keys(self) -> list[Secret]:
        return [s for s in (self.secret_key, self.previous_secret_key) if s is not None]

    @property
    def ins_secret_words(self) -> list[Secret]:
        return [s for s in (self.ins_secret_word, self.previous_ins_secret_word) if s is not None]


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    sources: frozenset[str]
    channels: frozenset[str]
    concurrent: bool
    max_in_flight: int
    timeout: float
    signing_secret: Secret | None
    retry_delays: tuple[float, ...] | None
    headers: Mapping[str, Secret]
    format: str
    message_types: frozenset[str] | None
    event_types: frozenset[str] | None
    order_statuses: frozenset[str] | None
    test_orders: bool | None
    retry_4xx: frozenset[int]
    match: Mapping[str, Rule] | None = None
    # serial | concurrent | per_order; ``concurrent`` above is True for the last two (more than one in flight)
    mode: Mode = "serial"
    rate_limit: float | None = None
    rate_burst: int = 1
    alert_threshold_percent: float | None = None
    alert_min_deliveries: int | None = None
    alert_window_hours: float | None = None

    @property
    def in_flight_limit(self) -> int:
        return self.max_in_flight if self.concurrent else 1


@dataclass(frozen=True)
class AlertSecrets:
    webhook_url: Secret | None = None
    smtp_username: Secret | None = None
    smtp_password: Secret | None = None


@dataclass(frozen=True)
class Settings:
    """Everything a process needs, validated, with secrets resolved."""

    config_path: Path
    file: FileConfig
    redis_url: str | None
    admin_token: Secret | None
    sources: Mapping[str, Source]
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    alert_secrets: AlertSecrets = field(default_factory=AlertSecrets)

    @property
    def server(self) -> ServerConfig:
        return self.file.server

    @property
    def delivery(self) -> DeliveryConfig:
        return self.file.delivery

    @property
    def health(self) -> HealthConfig:
        return self.file.health

    @property
    def alerts(self) -> AlertsConfig:
        return self.file.alerts


def _substitute(value: str, values: Mapping[str, Secret | None]) -> str | None:
    """``value`` with each ``${VAR}`` replaced; None when a variable is unset."""
    found = {name: v.reveal() for name, v in values.items() if v is not None}
    if len(found) < len(values):
        return None
    return _ENV_REF.sub(lambda m: found[m.group(1)], value)


def config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    return Path(cli_value or environ.get("RELAY_CONFIG") or DEFAULT_CONFIG_PATH)


def parse_file(path: Path) -> tuple[FileConfig, dict[str, Any]]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found (set --config or RELAY_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return FileConfig.model_validate(raw), raw
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, raw, exc)) from None


def load_settings(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_secrets: bool = True,
) -> Settings:
    """Validate the file and resolve its secrets from ``environ`` (default: the process environment).

    With ``require_secrets=False`` (used by CLI commands that only read Redis), a missing secret
    variable is left unset instead of being an error.
    """
    env = os.environ if environ is None else environ
    path = Path(path) if path is not None else config_path(None, env)
    cfg, _ = parse_file(path)
    secrets = _Secrets(env, require_secrets)
    sources = {s.name: _source(i, s, secrets) for i, s in enumerate(cfg.sources)}
    endpoints = {e.name: _endpoint(i, e, secrets) for i, e in enumerate(cfg.endpoints)}
    alert_secrets = _alert_secrets(cfg.alerts, secrets)
    if secrets.problems:
        raise ConfigError("\n".join([f"{path}: invalid configuration", *secrets.problems]))
    token = env.get(cfg.server.admin_token_env)
    return Settings(
        config_path=path,
        file=cfg,
        redis_url=env.get("REDIS_URL") or None,
        admin_token=Secret(token) if token else None,
        sources=sources,
        endpoints=endpoints,
        alert_secrets=alert_secrets,
    )


class _Secrets:
    """Resolves the environment variables the file names, collecting every problem to report at once."""

    def __init__(self, env: Mapping[str, str], required: bool) -> None:
        self.env = env
        self.required = required
        self.problems: list[str] = []

    def get(self, key: str, var: str | None) -> Secret | None:
        if var is None:
            return None
        value = self.env.get(var)
        if not value:
            if self.required:
                self.problems.append(f"  {key} = {var!r}: environment variable {var} is not set")
            return None
        return Secret(value)


_T = TypeVar("_T")


def _derive(cls: type[_T], model: BaseModel, **resolved: Any) -> _T:
    """The frozen view of a validated model: each field of ``cls`` not given in ``resolved`` is the
    model's field of the same name, lists frozen to the collection the dataclass declares."""
    hints = get_type_hints(cls)
    values = dict(resolved)
    for f in fields(cls):  # type: ignore[arg-type]  # cls is a dataclass; TypeVar cannot say so
        if f.name not in values:
            values[f.name] = _frozen(getattr(model, f.name), hints[f.name])
    return cls(**values)


def _frozen(value: Any, hint: Any) -> Any:
    if not isinstance(value, list):
        return value
    kinds = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    return frozenset(value) if any(get_origin(kind) is frozenset for kind in kinds) else tuple(value)


def _source(i: int, s: SourceConfig, secrets: _Secrets) -> Source:
    from config.networks import parse_networks

    where = item("sources", i, s.name)
    if s.secret_key_env is None and s.ins_secret_word_env is None:
        secrets.problems.append(f"  {where}: set secret_key_env, ins_secret_word_env or both")
    if s.reconcile is not None and s.secret_key_env is None:
        secrets.problems.append(f"  {where}: reconcile needs secret_key_env (2Checkout's API "
                                "is signed with the account's secret key)")
    if s.ins_secret_word_env is not None and s.seller_id is None:
        secrets.problems.append(f"  {where}: seller_id is required with ins_secret_word_env "
                                "(INS md5_hash covers the seller id)")
    return _derive(
        Source, s,
        secret_key=secrets.get(f"{where}: secret_key_env", s.secret_key_env),
        ins_secret_word=secrets.get(f"{where}: ins_secret_word_env", s.ins_secret_word_env),
        previous_secret_key=secrets.get(f"{where}: secret_key_previous_env", s.secret_key_previous_env),
        previous_ins_secret_word=secrets.get(f"{where}: ins_secret_word_previous_env",
                                             s.ins_secret_word_previous_env),
        allow_networks=parse_networks(s.allow_networks),
    )


def _endpoint(i: int, e: EndpointConfig, secrets: _Secrets) -> Endpoint:
    return _derive(
        Endpoint, e,
        signing_secret=_signing_secret(i, e, secrets),
        headers=_headers(i, e, secrets),
        match=compile_match(e.match),
        mode=(mode := resolve_mode(e.mode, e.concurrent)),
        concurrent=mode != "serial",
        rate_burst=e.rate_burst or 1,
    )


def _headers(i: int, e: EndpointConfig, secrets: _Secrets) -> dict[str, Secret]:
    """Extra headers; each ``${VAR}`` anywhere in a value ("Bearer ${ERP_TOKEN}") is read from the
    environment, and an unset one is an error naming it."""
    headers: dict[str, Secret] = {}
    for hname, hvalue in e.headers.items():
        where = f"{item('endpoints', i, e.name)}: headers.{hname}"
        values = {var: secrets.get(where, var) for var in _ENV_REF.findall(hvalue)}
        resolved = _substitute(hvalue, values)
        if resolved is not None:
            headers[hname] = Secret(resolved)
    return headers


def _signing_secret(i: int, e: EndpointConfig, secrets: _Secrets) -> Secret | None:
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


def _alert_secrets(alerts: AlertsConfig, secrets: _Secrets) -> AlertSecrets:
    webhook_url = secrets.get("alerts.webhook_url_env", alerts.webhook_url_env)
    if webhook_url is not None and not re.match(r"^https?://[^\s/?#]+", webhook_url.reveal()):
        secrets.problems.append(f"  alerts.webhook_url_env = {alerts.webhook_url_env!r}: "
                                "the value is not an http(s) URL")
    return AlertSecrets(
        webhook_url=webhook_url,
        smtp_username=secrets.get("alerts.smtp_username_env", alerts.smtp_username_env),
        smtp_password=secrets.get("alerts.smtp_password_env", alerts.smtp_password_env),
    )
