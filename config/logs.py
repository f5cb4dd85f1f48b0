"""structlog, configured once per process: JSON in production, console in a terminal."""

from __future__ import annotations

import json as jsonlib
import json.encoder as json_encoder
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_KEYS = frozenset({"secret", "secret_key", "token", "authorization", "password", "signing_secret"})


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # belt and braces: secrets are never passed to loggers, but a key named like one is masked anyway
    for key in _SECRET_KEYS.intersection(event_dict):
        event_dict[key] = "**********"
    return event_dict


class _StderrLogger:
    """Writes rendered lines to the current ``sys.stderr`` (looked up per line, so a swapped or
    closed stream, as under test runners, never breaks the caller)."""

    def msg(self, message: str) -> None:
        try:
            sys.stderr.write(message + "\n")
        except ValueError:
            pass

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _json_dumps() -> Callable[..., str]:
    """``json.dumps(obj, default=...)`` as structlog's JSONRenderer calls it, with the encoder built
    once. Given ``default``, json.dumps builds a JSONEncoder on every call, and JSONEncoder.encode
    builds its C encoder (``c_make_encoder``) on every call too: ~3 µs a line together, on the
    ingress's hot path. The C encoder is built once here with json.dumps's settings (ASCII escapes,
    ``", "`` and ``": "``, NaN allowed), so the bytes are the same; without the circular-reference
    check (a log event holds no cycles: one would end in RecursionError rather than ValueError)."""
    make = getattr(json_encoder, "c_make_encoder", None)
    encoders: dict[Callable[[Any], Any], Callable[[Any], str]] = {}

    def build(default: Callable[[Any], Any]) -> Callable[[Any], str]:
        if make is None:  # pragma: no cover - a Python without the C accelerator
            return jsonlib.JSONEncoder(default=default).encode
        encode = make(None, default, json_encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        return lambda obj: "".join(encode(obj, 0))

    def dumps(obj: Any, *, default: Callable[[Any], Any]) -> str:
        encoder = encoders.get(default)
        if encoder is None:
            encoder = encoders[default] = build(default)
        return encoder(obj)

    return dumps


def _with_exc_info(renderer: structlog.types.Processor) -> structlog.types.Processor:
    """``renderer`` only for the lines that carry ``exc_info`` (the only key ExceptionRenderer reads):
    the others, every request's line among them, skip its call and checks (~0.5 µs a line)."""

    def render(logger: Any, method: str, event_dict: structlog.types.EventDict) -> Any:
        return renderer(logger, method, event_dict) if "exc_info" in event_dict else event_dict

    return render


class _IsoUtc:
    """``datetime.now(UTC).isoformat()`` with ``Z`` for ``+00:00`` (structlog's ``TimeStamper(fmt="iso",
    utc=True)``) for the time ``ns`` (``time.time_ns()``): the same text, with no fraction at a whole
    second as isoformat writes it, at a third of the cost: the date and time of day are formatted
    once a second (~1 µs a line saved; every request of the ingress logs one)."""

    def __init__(self) -> None:
        self._second, self._text = -1, ""

    def __call__(self, ns: int) -> str:
        second, micros = divmod(ns // 1000, 1_000_000)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{micros:06d}Z" if micros else f"{self._text}Z"


iso_utc = _IsoUtc()


def _timestamp(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


def _stderr_logger(*_: Any) -> _StderrLogger:
    return _StderrLogger()


class _ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a client's fault, answered 400) with a traceback at
    ERROR. Anyone on the internet can send those, so each becomes one ``bad_http_request`` line at
    INFO, without the traceback: a stranger cannot flood the log with stacks or page the operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "bad_http_request: %s %s", (exc.code, exc.message.splitlines()[0][:200])
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(_json_dumps())
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # no frame locals: they would copy request bodies and secrets into the log
    exceptions: list[Any] = (
        [
            _with_exc_info(
                structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
            )
        ]
        if json
        else []
    )
    # the relay's own events take structlog's native path: a level filter, then straight to stderr
    # (the stdlib route cost ~15 µs a line, on the ingress's hot path)
    structlog.configure(
        processors=[*shared, *exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    # aiohttp's and arq's stdlib records are rendered the same way
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log duplicates our one-line-per-request event
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientErrorsInOneLine) for f in server_log.filters):
        server_log.addFilter(_ClientErrorsInOneLine())
    # arq logs every job start and end at INFO: at hundreds of fan-outs a second that is noise and CPU
    if level.lower() != "debug":
        logging.getLogger("arq.worker").setLevel(logging.WARNING)
