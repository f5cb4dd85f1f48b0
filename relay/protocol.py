"""The 2Checkout wire protocol: form parsing, IPN/LCN/INS signatures and read receipts.

Pure functions, no I/O. Every rule here is sourced in ``docs/protocol.md``:
- IPN and LCN sign every posted value, in received order with repeated keys grouped at their first
  occurrence (as PHP's ``$_POST`` does), each prefixed by its length in UTF-8 *bytes*; the three
  signature fields themselves are skipped.
- INS signs ``UPPER(MD5(sale_id + seller_id + invoice_id + secret_word))``, a plain MD5.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol
from urllib.parse import parse_qsl

Algo = Literal["md5", "sha256", "sha3-256"]
Fields = dict[str, list[str]]

# field name -> algorithm, strongest first (the order every official SDK checks them in)
SIGNATURE_FIELDS: tuple[tuple[str, Algo], ...] = (
    ("SIGNATURE_SHA3_256", "sha3-256"),
    ("SIGNATURE_SHA2_256", "sha256"),
    ("HASH", "md5"),
)
_SIGNATURE_NAMES = frozenset(name for name, _ in SIGNATURE_FIELDS)
STRENGTH: Mapping[str, int] = {"md5": 0, "sha256": 1, "sha3-256": 2}
_HEX_LEN = {"md5": 32, "sha256": 64, "sha3-256": 64}
_DIGEST_NAME = {"md5": "md5", "sha256": "sha256", "sha3-256": "sha3_256"}
_HEX_DIGITS = re.compile("[0-9a-f]*")
MAX_FIELDS = 4096


class ProtocolError(Exception):
    """A request the relay refuses. ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class FormError(ProtocolError):
    """The body is not a well-formed application/x-www-form-urlencoded document."""


class SignatureError(ProtocolError):
    """The signature is missing, malformed, too weak or wrong."""


def parse_form(body: bytes) -> Fields:
    """Decode a form body into ``{key: [values...]}``, keys in first-occurrence order.

    Same result as ``urllib.parse.parse_qsl`` (strict UTF-8, blank values kept), three times as
    fast: separators are swapped for control bytes, then the whole body is percent-decoded in C by
    ``binascii.a2b_qp`` (``%`` turned into its ``=``). Where a2b_qp and percent-decoding differ (an
    escape that is not ``%`` and two hex digits, a raw CR or LF after one) or a control byte would be
    ambiguous (raw, or decoded from ``%00``/``%01``), the byte counts below do not add up and the body
    takes the reference path. Each valid escape turns three bytes into one; anything else a2b_qp does
    with an ``=`` removes fewer than two, so the length alone proves every escape was valid.
    """
    amps = body.count(b"&")
    if amps >= MAX_FIELDS or b"\r" in body or b"\n" in body:
        return _parse_form_reference(body)
    mapped = body.replace(b"+", b" ").replace(b"&", b"\x00").replace(b"=", b"\x01")
    escapes = body.count(b"%")
    raw = binascii.a2b_qp(mapped.replace(b"%", b"=")) if escapes else mapped
    if len(raw) != len(mapped) - 2 * escapes or raw.count(b"\x00") != amps or raw.count(b"\x01") != body.count(b"="):
        return _parse_form_reference(body)
    try:
        if not body.isascii():
            body.decode()  # raw bytes and escapes could make valid UTF-8 together; each must be valid
        text = raw.decode()
    except UnicodeDecodeError:
        raise FormError("invalid_utf8", "body is not valid UTF-8 (after percent-decoding)") from None
    fields: Fields = {}
    for part in text.split("\x00"):
        if not part:
            continue
        key, _, value = part.partition("\x01")
        if not key:
            raise FormError("malformed_body", "body has a field with an empty name")
        if "\x01" in value:
            value = value.replace("\x01", "=")
        if key in fields:
            fields[key].append(value)
        else:
            fields[key] = [value]
    if not fields:
        raise FormError("empty_body", "body has no form fields")
    return fields


def _parse_form_reference(body: bytes) -> Fields:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise FormError("invalid_utf8", "body is not valid UTF-8 (after percent-decoding)") from None
    except ValueError:
        raise FormError("too_many_fields", f"body has more than {MAX_FIELDS} fields") from None
    fields: Fields = {}
    for key, value in pairs:
        if not key:
            raise FormError("malformed_body", "body has a field with an empty name")
        fields.setdefault(key, []).append(value)
    if not fields:
        raise FormError("empty_body", "body has no form fields")
    return fields


def length_prefixed(values: Iterable[str]) -> bytes:
    """``len(utf8(v)) + utf8(v)`` for each value: the core of every 2Checkout HMAC.

    Built as one string and encoded once: for an ASCII value ``len(v)`` is its byte length, only
    the others ("Müller": 6 characters, 7 bytes) are measured encoded."""
    return "".join([f"{len(v) if v.isascii() else len(v.encode())}{v}" for v in values]).encode()


def signature_source(fields: Fields) -> bytes:
    """``length_prefixed`` over every value but the signatures', in one pass (a tenth faster than
    building the list of values first: the ingress computes it for every IPN and LCN)."""
    return "".join(
        [
            f"{len(v) if v.isascii() else len(v.encode())}{v}"
            for k, vs in fields.items()
            if k not in _SIGNATURE_NAMES
            for v in vs
        ]
    ).encode()


class _Mac(Protocol):
    def copy(self) -> _Mac: ...
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


# a keyed HMAC per (key, algorithm), copied for each message: the key is hashed into the inner and
# outer state once, not on every call. OpenSSL's object itself where the build has it (hmac.HMAC's
# copy() adds a Python wrapper: 2.0 against 3.6 µs for a receipt). The keys are the configured
# secrets (a few); a reload that changes them starts the cache again.
try:
    from _hashlib import hmac_new as _keyed_new
except ImportError:  # pragma: no cover - a Python built without OpenSSL
    _keyed_new = hmac.new  # type: ignore[assignment]
_KEYED: dict[tuple[bytes, str], _Mac] = {}
_KEYED_MAX = 64


def hmac_hex(algo: str, key: bytes, data: bytes) -> str:
    keyed = _KEYED.get((key, algo))
    if keyed is None:
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
        keyed = _KEYED[(key, algo)] = _keyed_new(key, digestmod=_DIGEST_NAME[algo])
    mac = keyed.copy()
    mac.update(data)
    return mac.hexdigest()


def verify_signed(
    fields: Fields, keys: Sequence[bytes], min_algo: str, source: bytes | None = None
) -> tuple[Algo, int]:
    """Check the strongest non-empty signature an IPN/LCN carries; return it and the index of the key
    that matched.

    ``keys`` holds one secret, or two during a key rotation. A signature field sent empty
    (``SIGNATURE_SHA3_256=``) counts as absent, as 2Checkout's own plugins and node SDK read it
    (``if (!$receivedHash)`` falls back to the next one; docs/protocol.md): the next one decides.
    """
    present: list[tuple[str, Algo, str]] = []
    empty: list[str] = []
    for name, algo in SIGNATURE_FIELDS:
        values = fields.get(name)
        if values is None:
            continue
        if len(values) != 1:
            raise SignatureError("duplicate_signature_field", f"{name} is sent {len(values)} times")
        if values[0] == "":
            if not present:  # named in a too-weak refusal: why a stronger one did not count
                empty.append(name)
            continue
        present.append((name, algo, values[0].strip().lower()))
    if not present:
        if empty:
            raise SignatureError("missing_signature", f"every signature field sent is empty ({', '.join(empty)})")
        raise SignatureError("missing_signature", "no HASH, SIGNATURE_SHA2_256 or SIGNATURE_SHA3_256 field in the body")
    name, algo, given = present[0]
    if STRENGTH[algo] < STRENGTH[min_algo]:
        raise SignatureError(
            "signature_too_weak",
            f"strongest signature is {algo} ({name}{''.join(f'; {e} is empty' for e in empty)});"
            f" this source requires {min_algo}",
        )
    if len(given) != _HEX_LEN[algo] or not _HEX_DIGITS.fullmatch(given):
        raise SignatureError("malformed_signature", f"{name} is not a {_HEX_LEN[algo]}-digit hex value")
    if source is None:
        source = signature_source(fields)
    for i, key in enumerate(keys):
        if hmac.compare_digest(hmac_hex(algo, key, source), given):
            return algo, i
    raise SignatureError("signature_mismatch", f"{name} ({algo}) does not match the configured secret key")


# the fields a receipt is computed over: a body without them was not meant for this channel's URL
_CHANNEL_FIELDS = {"ipn": ("IPN_DATE",), "lcn": ("LICENSE_CODE",)}


def require_channel_fields(channel: str, fields: Fields) -> None:
    for name in _CHANNEL_FIELDS.get(channel, ()):
        if name not in fields:
            raise FormError("missing_field", f"{channel.upper()} body has no {name}: is it posted to the right URL?")


def canonical(channel: str, fields: Fields, signed: bytes | None = None) -> bytes:
    """What identifies a notification: for IPN/LCN exactly what 2Checkout signs (the values, in order),
    for INS every field but md5_hash. Re-encodings of one notification (escapes, ``+`` for space,
    regrouped arrays, a dropped signature, a renamed field) map to the same bytes."""
    if channel == "ins":
        pairs = ((key, v) for key, values in fields.items() if key != "md5_hash" for v in values)
        return length_prefixed(x for pair in pairs for x in pair)
    return signed if signed is not None else signature_source(fields)


def receipt_date(now: datetime | None = None) -> str:
    """DATE for a read receipt: server time as YmdHis (UTC), formatted once a second."""
    if now is not None:
        return now.strftime("%Y%m%d%H%M%S")
    global _date_cache
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, time.strftime("%Y%m%d%H%M%S", time.gmtime(second)))
    return _date_cache[1]


_date_cache: tuple[int, str] = (0, "")


def _first(fields: Fields, *names: str) -> str:
    for name in names:
        values = fields.get(name)
        if values:
            return values[0]
    return ""


def format_receipt(algo: str, key: bytes, values: Sequence[str], date: str) -> str:
    digest = hmac_hex(algo, key, length_prefixed([*values, date]))
    if algo == "md5":
        return f"<EPAYMENT>{date}|{digest}</EPAYMENT>"
    return f'<sig algo="{algo}" date="{date}">{digest}</sig>'


def ipn_receipt(fields: Fields, key: bytes, algo: str, date: str) -> str:
    """HMAC over IPN_PID[0], IPN_PNAME[0], IPN_DATE and DATE, in the algorithm that was verified."""
    values = (
        _first(fields, "IPN_PID[]", "IPN_PID[0]", "IPN_PID"),
        _first(fields, "IPN_PNAME[]", "IPN_PNAME[0]", "IPN_PNAME"),
        _first(fields, "IPN_DATE"),
    )
    return format_receipt(algo, key, values, date)


def lcn_receipt(fields: Fields, key: bytes, algo: str, date: str) -> str:
    """HMAC over LICENSE_CODE, EXPIRATION_DATE and DATE ("and not all the parameters")."""
    values = (_first(fields, "LICENSE_CODE"), _first(fields, "EXPIRATION_DATE"))
    return format_receipt(algo, key, values, date)


def ins_hash(sale_id: str, seller_id: str, invoice_id: str, secret_word: str) -> str:
    return hashlib.md5(f"{sale_id}{seller_id}{invoice_id}{secret_word}".encode()).hexdigest().upper()


def verify_ins(fields: Fields, seller_id: str, secret_words: Sequence[str]) -> int:
    """Check an INS ``md5_hash``; return the index of the secret word that matched."""
    for name in ("md5_hash", "sale_id", "invoice_id"):
        values = fields.get(name)
        if not values:
            reason = "missing_signature" if name == "md5_hash" else "missing_field"
            raise SignatureError(reason, f"INS body has no {name}")
        if len(values) != 1:
            raise SignatureError("duplicate_signature_field", f"{name} is sent {len(values)} times")
    given = fields["md5_hash"][0].strip().upper()
    if len(given) != 32 or any(c not in "0123456789ABCDEF" for c in given):
        raise SignatureError("malformed_signature", "md5_hash is not a 32-digit hex value")
    sale_id, invoice_id = fields["sale_id"][0], fields["invoice_id"][0]
    for i, word in enumerate(secret_words):
        if hmac.compare_digest(ins_hash(sale_id, seller_id, invoice_id, word), given):
            return i
    raise SignatureError("signature_mismatch", "md5_hash does not match the configured secret word and seller id")


def facts(channel: str, fields: Fields) -> dict[str, str]:
    """The few fields the relay indexes and routes on; the body itself is kept verbatim."""
    if channel == "ipn":
        return {
            "ref": _first(fields, "REFNO"),
            "status": _first(fields, "ORDERSTATUS"),
            "mtype": _first(fields, "MESSAGE_TYPE"),
            "message_id": _first(fields, "MESSAGE_ID"),
            "license": _first(fields, "IPN_LICENSE_REF[]", "IPN_LICENSE_REF[0]"),
            "test": "1" if _first(fields, "TEST_ORDER") == "1" else "0",
            "email": _first(fields, "CUSTOMEREMAIL"),
        }
    if channel == "lcn":
        return {
            "ref": _first(fields, "LICENSE_CODE"),
            "status": _first(fields, "STATUS"),
            "mtype": _first(fields, "DISPATCH_REASON"),
            "message_id": _first(fields, "DATE_UPDATED"),
            "license": _first(fields, "LICENSE_CODE"),
            "test": "1" if _first(fields, "TEST") == "1" else "0",
            "email": _first(fields, "EMAIL"),
        }
    return {
        "ref": _first(fields, "sale_id"),
        "status": _first(fields, "invoice_status"),
        "mtype": _first(fields, "message_type"),
        "message_id": _first(fields, "message_id"),
        "license": "",
        "test": "1" if _first(fields, "demo").upper() in ("Y", "1") else "0",
        "email": _first(fields, "customer_email"),
    }
