"""Defensive decoding of what a client controls before any view sees it: headers (cookies are a
header), the path and the query string.

aiohttp decodes header bytes as UTF-8 with ``surrogateescape``, so a byte such as ``\\xff`` reaches
the views as a lone surrogate (U+DCFF). Such a string cannot be encoded again, and comparing it with
``hmac.compare_digest`` or signing it raised ``UnicodeEncodeError`` deep in a view: a 500.
``problem`` (checked for every request by relay/web/middleware.py) refuses it at the door with a 400
that names the header. A percent-escape in the query that is not UTF-8 (``%FF``), which yarl
silently turns into U+FFFD, is refused the same way.
Form bodies are read by the views through ``form()``, which turns a body that does not parse (bytes
that are not UTF-8, a multipart body without its boundary) into a 400 with the reason.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import structlog
from aiohttp import web
from multidict import MultiDictProxy

logger = structlog.get_logger()

NOT_UTF8 = "the request holds bytes that are not valid UTF-8"
# a lone surrogate is what surrogateescape makes of a byte that is not UTF-8
_UNDECODABLE = re.compile("[\ud800-\udfff]")


def problem(request: web.Request) -> str | None:
    """Why ``request`` cannot be read as text, or None when every header, path and query value can."""
    if _clean(request):
        return None
    for name, value in request.raw_headers:
        if _bad_bytes(name) or _bad_bytes(value):
            shown = name.decode("ascii", "backslashreplace")
            return f"bad_header: the {shown} header holds a NUL or bytes that are not valid UTF-8 text"
    if _UNDECODABLE.search(request.path):
        return "bad_path: the path holds a percent-escape that is not valid UTF-8"
    # yarl turns a bad escape into U+FFFD silently, so the raw query is checked, not request.query.
    # A NUL that is valid UTF-8 is left to each parameter's own rule, which names the parameter.
    if not _utf8(unquote_to_bytes(request.rel_url.raw_query_string.replace("+", " "))):
        return "bad_query: the query string holds a percent-escape that is not valid UTF-8"
    return None


def _clean(request: web.Request) -> bool:
    """The common case, proven in a few C calls: every header name and value ASCII without a NUL
    (ASCII is valid UTF-8), an ASCII path and no query string. Anything else takes the checks above,
    field by field, which also name what is wrong."""
    headers = b"".join([part for pair in request.raw_headers for part in pair])
    return (
        headers.isascii() and b"\x00" not in headers and request.path.isascii() and not request.rel_url.raw_query_string
    )


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _bad_bytes(raw: bytes) -> bool:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return "\x00" in text


def refusal(request: web.Request, status: int, reason: str) -> web.Response:
    """The admin API answers JSON errors; everything else answers text."""
    if request.path.startswith("/api/") or request.path == "/api":
        return web.json_response({"error": reason}, status=status)
    return web.Response(status=status, text=reason + "\n")


def refused(request: web.Request, reason: str) -> web.Response:
    """The 400 for a ``problem``, logged (the middleware, relay/web/middleware.py, checks every request)."""
    logger.info("request_refused", reason=reason.partition(":")[0], path=request.raw_path[:200], remote=request.remote)
    return refusal(request, 400, reason)


async def form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """``request.post()``, with a body that does not parse refused as 400 with the reason, not a 500."""
    try:
        return await request.post()
    except UnicodeError:
        raise web.HTTPBadRequest(reason=f"bad_form: {NOT_UTF8}") from None
    except ValueError as exc:
        # aiohttp's multipart reader says what is wrong (e.g. no starting boundary) in a ValueError
        # printable ASCII only: it goes into the status line, and may quote the client's bytes
        detail = "".join(c if " " <= c <= "~" else "?" for c in " ".join(str(exc).split()))[:200]
        raise web.HTTPBadRequest(reason=f"bad_form: the form body does not parse ({detail})") from None
