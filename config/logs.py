"""structlog, configured once per process: JSON in production, console in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_KEYS = frozenset({"secret", "secret_key", "token", "authorization", "password", "signing_secret"})


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # belt and braces: secrets are never passed to loggers, but a key named like one is masked anyway
    for key in _SECRET_KEYS.intersection(event_dict):
        event_dict[key] = "**********"
    return event_dict


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # no frame locals: they would copy request bodies and secrets into the log
            *([structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False))] if json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log duplicates our one-line-per-request event
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # arq logs every job start and end at INFO: at hundreds of fan-outs a second that is noise and CPU
    if level.lower() != "debug":
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
