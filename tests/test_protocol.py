"""Every vector in shared/vectors verifies; a one-byte change anywhere fails; receipts match."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay import protocol
from tests.support import vectors

SYNTH = vectors("synthetic.json")
REAL_IPN = vectors("real_ipn.json")
REAL_INS = vectors("real_ins.json")
DOCS = vectors("doc_examples.json")


def _ids(vs: list[dict[str, Any]]) -> list[str]:
    return [v["id"] for v in vs]


def _body(v: dict[str, Any]) -> bytes:
    return v["body"].encode() if "body" in v else urlencode([tuple(f) for f in v["fields"]]).encode()


SIGNED = [v for v in SYNTH["vectors"] + REAL_IPN["vectors"] if v["kind"] in ("ipn", "lcn") and v["secret_known"]]
INS = [v for v in SYNTH["vectors"] + REAL_INS["vectors"] if v["kind"] == "ins"]
RECEIPTS = [
    (v["id"], v["kind"], v.get("secret"), r, v)
    for v in SYNTH["vectors"] + REAL_IPN["vectors"]
    if v["kind"] in ("ipn", "lcn") and v["secret_known"]
    for r in v.get("receipts", [])
]


@pytest.mark.parametrize("v", SIGNED, ids=_ids(SIGNED))
def test_ipn_lcn_vectors_verify_with_every_signature(v: dict[str, Any]) -> None:
    fields = protocol.parse_form(_body(v))
    key = v["secret"].encode()
    if "hash_source_string" in v:
        assert protocol.signature_source(fields) == v["hash_source_string"].encode()
    for name, algo in protocol.SIGNATURE_FIELDS:
        if name in v["expected"]:
            assert protocol.hmac_hex(algo, key, protocol.signature_source(fields)) == v["expected"][name]
    algo, index = protocol.verify_signed(fields, [key], "md5")
    assert index == 0
    assert algo == ("sha3-256" if "SIGNATURE_SHA3_256" in v["expected"] else "md5")


@pytest.mark.parametrize("v", SIGNED, ids=_ids(SIGNED))
def test_one_changed_byte_in_any_value_fails(v: dict[str, Any]) -> None:
    pairs = [tuple(f) for f in v["fields"]]
    key = v["secret"].encode()
    checked = 0
    for i, (name, value) in enumerate(pairs):
        if name in ("HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256"):
            continue
        changed = value[:-1] + chr(ord(value[-1]) ^ 1) if value else "x"
        tampered = [*pairs[:i], (name, changed), *pairs[i + 1 :]]
        with pytest.raises(protocol.SignatureError) as exc:
            protocol.verify_signed(protocol.parse_form(urlencode(tampered).encode()), [key], "md5")
        assert exc.value.reason == "signature_mismatch"
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("v", SIGNED, ids=_ids(SIGNED))
def test_wrong_key_fails(v: dict[str, Any]) -> None:
    with pytest.raises(protocol.SignatureError, match="does not match"):
        protocol.verify_signed(protocol.parse_form(_body(v)), [v["secret"].encode() + b"x"], "md5")


def test_char_count_implementation_hash_is_rejected() -> None:
    v = next(v for v in SYNTH["vectors"] if v["id"] == "synthetic-ipn-multibyte-utf8")
    fields = protocol.parse_form(v["body"].encode())
    fields["HASH"] = [v["char_count_wrong_hash_md5"]]
    del fields["SIGNATURE_SHA2_256"], fields["SIGNATURE_SHA3_256"]
    with pytest.raises(protocol.SignatureError):
        protocol.verify_signed(fields, [v["secret"].encode()], "md5")


def test_grouping_probe_uses_first_occurrence_grouping() -> None:
    v = next(v for v in SYNTH["vectors"] if v["kind"] == "ipn_grouping_probe")
    fields = protocol.parse_form(urlencode([tuple(f) for f in v["fields"]]).encode())
    src = protocol.signature_source(fields)
    key = v["secret"].encode()
    for algo, expected in v["expected_grouped_like_php"].items():
        assert protocol.hmac_hex(algo, key, src) == expected


@pytest.mark.parametrize("case", RECEIPTS, ids=[f"{c[0]}-{c[3]['algo']}" for c in RECEIPTS])
def test_receipts_match_vectors(case: tuple[str, str, str, dict[str, Any], dict[str, Any]]) -> None:
    _, kind, secret, receipt, v = case
    fields = protocol.parse_form(_body(v))
    fn = protocol.ipn_receipt if kind == "ipn" else protocol.lcn_receipt
    got = fn(fields, secret.encode(), receipt["algo"], receipt["date"])
    if "expected_response" in receipt:
        assert got == receipt["expected_response"]
    assert receipt["expected_hash"] in got


@pytest.mark.parametrize(
    "v", DOCS["vectors"] + [x for x in REAL_IPN["vectors"] if x["kind"] == "ipn_receipt"], ids=lambda v: v["id"]
)
def test_documented_receipt_examples(v: dict[str, Any]) -> None:
    vals = v["values"]
    fields = {k.replace("[0]", "[]"): [val] for k, val in vals.items() if k != "DATE"}
    fn = protocol.ipn_receipt if v["kind"] == "ipn_receipt" else protocol.lcn_receipt
    assert fn(fields, v["secret"].encode(), "md5", vals["DATE"]) == v["expected_response"]
    for algo, digest in v.get("computed_not_published", {}).items():
        assert digest in fn(fields, v["secret"].encode(), algo, vals["DATE"])
    if "expected_source_string" in v:
        values = [*(fields[k][0] for k in fields), vals["DATE"]]
        assert protocol.length_prefixed(values) == v["expected_source_string"].encode()


@pytest.mark.parametrize("v", [x for x in REAL_IPN["vectors"] if x["kind"] == "hmac_raw"], ids=lambda v: v["id"])
def test_raw_hmac_vectors(v: dict[str, Any]) -> None:
    assert protocol.hmac_hex(v["algo"], v["secret"].encode(), v["source_string"].encode()) == v["expected_hash"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["md5", "sha256", "sha3-256"]), st.binary(max_size=200), st.binary(max_size=300)),
        min_size=1,
        max_size=20,
    )
)
def test_keyed_hmacs_are_hmac_new_for_every_key_and_algorithm(calls: list[tuple[str, bytes, bytes]]) -> None:
    # the keyed objects are cached per (key, algorithm) and copied per message: interleaved keys and
    # algorithms (a rotation, the receipt after the check) never leak state into one another
    names = {"md5": hashlib.md5, "sha256": hashlib.sha256, "sha3-256": hashlib.sha3_256}
    for algo, key, data in calls * 2:
        assert protocol.hmac_hex(algo, key, data) == hmac.new(key, data, names[algo]).hexdigest()


def test_keyed_hmac_cache_stays_bounded() -> None:
    for i in range(3 * protocol._KEYED_MAX):
        key = f"key-{i}".encode()
        assert protocol.hmac_hex("sha256", key, b"x") == hmac.new(key, b"x", hashlib.sha256).hexdigest()
    assert len(protocol._KEYED) <= protocol._KEYED_MAX


def test_unverifiable_real_ipns_parse_and_fail_cleanly() -> None:
    for v in (x for x in REAL_IPN["vectors"] if x["kind"] == "ipn" and not x["secret_known"]):
        fields = protocol.parse_form(_body(v))
        with pytest.raises(protocol.SignatureError) as exc:
            protocol.verify_signed(fields, [b"not-the-key"], "md5")
        assert exc.value.reason == "signature_mismatch"
        assert protocol.facts("ipn", fields)["ref"] == dict(map(tuple, v["fields"]))["REFNO"]


@pytest.mark.parametrize("v", INS, ids=_ids(INS))
def test_ins_vectors(v: dict[str, Any]) -> None:
    fields = protocol.parse_form(_body(v))
    seller = v.get("vendor_id_for_hash") or fields["vendor_id"][0]
    if v.get("expect_pass", True):
        assert protocol.verify_ins(fields, seller, [v["secret"]]) == 0
        tampered = dict(fields, sale_id=[fields["sale_id"][0] + "1"])
        with pytest.raises(protocol.SignatureError):
            protocol.verify_ins(tampered, seller, [v["secret"]])
    else:
        with pytest.raises(protocol.SignatureError):
            protocol.verify_ins(fields, seller, [v["secret"]])


def test_ins_hash_is_plain_uppercase_md5() -> None:
    expected = hashlib.md5(b"123tango").hexdigest().upper()  # not an HMAC
    assert protocol.ins_hash("1", "2", "3", "tango") == expected
    assert protocol.ins_hash("1", "2", "3", "tango") != hmac.new(b"tango", b"123", "md5").hexdigest().upper()


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"", "empty_body"), (b"a=%ff", "invalid_utf8"), (b"\xff=1", "invalid_utf8"), (b"=x", "malformed_body")],
)
def test_malformed_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(protocol.FormError) as exc:
        protocol.parse_form(body)
    assert exc.value.reason == reason


def test_signature_rules() -> None:
    fields = protocol.parse_form(b"REFNO=1&HASH=abc")
    with pytest.raises(protocol.SignatureError, match="hex") as exc:
        protocol.verify_signed(fields, [b"k"], "md5")
    assert exc.value.reason == "malformed_signature"
    with pytest.raises(protocol.SignatureError) as exc:
        protocol.verify_signed(protocol.parse_form(b"REFNO=1"), [b"k"], "md5")
    assert exc.value.reason == "missing_signature"
    md5 = protocol.hmac_hex("md5", b"k", protocol.length_prefixed(["1"]))
    with pytest.raises(protocol.SignatureError) as exc:
        protocol.verify_signed(protocol.parse_form(f"REFNO=1&HASH={md5}".encode()), [b"k"], "sha256")
    assert exc.value.reason == "signature_too_weak"
    assert protocol.verify_signed(protocol.parse_form(f"REFNO=1&HASH={md5.upper()}".encode()), [b"k"], "md5")
    with pytest.raises(protocol.SignatureError) as exc:
        protocol.verify_signed(protocol.parse_form(f"REFNO=1&HASH={md5}&HASH={md5}".encode()), [b"k"], "md5")
    assert exc.value.reason == "duplicate_signature_field"
    # rotation: the second key matches and is reported as such
    assert protocol.verify_signed(protocol.parse_form(f"REFNO=1&HASH={md5}".encode()), [b"old", b"k"], "md5")[1] == 1


def test_empty_and_zero_values_prefix_as_documented() -> None:
    assert protocol.length_prefixed(["", "0", "Müller"]) == b"010" + b"7M\xc3\xbcller"


form_text = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=12)), max_size=8).map(
    lambda pairs: "&".join(f"{quote_plus(a)}={quote_plus(b)}" for a, b in pairs).encode()
)
raw_bytes = st.binary(max_size=80)
mixed = st.lists(
    st.sampled_from(
        [
            b"a",
            b"=",
            b"&",
            b"+",
            b"%",
            b"%2",
            b"%26",
            b"%3D",
            b"%C3",
            b"%BC",
            b"%00",
            b"\x00",
            b"\x01",
            b"%01",
            b"\xc3\xbc",
            b"\xff",
            b"%zz",
            b"b",
            b" ",
            # what binascii.a2b_qp (the fast path's decoder) reads differently
            b"%%",
            b"\r",
            b"\n",
            b"%\r",
            b"%\n",
            b"%4",
            b"%41",
            b"%a",
            b"%F",
            b"%3d",
            b"%2B",
            b"%0",
            b"%0D%0A",
            b"==",
            b"%E2%82%AC",
            b"\x80",
            b"x",
        ]
    ),
    max_size=24,
).map(b"".join)


def _outcome(fn: Any, body: bytes) -> Any:
    try:
        return fn(body)
    except protocol.FormError as exc:
        return ("error", exc.reason)


# 500 bodies in the fast tier (~2 s); make test also runs 3000 (~12 s)
@pytest.mark.parametrize("examples", [500, pytest.param(3000, marks=pytest.mark.slow)])
def test_fast_form_parser_agrees_with_parse_qsl(examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(st.one_of(form_text, raw_bytes, mixed))
    def agrees(body: bytes) -> None:
        assert _outcome(protocol.parse_form, body) == _outcome(protocol._parse_form_reference, body)

    agrees()


signed_pairs = st.lists(
    st.tuples(
        st.sampled_from(["A", "IPN_PID[]", "IPN_PNAME[]", "HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256", "b"]),
        st.text(max_size=10),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=500, deadline=None)
@given(signed_pairs)
def test_signature_source_is_the_grouped_values_length_prefixed(pairs: list[tuple[str, str]]) -> None:
    # what PHP's $_POST gives the SDKs: repeated keys grouped at their first occurrence, in order;
    # each value prefixed by its length in UTF-8 bytes; the three signature fields left out
    body = urlencode(pairs).encode()
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    expected = b"".join(
        str(len(v.encode())).encode() + v.encode()
        for key, values in grouped.items()
        if key not in ("HASH", "SIGNATURE_SHA2_256", "SIGNATURE_SHA3_256")
        for v in values
    )
    assert protocol.signature_source(protocol.parse_form(body)) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"&" * protocol.MAX_FIELDS + b"a=b",  # parse_qsl counts every separator, empty fields too
        b"a=b&" * (protocol.MAX_FIELDS - 1) + b"a=b",
        b"a=b&" * protocol.MAX_FIELDS + b"a=b",
        b"NAME=J%C3%BCrgen+M%C3%BCller&X=%3D%26%25&Y=a=b=c&&Z",
        b"%0b%C3\x80",  # an escape and a raw byte make valid UTF-8 together: the raw body is not
    ],
)
def test_fast_form_parser_agrees_at_the_edges(body: bytes) -> None:
    assert _outcome(protocol.parse_form, body) == _outcome(protocol._parse_form_reference, body)
