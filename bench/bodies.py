"""Signed IPN bodies like the ones 2Checkout posts: about 1.5 KB, three signatures, varied content.

The signing is written here again from the protocol description (length-prefixed UTF-8 values, in
order, repeated keys grouped at their first occurrence, signature fields excluded) rather than
imported from ``relay.protocol``, so the relay accepting these bodies is an independent check.

Bodies are made while the load runs, so making one must cost little next to serving it: each of a
few dozen templates is encoded once, and per body only the numbered fields are formatted and the
three HMACs computed (about 30 µs).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from urllib.parse import quote_plus, urlencode

Pairs = list[tuple[str, str]]

SIGNATURE_NAMES = ("HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256")
_ALGOS = (("HASH", hashlib.md5), ("SIGNATURE_SHA2_256", hashlib.sha256), ("SIGNATURE_SHA3_256", hashlib.sha3_256))

# most customers have ASCII names; some do not, and the signature counts UTF-8 bytes
_NAMES = (
    ("John", "Smith"),
    ("Jürgen", "Müller"),
    ("Anna", "Kowalska"),
    ("太郎", "東京"),
    ("Maria", "García"),
    ("Olivier", "Lefèvre"),
    ("Emily", "Brown"),
    ("Søren", "Østergaard"),
)
_PRODUCTS = ("Backup Suite Pro", "Müller Tool – 東京 Edition", "Cloud Sync (1 year)", "Antivirus Plus")
_STATUSES = ("COMPLETE", "PENDING", "PAYMENT_AUTHORIZED", "COMPLETE", "REFUND", "COMPLETE")
TEMPLATES = 48


def signature_source(pairs: Pairs) -> bytes:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        if key not in SIGNATURE_NAMES:
            grouped.setdefault(key, []).append(value)
    return b"".join(_prefixed(v) for values in grouped.values() for v in values)


def _prefixed(value: str) -> bytes:
    raw = value.encode()
    return str(len(raw)).encode() + raw


def sign(pairs: Pairs, key: bytes) -> bytes:
    """The form body with HASH, SIGNATURE_SHA2_256 and SIGNATURE_SHA3_256 appended (reference version)."""
    src = signature_source(pairs)
    sigs = [(name, hmac.new(key, src, digest).hexdigest()) for name, digest in _ALGOS]
    return urlencode([*pairs, *sigs]).encode()


def template_pairs(variant: int) -> Pairs:
    """The fields of one template; values holding ``{n}`` or ``{ref}`` differ per notification."""
    rnd = random.Random(variant)
    first, last = _NAMES[variant % len(_NAMES)]
    status = _STATUSES[(variant // len(_NAMES)) % len(_STATUSES)]
    pairs: Pairs = [
        ("GIFT_ORDER", "0"),
        ("SALEDATE", "2024-01-02 02:58:11"),
        ("PAYMENTDATE", "2024-01-02 02:59:40"),
        ("REFNO", "{ref}"),
        ("REFNOEXT", "EXT-{n}"),
        ("ORDERNO", "{n}"),
        ("ORDERSTATUS", status),
        ("PAYMETHOD", "Visa/MasterCard"),
        ("PAYMETHOD_CODE", "CCVISAMC"),
        ("FIRSTNAME", first),
        ("LASTNAME", last),
        ("COMPANY", "Example GmbH"),
        ("ADDRESS1", f"{rnd.randrange(1, 200)} Hauptstraße"),
        ("CITY", "München"),
        ("STATE", "Bayern"),
        ("ZIPCODE", "80331"),
        ("COUNTRY", "Germany"),
        ("COUNTRY_CODE", "de"),
        ("PHONE", "+49 89 1234567"),
        ("CUSTOMEREMAIL", "customer{n}@example.com"),
        ("IPADDRESS", "192.0.2.10"),
        ("CURRENCY", "EUR"),
        ("LANGUAGE", "de"),
    ]
    for i in range(2):
        pid = str(40_898_000 + rnd.randrange(1000))
        pairs += [
            ("IPN_PID[]", pid),
            ("IPN_PNAME[]", _PRODUCTS[(variant + i) % len(_PRODUCTS)]),
            ("IPN_PCODE[]", f"SKU-{pid}"),
            ("IPN_QTY[]", str(1 + i)),
            ("IPN_PRICE[]", "49.90"),
            ("IPN_VAT[]", "9.48"),
            ("IPN_VER[]", "2"),
            ("IPN_DISCOUNT[]", "0.00"),
            ("IPN_LICENSE_REF[]", f"LIC{{n}}{i}"),
            ("IPN_LICENSE_TYPE[]", "REGULAR"),
            ("IPN_LICENSE_EXP[]", "2025-01-02 02:58:11"),
        ]
    pairs += [
        ("IPN_TOTALGENERAL", "118.76"),
        ("IPN_SHIPPING", "0.00"),
        ("IPN_COMMISSION", "7.12"),
        ("MESSAGE_ID", "{n}"),
        ("MESSAGE_TYPE", status),
        ("TEST_ORDER", "1"),
        ("IPN_DATE", "20240102030011"),
    ]
    return pairs


class Template:
    """One template, pre-encoded: fixed parts are bytes, numbered parts are format strings."""

    def __init__(self, pairs: Pairs) -> None:
        self.body_parts: list[bytes | tuple[str, str]] = []
        for key, value in pairs:
            if "{" in value:
                self.body_parts.append((quote_plus(key), value))
            else:
                self.body_parts.append(urlencode([(key, value)]).encode())
        grouped: dict[str, list[str]] = {}
        for key, value in pairs:
            grouped.setdefault(key, []).append(value)
        self.src_parts: list[bytes | str] = [
            value if "{" in value else _prefixed(value) for values in grouped.values() for value in values
        ]

    def render(self, key: bytes, n: int, ref: int) -> bytes:
        def fill(fmt: str) -> str:
            return fmt.format(n=n, ref=ref)

        src = b"".join(p if isinstance(p, bytes) else _prefixed(fill(p)) for p in self.src_parts)
        parts = [p if isinstance(p, bytes) else f"{p[0]}={quote_plus(fill(p[1]))}".encode() for p in self.body_parts]
        parts += [f"{name}={hmac.new(key, src, digest).hexdigest()}".encode() for name, digest in _ALGOS]
        return b"&".join(parts)


class BodySource:
    """An endless sequence of signed bodies; every ``dup_every``-th one repeats a recent body.

    ``seed`` keeps runs apart: each seed has its own REFNO and MESSAGE_ID range.
    """

    def __init__(self, key: bytes, seed: int, dup_every: int = 20) -> None:
        self.key = key
        self.seed = seed
        self.dup_every = dup_every
        self.sent = 0
        self.templates = [Template(template_pairs(v)) for v in range(TEMPLATES)]
        self._recent: list[bytes] = []

    def next(self) -> bytes:
        self.sent += 1
        if self.dup_every and self._recent and self.sent % self.dup_every == 0:
            return self._recent[self.sent % len(self._recent)]
        n = self.seed * 10_000_000 + self.sent
        body = self.templates[self.sent % TEMPLATES].render(self.key, n, 200_000_000_000 + n)
        if len(self._recent) < 64:
            self._recent.append(body)
        else:
            self._recent[self.sent % 64] = body
        return body
