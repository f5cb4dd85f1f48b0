"""The relay's one typed settings object.

`load_settings()` reads the TOML file (`config_path`: ``--config``, ``RELAY_CONFIG`` or
``config/relay.toml``), validates it with pydantic and resolves every secret from the environment
variable the file names. Entry points call it once and pass the result down; nothing else reads
``os.environ``.

The keys are declared once, by concern: the plain sections in config/sections.py, ``[[sources]]`` in
config/source.py, ``[[endpoints]]`` in config/endpoint.py, secrets in config/secrets.py. This module
puts them together (`FileConfig`, the checks across sections) and re-exports the names the rest of
the relay imports from here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from config.endpoint import Endpoint, EndpointConfig
from config.endpoint import resolve as resolve_endpoint
from config.reconcile import retention_problems as reconcile_retention_problems
from config.secrets import AlertSecrets, Secret, SecretReader
from config.sections import (
    CHANNELS,
    MAX_PROCESSES,
    NAME_PATTERN,
    AdminConfig,
    AlertsConfig,
    Algo,
    Channel,
    DeliveryConfig,
    EnvName,
    HealthConfig,
    LoggingConfig,
    Model,
    Name,
    RedisConfig,
    ServerConfig,
    http_base,
    parse_processes,
    process_count,
)
from config.silence import retention_problems as silence_retention_problems
from config.source import Source, SourceConfig
from config.source import resolve as resolve_source
from config.wording import format_validation_error, item

__all__ = [
    "CHANNELS",
    "DEFAULT_CONFIG_PATH",
    "MAX_ENDPOINTS_PER_ROUTE",
    "MAX_PROCESSES",
    "NAME_PATTERN",
    "AdminConfig",
    "AlertSecrets",
    "AlertsConfig",
    "Algo",
    "Channel",
    "ConfigError",
    "DeliveryConfig",
    "Endpoint",
    "EndpointConfig",
    "EnvName",
    "FileConfig",
    "HealthConfig",
    "LoggingConfig",
    "Name",
    "RedisConfig",
    "Secret",
    "ServerConfig",
    "http_base",
    "Settings",
    "Source",
    "SourceConfig",
    "config_path",
    "load_settings",
    "parse_file",
    "parse_processes",
    "process_count",
]

DEFAULT_CONFIG_PATH = Path("config/relay.toml")
MAX_ENDPOINTS_PER_ROUTE = 8


class ConfigError(Exception):
    """The configuration is unusable; the message names every bad key and value."""


class FileConfig(Model):
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
        problems = _name_problems(self) + _route_problems(self) + _listen_problems(self)
        problems += _retention_problems(self.delivery, self.endpoints)
        problems += reconcile_retention_problems(
            self.delivery.retention_days, [(s.name, s.reconcile) for s in self.sources]
        )
        problems += silence_retention_problems(
            self.delivery.retention_days, [(s.name, s.expect_within_hours) for s in self.sources]
        )
        if problems:
            raise ValueError("\n".join(problems))  # one line each (config/wording.py)
        return self


WILDCARDS = ("", "0.0.0.0", "::")


ADMIN_APART = "[admin] port = 0 serves the admin routes on the public listener, or give them a port of their own"


def _family(host: str) -> int | None:
    """4 or 6 for an address, None for "" (every address) or a name (it may resolve to either)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).version
    except ValueError:
        return None


def admin_clash(host: str, port: int, admin: AdminConfig) -> bool:
    """The admin listener on the public one's port and address: ``relay serve`` would stop with "address
    already in use" although nothing else holds it. Other hosts may share a port; a wildcard clashes with
    the addresses of its own family only: the event loop binds an IPv6 socket IPV6_V6ONLY, so 0.0.0.0
    and ::1 (or :: and 127.0.0.1) on one port both bind."""
    if admin.port == 0 or admin.port != port:
        return False
    if admin.host == host:
        return True
    if admin.host not in WILDCARDS and host not in WILDCARDS:
        return False
    ours, theirs = _family(host), _family(admin.host)
    return ours is None or theirs is None or ours == theirs


def _listen_problems(cfg: FileConfig) -> list[str]:
    server = cfg.server
    if not admin_clash(server.host, server.port, cfg.admin):
        return []
    return [f"admin.port = {server.port}: is [server] port too (on {server.host}); {ADMIN_APART}"]


def _name_problems(cfg: FileConfig) -> list[str]:
    """A source or endpoint name used twice."""
    problems: list[str] = []
    for kind, names in (("sources", [s.name for s in cfg.sources]), ("endpoints", [e.name for e in cfg.endpoints])):
        for name, n in Counter(names).items():
            if n > 1:
                problems.append(f"{kind}: name {name!r} is used {n} times")
    return problems


def _route_problems(cfg: FileConfig) -> list[str]:
    """An endpoint naming an unknown source, and a source/channel sent to more than eight endpoints."""
    problems: list[str] = []
    known = {s.name for s in cfg.sources}
    routes: Counter[tuple[str, str]] = Counter()
    for i, ep in enumerate(cfg.endpoints):
        for src in ep.sources:
            if src not in known:
                problems.append(
                    f"{item('endpoints', i, ep.name)}: sources: {src!r} is not a configured source "
                    f"(known: {', '.join(sorted(known))})"
                )
            for ch in ep.channels:
                routes[(src, ch)] += 1
    for (src, route_ch), n in sorted(routes.items()):
        if n > MAX_ENDPOINTS_PER_ROUTE:
            problems.append(
                f"endpoints: {n} endpoints receive source {src!r} channel {route_ch!r}; "
                f"at most {MAX_ENDPOINTS_PER_ROUTE} are allowed"
            )
    return problems


def _retention_problems(delivery: DeliveryConfig, endpoints: list[EndpointConfig]) -> list[str]:
    """Retention must outlast every retry schedule: a delivery still retrying when its notification
    expires would vanish without ever becoming ``failed``. Paused time is not counted (an operator's
    pause longer than retention is its own choice; the workers then write nothing back)."""
    problems: list[str] = []
    retention_h = delivery.retention_days * 24
    if retention_h <= delivery.retry_window_hours:
        problems.append(
            f"delivery.retention_days = {delivery.retention_days:g} ({retention_h:g} h) must be longer "
            f"than delivery.retry_window_hours = {delivery.retry_window_hours:g}: a delivery still "
            "retrying would expire with its notification instead of ending failed"
        )
    for i, ep in enumerate(endpoints):
        if ep.retry_delays is None:
            continue
        # the longest an endpoint's own schedule can run: each delay stretched by jitter or replaced by
        # a Retry-After (clamped to max_retry_after), plus every attempt's timeout
        longest_s = sum(max(d, delivery.max_retry_after) * (1 + delivery.jitter) for d in ep.retry_delays)
        longest_s += (len(ep.retry_delays) + 1) * ep.timeout
        if longest_s / 3600 >= retention_h:
            problems.append(
                f"{item('endpoints', i, ep.name)}: retry_delays can run {longest_s / 3600:g} h "
                "(with jitter, "
                f"delivery.max_retry_after and timeouts), not shorter than delivery.retention_days = "
                f"{delivery.retention_days:g} ({retention_h:g} h)"
            )
    return problems


@dataclass(frozen=True)
class Settings:
    """Everything a process needs, validated, with secrets resolved.

    Every section is read the same way, ``settings.<section>`` (``settings.server``,
    ``settings.admin`` ...); ``file`` is the validated file as written, for its hash and a reload's diff.
    """

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
    def admin(self) -> AdminConfig:
        return self.file.admin

    @property
    def redis(self) -> RedisConfig:
        return self.file.redis

    @property
    def delivery(self) -> DeliveryConfig:
        return self.file.delivery

    @property
    def logging(self) -> LoggingConfig:
        return self.file.logging

    @property
    def health(self) -> HealthConfig:
        return self.file.health

    @property
    def alerts(self) -> AlertsConfig:
        return self.file.alerts


def config_path(cli_value: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The configuration file: ``--config``, else ``$RELAY_CONFIG``, else config/relay.toml. The one
    place this is decided (the CLI, ``relay dev`` and `load_settings` all ask here)."""
    return Path(cli_value or environ.get("RELAY_CONFIG") or DEFAULT_CONFIG_PATH)


def parse_file(path: Path) -> tuple[FileConfig, dict[str, Any]]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
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
    path = config_path(path, env)
    cfg, _ = parse_file(path)
    secrets = SecretReader(env, require_secrets)
    sources = {s.name: resolve_source(i, s, secrets) for i, s in enumerate(cfg.sources)}
    endpoints = {e.name: resolve_endpoint(i, e, secrets) for i, e in enumerate(cfg.endpoints)}
    alert_secrets = _alert_secrets(cfg.alerts, secrets)
    # optional (unset: the admin API is off), but never one that cannot be compared
    optional = SecretReader(env, required=False)
    token = optional.get("server.admin_token_env", cfg.server.admin_token_env)
    secrets.problems += optional.problems
    if secrets.problems:
        raise ConfigError("\n".join([f"{path}: invalid configuration", *secrets.problems]))
    return Settings(
        config_path=path,
        file=cfg,
        redis_url=env.get("REDIS_URL") or None,
        admin_token=token,
        sources=sources,
        endpoints=endpoints,
        alert_secrets=alert_secrets,
    )


def _alert_secrets(alerts: AlertsConfig, secrets: SecretReader) -> AlertSecrets:
    webhook_url = secrets.get("alerts.webhook_url_env", alerts.webhook_url_env)
    if webhook_url is not None and not re.match(r"^https?://[^\s/?#]+", webhook_url.reveal()):
        secrets.problems.append(
            f"  alerts.webhook_url_env = {alerts.webhook_url_env!r}: the value is not an http(s) URL"
        )
    return AlertSecrets(
        webhook_url=webhook_url,
        smtp_username=secrets.get("alerts.smtp_username_env", alerts.smtp_username_env),
        smtp_password=secrets.get("alerts.smtp_password_env", alerts.smtp_password_env),
    )
