"""Values shared by the three channels' documents: text, amounts, times with their zone, countries.

Pure functions; each returns null (None) for a value it cannot read, never raises.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pycountry

# the parsed form, as relay.protocol.Fields (a sibling in the core layer, so not imported)
Fields = dict[str, list[str]]

_DECIMAL = re.compile(r"-?\d+(\.\d+)?")
_YMDHIS = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})")
_DATETIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?: ([A-Za-z]{1,6}))?")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# IPN / LCN TIMEZONE_OFFSET: "GMT+03:00" in every payload seen; "+03:00", "GMT+3", "UTC-05:30" read too
_OFFSET = re.compile(r"(?:GMT|UTC)?\s*([+-])(\d{1,2})(?::?(\d{2}))?")
# INS timestamps name their zone: U.S. Eastern in the legacy docs (EST/EDT), EEST in the current
# read-receipt example, EET in a real stub; the European and universal names are read as well
ZONES = {
    "EST": "-05:00",
    "EDT": "-04:00",
    "CET": "+01:00",
    "CEST": "+02:00",
    "EET": "+02:00",
    "EEST": "+03:00",
    "UTC": "Z",
    "GMT": "Z",
    "Z": "Z",
}


def first(fields: Fields, name: str) -> str:
    values = fields.get(name)
    return values[0] if values else ""


def opt(value: str) -> str | None:
    return value if value else None


def full_name(*parts: str) -> str | None:
    joined = " ".join(p.strip() for p in parts if p.strip())
    return joined or None


def amount(value: str) -> str | None:
    """An amount as a decimal string exactly as sent, or null when it is not a decimal number."""
    value = value.strip()
    return value if _DECIMAL.fullmatch(value) else None


def offset(value: str) -> str:
    """``TIMEZONE_OFFSET`` (``GMT+03:00``) as an ISO 8601 offset (``+03:00``); "" when unreadable."""
    value = value.strip().upper()
    if value in ("GMT", "UTC"):
        return "Z"
    m = _OFFSET.fullmatch(value)
    if m is None:
        return ""
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes > 59:
        return ""
    return f"{m.group(1)}{hours:02d}:{minutes:02d}"


# INS 1.1 user guide, Document Conventions: "All times will be sent in U.S. Eastern Time"
# (2checkout.com/static/va/documentation/INS/index.html); real INS timestamps name no zone
# ("2012-07-19 17:01:19", w3guy/omnipay-2checkout tests/Mock/FraudChangeNotification.txt)
INS_ZONE = "America/New_York"


def timestamp(value: str, zone: str = "", *, local: str = "") -> str | None:
    """ISO 8601 of a 2Checkout time (``YmdHis`` or ``Y-m-d H:i:s``, optionally followed by a zone name).

    The offset comes from the zone named in the value (INS), else from ``zone`` (the notification's
    TIMEZONE_OFFSET, already converted by ``offset``), else, for a value that names no zone, from the
    IANA zone ``local`` on that date (INS: U.S. Eastern, ``INS_ZONE``). A valid time whose zone is not
    known (named but unknown, or no tz database here) is given without an offset rather than dropped;
    only a value that is not a valid time gives null.
    """
    value = value.strip()
    m = _YMDHIS.fullmatch(value) or _DATETIME.fullmatch(value)
    if m is None:
        return None
    groups = m.groups()
    named = len(groups) == 7 and bool(groups[6])
    if named:
        zone = ZONES.get(groups[6].upper(), "")
    y, mo, d, h, mi, s = (int(g) for g in groups[:6])
    try:
        when = datetime(y, mo, d, h, mi, s)
    except ValueError:
        return None
    if not named and not zone and local:
        zone = _offset_in(local, when)
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{zone}"


def _offset_in(name: str, when: datetime) -> str:
    """The UTC offset of the IANA zone ``name`` at the wall-clock time ``when`` (daylight saving as on
    that date: 2012-07-19 in New York is -04:00, 2021-01-01 -05:00); "" without a tz database. The hour
    repeated when clocks go back is read as its first pass (fold=0: EDT), as zoneinfo does."""
    try:
        delta = when.replace(tzinfo=ZoneInfo(name)).utcoffset()  # ZoneInfo keeps each zone it loaded
    except ZoneInfoNotFoundError:
        return ""
    if delta is None:
        return ""
    if not delta:
        return "Z"
    sign = "-" if delta < timedelta(0) else "+"
    minutes = abs(int(delta.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def expiry(value: str, zone: str = "") -> str | None:
    """A licence's expiry: a time as ``timestamp`` does, or a date-only value kept as a date."""
    found = timestamp(value, zone)
    if found is not None:
        return found
    m = _DATE.fullmatch(value.strip())
    if m is None:
        return None
    try:
        date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None
    return m.group(0)


@lru_cache(maxsize=512)
def country(value: str) -> str | None:
    """ISO 3166-1 alpha-2, upper case, from an alpha-2 (IPN ``us``), an alpha-3 (INS ``JPN``) or an
    English name (LCN ``Japan``, IPN ``United States of America``); null when none of them matches.

    The table is pycountry's (the ISO 3166 data Debian maintains), not a hand-written copy.
    """
    value = value.strip()
    if not value:
        return None
    found = None
    if len(value) == 2 and value.isalpha():
        found = pycountry.countries.get(alpha_2=value.upper())
    elif len(value) == 3 and value.isalpha():
        found = pycountry.countries.get(alpha_3=value.upper())
    else:
        try:
            found = pycountry.countries.lookup(value)
        except LookupError:
            found = None
    return str(found.alpha_2) if found is not None else None
