"""The file's plain sections: ``[server]``, ``[admin]``, ``[redis]``, ``[delivery]``, ``[logging]``,
``[health]`` and ``[alerts]``, and the names and types the per-source and per-endpoint tables share.

Each model is frozen and is what the processes read (``settings.server``, ``settings.delivery``, ...):
a key is written once, here, with its default and bounds (docs/configuration.md says what each means).
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Channel = Literal["ipn", "lcn", "ins"]
CHANNELS: tuple[Channel, ...] = ("ipn", "lcn", "ins")

Algo = Literal["md5", "sha256", "sha3-256"]
# a source or endpoint name; relay/store/params.py validates the admin API's names with the same pattern
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def networks(v: list[str]) -> list[str]:
    """CIDRs or presets; a bad entry is a validation error that names it."""
    from config.networks import parse_networks

    parse_networks(v)
    return v


class Model(BaseModel):
    # extra="forbid": a typo in a key is an error that names it, not a silently ignored setting
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Model):
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

    _proxies = field_validator("trusted_proxies")(classmethod(lambda cls, v: networks(v)))

    @field_validator("processes", mode="before")
    @classmethod
    def _processes(cls, v: Any) -> int | str:
        return parse_processes(v)


MAX_PROCESSES = 64


def http_base(host: str, port: int) -> str:
    """``http://host:port`` for a listen address, an IPv6 one in brackets (``http://::1:8080`` is no URL)."""
    return f"http://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"http://{host}:{port}"


def parse_processes(value: Any) -> int | str:
    """``[server] processes`` and ``relay serve --processes``: 1 … 64, or 0 / "auto" (one per CPU)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PROCESSES):
        return value  # type: ignore[no-any-return]
    raise ValueError(f'expected a number of processes 1 … {MAX_PROCESSES}, or 0 or "auto" for one per CPU')


def process_count(value: int | str, cpus: int | None = None) -> int:
    """How many processes ``processes`` means on this machine (\"auto\" and 0: one per CPU, at most 64)."""
    if value == "auto" or value == 0:
        return max(1, min(MAX_PROCESSES, cpus if cpus is not None else (os.cpu_count() or 1)))
    return int(value)


class AdminConfig(Model):
    # the admin API and dashboard listen here, apart from the public listeners; port 0 serves them on
    # the public listener instead (only behind a proxy that keeps /api and /dashboard private)
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)


class RedisConfig(Model):
    # used only when REDIS_URL is unset: the relay starts its own redis-server here, with AOF on
    data_dir: str = ".relay/redis"
    port: int = Field(6390, ge=1, le=65535)


class DeliveryConfig(Model):
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


class LoggingConfig(Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HealthConfig(Model):
    # `relay health` and /api/health say unhealthy when a delivery has waited longer than this
    max_pending_age: float = Field(300, gt=0)
    # an endpoint paused by an operator for longer than this is reported as the problem endpoint_paused
    max_pause_hours: float = Field(24, gt=0)


class AlertsConfig(Model):
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
