"""``relay send-test``: post a signed TEST notification to a running relay, then follow its deliveries.

The notification is built and signed exactly as 2Checkout would (IPN and LCN with all three signature
fields, INS with its md5_hash), flagged as a test (TEST_ORDER=1, TEST=1, demo=Y) and unique, so the
relay stores it instead of treating it as a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import urlencode

import aiohttp
from redis.asyncio import Redis

from config.settings import CHANNELS, ConfigError, Settings, Source, http_base
from relay import __version__, protocol
from relay import constants as k
from relay.cli import devsecrets
from relay.cli.common import Commands, base_url, message_type, positive, settings_from
from relay.cli.output import clean
from relay.store.connection import REDIS_ERRORS, connect, redis_url
from relay.store.ingest import notification_id

commands = Commands()

TERMINAL = frozenset({"delivered", "failed", "skipped"})
DEFAULT_TYPES = {"ipn": "COMPLETE", "lcn": "LICENCE_CHANGE", "ins": "ORDER_CREATED"}
SIGNATURE_NAMES = {"md5": "HASH", "sha256": "SIGNATURE_SHA2_256", "sha3-256": "SIGNATURE_SHA3_256"}
POLL_S = 0.1
_SIG_RECEIPT = re.compile(r'<sig algo="(sha256|sha3-256)" date="(\d{14})">[0-9a-fA-F]+</sig>')
_MD5_RECEIPT = re.compile(r"<EPAYMENT>(\d{14})\|[0-9a-fA-F]{32}</EPAYMENT>")

Pairs = list[tuple[str, str]]


class SendTestError(Exception):
    """The test could not be sent or its receipt is wrong; the message says why."""


def fill_from_dev_secrets(env: MutableMapping[str, str]) -> list[str]:
    """Take unset secret variables from the file ``relay dev`` writes; never generate any."""
    try:
        stored = json.loads(devsecrets.SECRETS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(stored, dict):
        return []
    filled = sorted(var for var, value in stored.items() if isinstance(value, str) and value and not env.get(var))
    for var in filled:
        env[var] = stored[var]
    return filled


def _ipn(mtype: str, now: datetime, ref: str) -> Pairs:
    return [
        ("GIFT_ORDER", "0"),
        ("SALEDATE", now.strftime("%Y-%m-%d %H:%M:%S")),
        ("PAYMENTDATE", now.strftime("%Y-%m-%d %H:%M:%S")),
        ("REFNO", ref),
        ("REFNOEXT", "relay-send-test"),
        ("ORDERNO", ref[-4:]),
        ("ORDERSTATUS", mtype),
        ("PAYMETHOD", "Visa/MasterCard"),
        ("PAYMETHOD_CODE", "CCVISAMC"),
        ("FIRSTNAME", "Test"),
        ("LASTNAME", "Müller"),
        ("COMPANY", ""),
        ("ADDRESS1", "1 Test Street"),
        ("CITY", "Testville"),
        ("ZIPCODE", "00000"),
        ("COUNTRY", "United States"),
        ("COUNTRY_CODE", "us"),
        ("CUSTOMEREMAIL", "test@example.com"),
        ("LANGUAGE", "en"),
        ("IPN_PID[]", "1000001"),
        ("IPN_PNAME[]", "Relay Test Product"),
        ("IPN_PCODE[]", "RELAY-TEST"),
        ("IPN_QTY[]", "1"),
        ("IPN_PRICE[]", "10.00"),
        ("IPN_VAT[]", "0.00"),
        ("IPN_VER[]", "1"),
        ("IPN_DISCOUNT[]", "0.00"),
        ("IPN_PROMONAME[]", ""),
        ("IPN_DELIVEREDCODES[]", ""),
        ("IPN_TOTAL[]", "10.00"),
        ("IPN_TOTALGENERAL", "10.00"),
        ("IPN_SHIPPING", "0.00"),
        ("IPN_COMMISSION", "0.50"),
        ("CURRENCY", "USD"),
        ("IPN_DATE", now.strftime("%Y%m%d%H%M%S")),
        ("MESSAGE_ID", ref),
        ("MESSAGE_TYPE", mtype),
        ("TEST_ORDER", "1"),
    ]


def _lcn(mtype: str, now: datetime, ref: str) -> Pairs:
    return [
        ("FIRST_NAME", "Test"),
        ("LAST_NAME", "Müller"),
        ("COMPANY", ""),
        ("EMAIL", "test@example.com"),
        ("PHONE", ""),
        ("FAX", ""),
        ("COUNTRY", "United States"),
        ("STATE", ""),
        ("CITY", "Testville"),
        ("ZIP", "00000"),
        ("ADDRESS", "1 Test Street"),
        ("LICENSE_CODE", f"RELAYTEST{ref}"),
        ("EXPIRATION_DATE", now.replace(year=now.year + 1).strftime("%Y-%m-%d %H:%M:%S")),
        ("DATE_UPDATED", now.strftime("%Y-%m-%d %H:%M:%S")),
        ("AVANGATE_CUSTOMER_REFERENCE", ref),
        ("EXTERNAL_CUSTOMER_REFERENCE", "relay-send-test"),
        ("TEST", "1"),
        ("CHANGED_BY", "SYSTEM"),
        ("LICENSE_TYPE", "REGULAR"),
        ("DISABLED", "0"),
        ("RECURRING", "1"),
        ("STATUS", "ACTIVE"),
        ("LICENSE_PRODUCT_CODE", "RELAY-TEST"),
        ("DISPATCH_REASON", mtype),
    ]


def _ins(mtype: str, now: datetime, ref: str, source: Source, word: str) -> Pairs:
    assert source.seller_id is not None
    sale_id, invoice_id = f"9{ref}", f"8{ref}"
    return [
        ("message_type", mtype),
        ("message_description", "Relay send-test notification"),
        ("timestamp", now.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("md5_hash", protocol.ins_hash(sale_id, source.seller_id, invoice_id, word)),
        ("message_id", ref),
        ("key_count", "30"),
        ("vendor_id", source.seller_id),
        ("sale_id", sale_id),
        ("sale_date_placed", now.strftime("%Y-%m-%d %H:%M:%S")),
        ("vendor_order_id", "relay-send-test"),
        ("invoice_id", invoice_id),
        ("recurring", "0"),
        ("payment_type", "credit card"),
        ("list_currency", "USD"),
        ("cust_currency", "USD"),
        ("invoice_status", "deposited"),
        ("fraud_status", "pass"),
        ("invoice_list_amount", "10.00"),
        ("invoice_usd_amount", "10.00"),
        ("invoice_cust_amount", "10.00"),
        ("customer_first_name", "Test"),
        ("customer_last_name", "Müller"),
        ("customer_name", "Test Müller"),
        ("customer_email", "test@example.com"),
        ("item_count", "1"),
        ("item_name_1", "Relay Test Product"),
        ("item_id_1", "RELAY-TEST"),
        ("item_list_amount_1", "10.00"),
        ("item_type_1", "bill"),
        ("demo", "Y"),
    ]


def build(
    channel: str, source: Source, message_type: str | None = None, now: datetime | None = None, ref: str | None = None
) -> bytes:
    """A signed TEST notification body for ``channel``, as ``source`` would receive it from 2Checkout."""
    now = now or datetime.now(UTC)
    ref = ref or f"{secrets.randbelow(10**9):09d}"
    mtype = message_type or DEFAULT_TYPES[channel]
    if channel == "ins":
        if source.ins_secret_word is None or source.seller_id is None:
            raise ConfigError(
                f"source {source.name!r} does not accept INS: it needs ins_secret_word_env "
                "(set that variable) and seller_id"
            )
        return urlencode(_ins(mtype, now, ref, source, source.ins_secret_word.reveal())).encode()
    if source.secret_key is None:
        raise ConfigError(
            f"source {source.name!r} has no IPN/LCN secret key: set the variable its secret_key_env names"
        )
    pairs = _ipn(mtype, now, ref) if channel == "ipn" else _lcn(mtype, now, ref)
    key = source.secret_key.reveal().encode()
    src = protocol.signature_source(_group(pairs))
    pairs += [(name, protocol.hmac_hex(algo, key, src)) for algo, name in SIGNATURE_NAMES.items()]
    return urlencode(pairs).encode()


def _group(pairs: Pairs) -> protocol.Fields:
    fields: protocol.Fields = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


def verify_receipt(channel: str, source: Source, body: bytes, text: str) -> str:
    """Check the relay's answer is the read receipt 2Checkout expects; return what was verified."""
    if channel == "ins":
        if text.strip() != "OK":
            raise SendTestError(f"expected the INS answer 'OK', got {text.strip()[:200]!r}")
        return "INS answer OK"
    assert source.secret_key is not None
    fields = protocol.parse_form(body)
    key = source.secret_key.reveal().encode()
    receipt_of = protocol.ipn_receipt if channel == "ipn" else protocol.lcn_receipt
    if m := _SIG_RECEIPT.search(text):
        algo, date = m.group(1), m.group(2)
    elif m := _MD5_RECEIPT.search(text):
        algo, date = "md5", m.group(1)
    else:
        raise SendTestError(f"no read receipt in the answer: {text.strip()[:200]!r}")
    if m.group(0) != receipt_of(fields, key, algo, date):
        raise SendTestError(f"the read receipt does not verify with the source's secret key: {m.group(0)}")
    return f"{channel.upper()} read receipt verified ({algo})"


def listener_url(settings: Settings, channel: str, source: str, base: str | None) -> str:
    if base is None:
        host = settings.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
        base = http_base(host, settings.server.port)
    path = f"/{channel}" if source == "default" else f"/{channel}/{source}"
    return base.rstrip("/") + path


def _describe(state: str, attempts: str, last: str, reason: str, nxt: str, now_ms: int) -> str:
    if state == "skipped":
        return f"skipped: {reason or 'filtered out'}"
    if state == "retrying":
        wait = f", next try in {max(0, int(nxt) - now_ms) / 1000:.0f} s" if nxt else ""
        return f"retrying after attempt {attempts}: {last or 'failed'}{wait}"
    if state == "in_flight":
        return f"in_flight (attempt {attempts})"
    if state in ("delivered", "failed"):
        return f"{state} after {attempts} attempt(s): {last}" if last else state
    return state


async def follow(redis: Redis, nid: str, timeout: float, out: TextIO) -> dict[str, str]:
    """Print each delivery state change until all are final or ``timeout`` passes; return the states."""
    start = time.monotonic()
    eps: list[str] | None = None
    shown: dict[str, str] = {}
    states: dict[str, str] = {}
    while True:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hget(k.notification(nid), "eps")
            for ep in eps or []:
                pipe.hmget(k.delivery(nid, ep), ["state", "attempts", "last", "reason", "next"])
            raw_eps, *rows = await pipe.execute()
        if eps is None and raw_eps is not None:
            eps = [ep for ep in raw_eps.decode().split(",") if ep]
            if not eps:
                print("  no endpoint is configured for this source and channel", file=out, flush=True)
                return {}
            continue
        if eps is None and not shown:
            shown[""] = "routing"
            print(
                f"  {time.monotonic() - start:6.2f}s  waiting for a worker to route it to its endpoints",
                file=out,
                flush=True,
            )
        now_ms = int(time.time() * 1000)
        for ep, row in zip(eps or [], rows, strict=True):
            state, attempts, last, reason, nxt = ((v or b"").decode() for v in row)
            states[ep] = state or "pending"
            # a line per change of state, never per tick: the retry countdown is said once, when the
            # retry is scheduled, not again each time it would read a second less
            change = "|".join((states[ep], attempts, last, reason, nxt))
            if shown.get(ep) != change:
                shown[ep] = change
                line = _describe(states[ep], attempts or "0", last, reason, nxt, now_ms)
                print(f"  {time.monotonic() - start:6.2f}s  {clean(ep)}: {clean(line)}", file=out, flush=True)
        if states and all(s in TERMINAL for s in states.values()):
            return states
        if time.monotonic() - start > timeout:
            print(f"  gave up following after {timeout:g} s", file=out, flush=True)
            return states
        await asyncio.sleep(POLL_S)


async def post(url: str, body: bytes) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": f"relay-send-test/{__version__}"}
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as resp,
        ):
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SendTestError(
            f"cannot reach the relay at {url} ({type(exc).__name__}: {exc}); is `relay serve` or `relay dev` running?"
        ) from exc


async def run(
    settings: Settings,
    *,
    channel: str,
    source: str = "default",
    message_type: str | None = None,
    base_url: str | None = None,
    timeout: float = 30.0,
    out: TextIO,
) -> int:
    """Send one TEST notification and follow it; 0 when every delivery was delivered (or skipped by a filter)."""
    src = settings.sources.get(source)
    if src is None:
        raise ConfigError(f"send-test: source {source!r} is not configured (known: {', '.join(settings.sources)})")
    body = build(channel, src, message_type)
    url = listener_url(settings, channel, source, base_url)
    nid = notification_id(source, channel, body)
    print(f"POST {url} ({channel.upper()}, source {source}, {len(body)} bytes, TEST)", file=out, flush=True)
    if not await _sent(url, channel, src, body, out):
        return 1
    redis = connect(redis_url(settings), timeout=settings.server.redis_timeout)
    try:
        if not await redis.exists(k.notification(nid)):
            print(
                f"send-test: notification {nid} is not in the Redis this command reads; does it use the "
                "relay's REDIS_URL?",
                file=out,
                flush=True,
            )
            return 1
        print(f"notification {nid}; deliveries:", file=out, flush=True)
        states = await follow(redis, nid, timeout, out)
    except REDIS_ERRORS as exc:
        print(f"send-test: cannot read Redis ({type(exc).__name__}: {exc})", file=out, flush=True)
        return 1
    finally:
        await redis.aclose()
    return _verdict(states, out)


async def _sent(url: str, channel: str, src: Source, body: bytes, out: TextIO) -> bool:
    """POST the notification; whether the relay answered 200 with the receipt 2Checkout expects."""
    try:
        status, text = await post(url, body)
        print(f"HTTP {status}: {clean(text.strip())}", file=out, flush=True)
        if status != 200:
            raise SendTestError(f"the relay refused the notification (HTTP {status})")
        print(verify_receipt(channel, src, body, text), file=out, flush=True)
    except SendTestError as exc:
        print(f"send-test: {exc}", file=out, flush=True)
        return False
    return True


def _verdict(states: dict[str, str], out: TextIO) -> int:
    """0 when every delivery was delivered or skipped: a delivery an endpoint's filters skipped is what
    the configuration asks for, not a failure."""
    ok = bool(states) and all(s in ("delivered", "skipped") for s in states.values())
    skipped = sum(1 for s in states.values() if s == "skipped")
    if ok:
        print(
            "all delivered" + (f" ({skipped} skipped by endpoint filters, as configured)" if skipped else ""),
            file=out,
            flush=True,
        )
    else:
        print("not all delivered", file=out, flush=True)
    return 0 if ok else 1


# -- relay send-test ------------------------------------------------------------------------------


def _send_test_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--channel", choices=CHANNELS, default="ipn", help="notification type (default ipn)")
    p.add_argument("--source", default="default", help="configured source to sign for (default: default)")
    p.add_argument(
        "--message-type",
        type=message_type,
        metavar="TYPE",
        help="MESSAGE_TYPE (IPN), DISPATCH_REASON (LCN) or message_type (INS)",
    )
    p.add_argument(
        "--url", type=base_url, metavar="BASE", help="the relay's base URL (default http://[server] host:port)"
    )
    p.add_argument(
        "--timeout",
        type=positive,
        default=30.0,
        metavar="SECONDS",
        help="how long to follow the deliveries (default 30)",
    )


@commands.add(
    "send-test", "post a signed TEST notification to the running relay and follow its deliveries", _send_test_args
)
def send_test(ns: argparse.Namespace) -> int:

    filled = fill_from_dev_secrets(os.environ)
    settings = settings_from(ns, require_secrets=False)
    # name only what signs this test (the source's key, or its INS word), not every variable of the file
    source = next((s for s in settings.file.sources if s.name == ns.source), None)
    signer = (source.ins_secret_word_env if ns.channel == "ins" else source.secret_key_env) if source else None
    if source is not None and signer is not None and not os.environ.get(signer):
        key = "ins_secret_word_env" if ns.channel == "ins" else "secret_key_env"
        what = ns.channel.upper()
        raise ConfigError(f"{signer} is not set (source {source.name!r}, {key}): it signs the test {what}")
    used = [var for var in filled if var == signer]
    if used:
        print(
            f"send-test: using the development secrets in {devsecrets.SECRETS_FILE} for {', '.join(used)}",
            file=sys.stderr,
        )
    return asyncio.run(
        run(
            settings,
            channel=ns.channel,
            source=ns.source,
            message_type=ns.message_type,
            base_url=ns.url,
            timeout=ns.timeout,
            out=sys.stdout,
        )
    )
