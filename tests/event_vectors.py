"""Writes tests/vectors/events.json: signed notifications for each typed-event case of docs/events.md.

Each case is built from a documented field set (the real IPN of 2Checkout's SDK fixtures, the real
public LCN, the legacy INS 1.1 examples), changed only where the case needs it, and signed as
2Checkout signs: HMAC MD5 / SHA-256 / SHA3-256 with the synthetic secret key for IPN and LCN, the
INS md5_hash with the synthetic secret word. ``rests_on`` names the document or plugin the expected
type comes from. Run ``python -m tests.event_vectors`` after changing a case; the tests read
the JSON, not this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relay import protocol

SECRET_KEY = "SYNTH-secret_KEY/2024+"
INS_WORD = "tango"
SELLER_ID = "1817037"
OUT = Path(__file__).resolve().parent / "vectors" / "events.json"

# 2Checkout/VirtueMart-2Checkout @cd2f2aa twocheckout_convert/twocheckout_convert/tests/helper/TcoTest.php
# ($params_valid_ipn_mock; the same IPN in the plugin's other two TcoTest.php): a real PENDING IPN of 2020-08-04,
# before payment, in its field order (arrays of one element as NAME[] pairs), without its HASH, which
# VIRTUEMART_HASH is: HMAC-MD5 with the key VIRTUEMART_KEY, as the plugin's testIpnResponseValid checks
VIRTUEMART_IPN: list[tuple[str, str]] = [
    ("GIFT_ORDER", "0"),
    ("SALEDATE", "2020-08-04 16:37:50"),
    ("PAYMENTDATE", "0000-00-00 00:00:00"),
    ("REFNO", "129611332"),
    ("REFNOEXT", "80"),
    ("ORIGINAL_REFNOEXT[]", ""),
    ("SHOPPER_REFERENCE_NUMBER", ""),
    ("ORDERNO", "0"),
    ("ORDERSTATUS", "PENDING"),
    ("PAYMETHOD", "Visa/MasterCard"),
    ("PAYMETHOD_CODE", "CCVISAMC"),
    ("FIRSTNAME", "John"),
    ("LASTNAME", "Doe"),
    ("COMPANY", ""),
    ("REGISTRATIONNUMBER", ""),
    ("FISCALCODE", ""),
    ("TAX_OFFICE", ""),
    ("CBANKNAME", ""),
    ("CBANKACCOUNT", ""),
    ("ADDRESS1", "Dimitrie Pompeiu 10A"),
    ("ADDRESS2", ""),
    ("CITY", "Bucharest"),
    ("STATE", "B"),
    ("ZIPCODE", "020337"),
    ("COUNTRY", "Romania"),
    ("COUNTRY_CODE", "ro"),
    ("PHONE", "+40770789899"),
    ("FAX", ""),
    ("CUSTOMEREMAIL", "cosmin.panait@2checkout.com"),
    ("FIRSTNAME_D", "John"),
    ("LASTNAME_D", "Doe"),
    ("COMPANY_D", ""),
    ("ADDRESS1_D", "Dimitrie Pompeiu 10A"),
    ("ADDRESS2_D", ""),
    ("CITY_D", "Bucharest"),
    ("STATE_D", "B"),
    ("ZIPCODE_D", "020337"),
    ("COUNTRY_D", "Romania"),
    ("COUNTRY_D_CODE", "ro"),
    ("PHONE_D", "+40770789899"),
    ("EMAIL_D", "cosmin.panait@2checkout.com"),
    ("IPADDRESS", "127.0.0.1"),
    ("IPCOUNTRY", ""),
    ("COMPLETE_DATE", "0000-00-00 00:00:00"),
    ("TIMEZONE_OFFSET", "GMT+03:00"),
    ("CURRENCY", "EUR"),
    ("LANGUAGE", "en"),
    ("ORDERFLOW", "REGULAR"),
    ("IPN_PID[]", "31126410"),
    ("IPN_PNAME[]", "Woocomerce 2CO connector"),
    ("IPN_PCODE[]", ""),
    ("IPN_EXTERNAL_REFERENCE[]", ""),
    ("IPN_INFO[]", ""),
    ("IPN_QTY[]", "1"),
    ("IPN_PRICE[]", "10.00"),
    ("IPN_VAT[]", "0.00"),
    ("IPN_VAT_RATE[]", "0.00"),
    ("IPN_VER[]", "1"),
    ("IPN_DISCOUNT[]", "0.00"),
    ("IPN_PROMONAME[]", ""),
    ("IPN_PROMOCODE[]", ""),
    ("IPN_ORDER_COSTS[]", "0"),
    ("IPN_SKU[]", ""),
    ("IPN_PARTNER_CODE", ""),
    ("IPN_PGROUP[]", "0"),
    ("IPN_PGROUP_NAME[]", ""),
    ("MESSAGE_ID", "250447182633"),
    ("MESSAGE_TYPE", "PENDING"),
    ("IPN_LICENSE_PROD[]", "31126410"),
    ("IPN_LICENSE_TYPE[]", "REGULAR"),
    ("IPN_LICENSE_REF[]", ""),
    ("IPN_LICENSE_EXP[]", ""),
    ("IPN_LICENSE_START[]", ""),
    ("IPN_LICENSE_LIFETIME[]", "NO"),
    ("IPN_LICENSE_ADDITIONAL_INFO[]", ""),
    ("IPN_DELIVEREDCODES[]", ""),
    ("IPN_DOWNLOAD_LINK", ""),
    ("IPN_TOTAL[]", "10.00"),
    ("IPN_TOTALGENERAL", "10.00"),
    ("IPN_SHIPPING", "0.00"),
    ("IPN_SHIPPING_TAX", "0.00"),
    ("AVANGATE_CUSTOMER_REFERENCE", ""),
    ("EXTERNAL_CUSTOMER_REFERENCE", ""),
    ("IPN_PARTNER_MARGIN_PERCENT", "0.00"),
    ("IPN_PARTNER_MARGIN", "0.00"),
    ("IPN_EXTRA_MARGIN", "0.00"),
    ("IPN_EXTRA_DISCOUNT", "0.00"),
    ("IPN_COUPON_DISCOUNT", "0.00"),
    ("IPN_LINK_SOURCE", "WOOCOMMERCE_3_8"),
    ("IPN_ORIGINAL_LINK_SOURCE[]", ""),
    ("IPN_COMMISSION", "0.50"),
    ("REFUND_TYPE", ""),
    ("CHARGEBACK_RESOLUTION", "NONE"),
    ("CHARGEBACK_REASON_CODE", ""),
    ("TEST_ORDER", "0"),
    ("IPN_ORDER_ORIGIN", "API"),
    ("FRAUD_STATUS", "PENDING"),
    ("CARD_TYPE", "Visa"),
    ("CARD_LAST_DIGITS", "1111"),
    ("CARD_EXPIRATION_DATE", ""),
    ("GATEWAY_RESPONSE", ""),
    ("IPN_DATE", "20200804163753"),
    ("FX_RATE", "1.125696"),
    ("FX_MARKUP", "4"),
    ("PAYABLE_AMOUNT", "10.69"),
    ("PAYOUT_CURRENCY", "USD"),
    ("VENDOR_CODE", "250111206876"),
    ("PROPOSAL_ID", ""),
]
VIRTUEMART_KEY = "test"
VIRTUEMART_HASH = "0fd2263ec78170040c100d851bf4644c"

IPN_SDK = (
    "2Checkout/2checkout-php-sdk tests/Tco/Fixtures/Tokens.php (the real IPN of "
    "real-ipn-2023-06-12-three-signatures), trimmed to the fields the document reads"
)
IPN_TRIGGERS = "IPN triggers page (verifone.cloud …/06Instant_Payment_Notification_(IPN)/IPN-triggers)"
IPN_PARAMETERS = "IPN parameters page (docs.2checkout.com …/instant-payment-notification-ipn/ipn-parameters)"
PLUGINS_CHARGEBACK = (
    "2Checkout/zencart-2checkout includes/modules/payment/twocheckout/twocheckout_inline_helper.php "
    "(isChargeBack), 2Checkout/PrestaShop-2Checkout twocheckout/controllers/front/ipn.php "
    "(_isChargeBack, inside ORDER_STATUS_COMPLETE)"
)
PLUGINS_FRAUD = (
    "2Checkout/PrestaShop-2Checkout twocheckout/controllers/front/ipn.php (_processFraud before "
    "_processOrderStatus), 2Checkout/woocommerce twocheckout-inline/src/Twocheckout/"
    "class-two-checkout-ipn-helper.php (_process_fraud, _is_fraud)"
)
REAL_LCN = "nisalperi/2checkout-node test/hash.test.ts (the one real public LCN)"
LCN_TRIGGERS = "LCN triggers page (verifone.cloud …/08License_Change_Notification_LCN/LCN-triggers)"
INS_LEGACY = "legacy INS 1.1 message pages (2checkout.com/static/va/documentation/INS/*)"


def sign(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    grouped: protocol.Fields = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    src = protocol.signature_source(grouped)
    return [
        *pairs,
        *(
            (name, protocol.hmac_hex(algo, SECRET_KEY.encode(), src))
            for name, algo in (("HASH", "md5"), ("SIGNATURE_SHA2_256", "sha256"), ("SIGNATURE_SHA3_256", "sha3-256"))
        ),
    ]


def _replace(pairs: list[tuple[str, str]], changes: dict[str, str | None]) -> list[tuple[str, str]]:
    """Single-valued fields changed in place (None drops the field); unknown names are appended."""
    out = [(k, changes[k]) if k in changes else (k, v) for k, v in pairs]
    out = [(k, v) for k, v in out if v is not None]
    present = {k for k, _ in pairs}
    out += [(k, v) for k, v in changes.items() if k not in present and v is not None]
    return out  # type: ignore[return-value]


def ipn(
    refno: str,
    changes: dict[str, str | None],
    products: list[tuple[str, str, str]] | None = None,
    licences: list[tuple[str, str, str]] | None = None,
) -> list[tuple[str, str]]:
    """The real SDK IPN's fields; ``products`` are (pid, name, price), ``licences`` (pid, ref, exp)."""
    products = products or [("40898000", "Dynamic product", "0.01")]
    licences = licences if licences is not None else [("40898000", "XRILXB9ZI3", "9999-12-31 23:59:59")]
    pairs = [
        ("GIFT_ORDER", "0"),
        ("SALEDATE", "2023-06-09 15:26:18"),
        ("PAYMENTDATE", "2023-06-09 15:31:18"),
        ("REFNO", refno),
        ("REFNOEXT", f"cart-{refno[-3:]}"),
        ("ORDERNO", "25430"),
        ("ORDERSTATUS", "COMPLETE"),
        ("PAYMETHOD", "Visa/MasterCard"),
        ("FIRSTNAME", "Customer"),
        ("LASTNAME", "2Checkout"),
        ("COUNTRY", "United States of America"),
        ("COUNTRY_CODE", "us"),
        ("CUSTOMEREMAIL", "customer@example.com"),
        ("COMPLETE_DATE", "2023-06-09 15:31:23"),
        ("TIMEZONE_OFFSET", "GMT+03:00"),
        ("CURRENCY", "RON"),
        *(("IPN_PID[]", p[0]) for p in products),
        *(("IPN_PNAME[]", p[1]) for p in products),
        *(("IPN_QTY[]", "1") for _ in products),
        *(("IPN_PRICE[]", p[2]) for p in products),
        ("MESSAGE_ID", "254498854202"),
        ("MESSAGE_TYPE", "COMPLETE"),
        *(("IPN_LICENSE_PROD[]", lic[0]) for lic in licences),
        *(("IPN_LICENSE_TYPE[]", "REGULAR") for _ in licences),
        *(("IPN_LICENSE_REF[]", lic[1]) for lic in licences),
        *(("IPN_LICENSE_EXP[]", lic[2]) for lic in licences),
        *(("IPN_TOTAL[]", p[2]) for p in products),
        ("IPN_TOTALGENERAL", "0.01"),
        ("REFUND_TYPE", ""),
        ("CHARGEBACK_RESOLUTION", "NONE"),
        ("CHARGEBACK_REASON_CODE", ""),
        ("TEST_ORDER", "0"),
        ("FRAUD_STATUS", "APPROVED"),
        ("IPN_DATE", "20230612194811"),
    ]
    return sign(_replace(pairs, changes))


def lcn(changes: dict[str, str | None], *, documented: bool = True) -> list[tuple[str, str]]:
    """The real public LCN's fields; ``documented`` adds the LCN parameters page's customer, zone and reason."""
    pairs = [
        ("COMPANY", "Paladin Analytics (PVT) Ltd."),
        ("LICENSE_CODE", "5LF8IJ7L1I"),
        ("EXPIRATION_DATE", "2021-09-22"),
        ("DATE_UPDATED", "2020-09-22 16:17:49"),
        ("IS_TRIAL", "0"),
        ("EXTERNAL_CUSTOMER_REFERENCE", "rooster-company:1"),
        ("TEST", "1"),
        ("CHANGED_BY", "VENDOR"),
        ("LICENSE_TYPE", "REGULAR"),
        ("DISABLED", "1"),
        ("RECURRING", "1"),
        ("LICENSE_PRODUCT_CODE", "rooster-hire-annually"),
        ("STATUS", "CANCELED"),
        ("EXPIRED", "0"),
        ("NEXT_RENEWAL_PRICE", ""),
        ("NEXT_RENEWAL_CURRENCY", ""),
        ("NEXT_RENEWAL_PRICE_TYPE", ""),
        ("NEXT_RENEWAL_DATE", ""),
        ("NEXT_RENEWAL_PAYMETHOD", "Visa/MasterCard"),
        ("NEXT_RENEWAL_PAYMETHOD_CODE", "CCVISAMC"),
        ("NEXT_RENEWAL_CARD_LAST_DIGITS", "1111"),
        ("NEXT_RENEWAL_CARD_TYPE", "visa"),
        ("NEXT_RENEWAL_CARD_EXPIRATION_DATE", "12/2023"),
        ("PURCHASE_DATE_TIME", "2020-09-22 15:57:32"),
        ("START_DATE_TIME", "2020-09-22 15:57:32"),
        ("EXPIRATION_DATE_TIME", "2021-09-22 15:57:32"),
        ("LAST_ORDER_REFERENCE", "133506738"),
        ("RENEWALS_NUMBER", "0"),
        ("UPGRADES_NUMBER", "0"),
    ]
    if documented:
        pairs = [
            ("FIRST_NAME", "Jürgen"),
            ("LAST_NAME", "Müller"),
            ("EMAIL", "jurgen@example.com"),
            ("COUNTRY", "Germany"),
            ("COUNTRY_CODE", "de"),
            *pairs,
            ("TIMEZONE_OFFSET", "GMT+03:00"),
            ("DISABLED", "0"),
            ("STATUS", "ACTIVE"),
            ("DISPATCH_REASON", "LICENCE_CHANGE"),
        ]
        # a documented LCN sends each field once: the later DISABLED / STATUS replace the real one's
        seen: dict[str, str] = {}
        for key, value in pairs:
            seen[key] = value
        pairs = [(k, seen[k]) for k in dict.fromkeys(k for k, _ in pairs)]
    return sign(_replace(pairs, changes))


def ins(
    changes: dict[str, str | None], sale_id: str = "9093727242950", invoice_id: str = "9093727243050"
) -> list[tuple[str, str]]:
    """The legacy INS 1.1 invoice-level field set (synthetic-ins-* vectors), md5_hash recomputed."""
    pairs = [
        ("message_type", "ORDER_CREATED"),
        ("message_description", "New order created"),
        ("timestamp", "2021-01-01 12:00:00 EST"),
        ("md5_hash", ""),
        ("message_id", "201"),
        ("key_count", "40"),
        ("vendor_id", SELLER_ID),
        ("sale_id", sale_id),
        ("sale_date_placed", "2021-01-01 11:58:00"),
        ("vendor_order_id", "ORD-77"),
        ("invoice_id", invoice_id),
        ("recurring", "0"),
        ("payment_type", "credit card"),
        ("list_currency", "USD"),
        ("cust_currency", "USD"),
        ("auth_exp", "2021-01-08"),
        ("invoice_status", "approved"),
        ("fraud_status", "pass"),
        ("invoice_list_amount", "10.00"),
        ("invoice_usd_amount", "10.00"),
        ("invoice_cust_amount", "10.00"),
        ("customer_first_name", "Jürgen"),
        ("customer_last_name", "Müller"),
        ("customer_name", "Jürgen Müller"),
        ("customer_email", "jurgen@example.com"),
        ("customer_ip_country", "Japan"),
        ("bill_city", "東京"),
        ("bill_country", "JPN"),
        ("item_count", "1"),
        ("item_name_1", "Müller Tool – 東京 Edition"),
        ("item_id_1", "PRO-1"),
        ("item_list_amount_1", "10.00"),
        ("item_usd_amount_1", "10.00"),
        ("item_cust_amount_1", "10.00"),
        ("item_type_1", "bill"),
    ]
    pairs = _replace(pairs, changes)
    md5 = protocol.ins_hash(sale_id, SELLER_ID, invoice_id, INS_WORD)
    return [(k, md5 if k == "md5_hash" else v) for k, v in pairs]


def case(
    vid: str,
    channel: str,
    rests_on: str,
    fields: list[tuple[str, str]],
    etype: str,
    type_from: tuple[str, str],
    **expect: Any,
) -> dict[str, Any]:
    """``expect``: JSON pointers (``/order/chargeback``, written ``order__chargeback``) -> value."""
    pointers = {"/" + key.replace("__", "/"): value for key, value in expect.items()}
    return {
        "id": vid,
        "channel": channel,
        "rests_on": rests_on,
        "fields": [list(p) for p in fields],
        "expected": {"type": etype, "type_from": {"field": type_from[0], "value": type_from[1]}, "fields": pointers},
    }


CHARGEBACK = {
    "ORDERSTATUS": "COMPLETE",
    "MESSAGE_TYPE": "COMPLETE",
    "CHARGEBACK_RESOLUTION": "OPEN",
    "CHARGEBACK_REASON_CODE": "MERCHANDISE_NOT_RECEIVED",
}


def cases() -> list[dict[str, Any]]:
    return [
        # --- IPN ---
        case(
            "ipn-chargeback-on-complete",
            "ipn",
            PLUGINS_CHARGEBACK,
            ipn("230100001", CHARGEBACK),
            "order.chargeback",
            ("CHARGEBACK_RESOLUTION", "OPEN"),
            order__chargeback={"resolution": "OPEN", "reason_code": "MERCHANDISE_NOT_RECEIVED"},
            order__status="COMPLETE",
            order__fraud_status="approved",
            order__customer__country="US",
            occurred_at="2023-06-12T19:48:11+03:00",
            license__expires_at="9999-12-31T23:59:59+03:00",
        ),
        case(
            "ipn-chargeback-without-message-type",
            "ipn",
            PLUGINS_CHARGEBACK,
            ipn("230100002", {**CHARGEBACK, "MESSAGE_TYPE": None, "CHARGEBACK_REASON_CODE": "FRAUD / NOT_RECOGNIZED"}),
            "order.chargeback",
            ("CHARGEBACK_RESOLUTION", "OPEN"),
            order__chargeback={"resolution": "OPEN", "reason_code": "FRAUD / NOT_RECOGNIZED"},
        ),
        case(
            "ipn-refund-of-a-charged-back-order",
            "ipn",
            f"{PLUGINS_CHARGEBACK}; the issue's rule: REFUND says the message is of another kind",
            ipn(
                "230100003",
                {
                    **CHARGEBACK,
                    "ORDERSTATUS": "REFUND",
                    "MESSAGE_TYPE": "REFUND",
                    "REFUND_TYPE": "FULL",
                    "IPN_TOTALGENERAL": "-0.01",
                },
            ),
            "order.refunded",
            ("MESSAGE_TYPE", "REFUND"),
            order__chargeback={"resolution": "OPEN", "reason_code": "MERCHANDISE_NOT_RECEIVED"},
            order__refund_type="FULL",
            order__total="-0.01",
        ),
        case(
            "ipn-complete-chargeback-none",
            "ipn",
            IPN_SDK,
            ipn("230100004", {}),
            "order.completed",
            ("MESSAGE_TYPE", "COMPLETE"),
            order__chargeback=None,
            order__fraud_status="approved",
            order__shipping=None,  # IPN sends no shipping status
        ),
        case(
            "ipn-fraud-denied",
            "ipn",
            PLUGINS_FRAUD,
            ipn("230100005", {"ORDERSTATUS": "PENDING", "MESSAGE_TYPE": "PENDING", "FRAUD_STATUS": "DENIED"}),
            "fraud.status_changed",
            ("FRAUD_STATUS", "DENIED"),
            order__fraud_status="denied",
            order__status="PENDING",
        ),
        case(
            "ipn-fraud-under-review",
            "ipn",
            f"{PLUGINS_FRAUD}; {IPN_TRIGGERS} (PENDING_APPROVAL: anti-fraud review)",
            ipn(
                "230100006",
                {"ORDERSTATUS": "PENDING_APPROVAL", "MESSAGE_TYPE": "PENDING", "FRAUD_STATUS": "UNDER REVIEW"},
            ),
            "order.created",
            ("MESSAGE_TYPE", "PENDING"),
            order__fraud_status="under_review",
        ),
        case(
            "ipn-fraud-pending",
            "ipn",
            PLUGINS_FRAUD,
            ipn("230100007", {"ORDERSTATUS": "PENDING", "MESSAGE_TYPE": "PENDING", "FRAUD_STATUS": "PENDING"}),
            "order.created",
            ("MESSAGE_TYPE", "PENDING"),
            order__fraud_status="pending",
        ),
        case(
            "ipn-payment-received-card",
            "ipn",
            f"{IPN_PARAMETERS} (credit card flow); {IPN_TRIGGERS}",
            ipn("230100008", {"ORDERSTATUS": "PAYMENT_RECEIVED", "MESSAGE_TYPE": "APPROVED"}),
            "order.authorized",
            ("ORDERSTATUS", "PAYMENT_RECEIVED"),
        ),
        case(
            "ipn-payment-received-sepa",
            "ipn",
            f"{IPN_PARAMETERS} (SEPA direct debit flow); {IPN_TRIGGERS}",
            ipn("230100009", {"ORDERSTATUS": "PAYMENT_RECEIVED", "MESSAGE_TYPE": "PROCESSING"}),
            "order.authorized",
            ("ORDERSTATUS", "PAYMENT_RECEIVED"),
        ),
        case(
            "ipn-pending-order-approval",
            "ipn",
            IPN_TRIGGERS,
            ipn("230100010", {"ORDERSTATUS": "PENDING_ORDER_APPROVAL", "MESSAGE_TYPE": None}),
            "order.authorized",
            ("ORDERSTATUS", "PENDING_ORDER_APPROVAL"),
        ),
        case(
            "ipn-authreceived",
            "ipn",
            "2Checkout/woocommerce class-two-checkout-ipn-helper.php and "
            "2Checkout/zencart-2checkout twocheckout_inline_helper.php (ORDER_STATUS_AUTHRECEIVED); order-flow page",
            ipn("230100011", {"ORDERSTATUS": "AUTHRECEIVED", "MESSAGE_TYPE": None}),
            "order.authorized",
            ("ORDERSTATUS", "AUTHRECEIVED"),
        ),
        case(
            "ipn-invalid",
            "ipn",
            "2Checkout/woocommerce class-two-checkout-ipn-helper.php (INVALID: order failed)",
            ipn("230100012", {"ORDERSTATUS": "INVALID", "MESSAGE_TYPE": None}),
            "order.canceled",
            ("ORDERSTATUS", "INVALID"),
        ),
        case(
            "ipn-licence-keyed-by-product",
            "ipn",
            f"{IPN_PARAMETERS} (IPN_LICENSE_PROD: the product of each licence)",
            ipn(
                "230100013",
                {"IPN_TOTALGENERAL": "30.00"},
                products=[("111", "No licence", "10.00"), ("222", "Licensed", "20.00")],
                licences=[("222", "L222222222", "2024-06-12 19:48:11")],
            ),
            "order.completed",
            ("MESSAGE_TYPE", "COMPLETE"),
            order__items__0__license=None,
            order__items__1__license={
                "code": "L222222222",
                "type": "REGULAR",
                "expires_at": "2024-06-12T19:48:11+03:00",
            },
            license__code="L222222222",
        ),
        case(
            "ipn-customer-references",
            "ipn",
            f"{IPN_SDK}, with its AVANGATE_CUSTOMER_REFERENCE, EXTERNAL_CUSTOMER_REFERENCE, a COMPANY (empty "
            "in the fixture) and an IPN_PCODE (the product code an LCN sends as LICENSE_PRODUCT_CODE)",
            ipn(
                "230100014",
                {
                    "IPN_PCODE[]": "DYN-PROD-01",
                    "COMPANY": "Ödön & Søn Kft.",
                    "AVANGATE_CUSTOMER_REFERENCE": "756227060",
                    "EXTERNAL_CUSTOMER_REFERENCE": "IOUER",
                },
            ),
            "order.completed",
            ("MESSAGE_TYPE", "COMPLETE"),
            order__customer={
                "name": "Customer 2Checkout",
                "email": "customer@example.com",
                "country": "US",
                "company": "Ödön & Søn Kft.",
                "reference": "756227060",
                "external_reference": "IOUER",
            },
            license__code="XRILXB9ZI3",
            license__product_code="DYN-PROD-01",
            license__customer__reference="756227060",
            license__customer__external_reference="IOUER",
            license__customer__email="customer@example.com",
        ),
        case(
            "ipn-real-pending-before-payment",
            "ipn",
            "2Checkout/VirtueMart-2Checkout twocheckout_convert/twocheckout_convert/tests/helper/TcoTest.php "
            "@cd2f2aa (its HASH verifies with the key 'test'; re-signed here with this file's key): a PENDING "
            "order not yet paid, FRAUD_STATUS PENDING, dates 0000-00-00 00:00:00, a licence row with no licence",
            sign(VIRTUEMART_IPN),
            "order.created",
            ("MESSAGE_TYPE", "PENDING"),
            order__status="PENDING",
            order__fraud_status="pending",
            order__currency="EUR",
            order__total="10.00",
            order__items__0__license=None,
            order__customer={
                "name": "John Doe",
                "email": "cosmin.panait@2checkout.com",
                "country": "RO",
                "company": None,
                "reference": None,
                "external_reference": None,
            },
            license=None,
            test=False,
            occurred_at="2020-08-04T16:37:53+03:00",
        ),
        # --- LCN ---
        case(
            "lcn-real-canceled-without-dispatch-reason",
            "lcn",
            REAL_LCN,
            lcn({}, documented=False),
            "license.canceled",
            ("STATUS", "CANCELED"),
            license__expires_at="2021-09-22T15:57:32",
            license__status="CANCELED",
            occurred_at="2020-09-22T16:17:49",
            license__customer__country=None,
            # the licence holder is a company, named in COMPANY only: the customer is that company
            license__customer__company="Paladin Analytics (PVT) Ltd.",
            license__customer__name=None,
            license__customer__external_reference="rooster-company:1",
            license__auto_renewal=True,  # RECURRING 1, as sent, on the canceled licence
            license__next_renewal_date=None,  # NEXT_RENEWAL_DATE empty
        ),
        case(
            "lcn-date-only-expiry",
            "lcn",
            f"{REAL_LCN} (EXPIRATION_DATE without EXPIRATION_DATE_TIME); LCN parameters page example",
            lcn({"DISPATCH_REASON": None, "EXPIRATION_DATE_TIME": None}),
            "license.updated",
            ("STATUS", "ACTIVE"),
            license__expires_at="2021-09-22",
            occurred_at="2020-09-22T16:17:49+03:00",
            license__customer__country="DE",
        ),
        case(
            "lcn-licence-expiration",
            "lcn",
            LCN_TRIGGERS,
            lcn({"DISPATCH_REASON": "LICENCE_EXPIRATION", "STATUS": "EXPIRED", "EXPIRED": "1"}),
            "license.expired",
            ("DISPATCH_REASON", "LICENCE_EXPIRATION"),
            license__expires_at="2021-09-22T15:57:32+03:00",
        ),
        case(
            "lcn-expired-flag",
            "lcn",
            "LCN parameters page (EXPIRED flag)",
            lcn({"DISPATCH_REASON": None, "STATUS": None, "EXPIRED": "1"}),
            "license.expired",
            ("EXPIRED", "1"),
        ),
        case(
            "lcn-licence-pastdue",
            "lcn",
            LCN_TRIGGERS,
            lcn({"DISPATCH_REASON": "LICENCE_PASTDUE", "STATUS": "PASTDUE"}),
            "license.past_due",
            ("DISPATCH_REASON", "LICENCE_PASTDUE"),
            license__status="PASTDUE",
        ),
        case(
            "lcn-pastdue-status-without-reason",
            "lcn",
            f"{LCN_TRIGGERS} (EXPIRED or PAST DUE & auto-recurring)",
            lcn({"DISPATCH_REASON": None, "STATUS": "PASTDUE"}),
            "license.past_due",
            ("STATUS", "PASTDUE"),
        ),
        case(
            "lcn-canceled-by-a-licence-change",
            "lcn",
            f"{LCN_TRIGGERS} (LICENCE_CHANGE: cancel subscription)",
            lcn({"STATUS": "CANCELED", "DISABLED": "1"}),
            "license.canceled",
            ("STATUS", "CANCELED"),
        ),
        case(
            "lcn-disabled-flag",
            "lcn",
            f"{REAL_LCN} (DISABLED=1)",
            lcn({"DISPATCH_REASON": None, "STATUS": None, "DISABLED": "1"}),
            "license.canceled",
            ("DISABLED", "1"),
        ),
        case(
            "lcn-cpc-accepted",
            "lcn",
            LCN_TRIGGERS,
            lcn({"DISPATCH_REASON": "LICENCE_CPC_ACCEPTED"}),
            "license.updated",
            ("DISPATCH_REASON", "LICENCE_CPC_ACCEPTED"),
        ),
        case(
            "lcn-scheduled-for-cancelation",
            "lcn",
            LCN_TRIGGERS,
            lcn({"DISPATCH_REASON": "SCHEDULED_FOR_CANCELATION_ON_DEMAND"}),
            "license.updated",
            ("DISPATCH_REASON", "SCHEDULED_FOR_CANCELATION_ON_DEMAND"),
        ),
        case(
            "lcn-revert-cancelation",
            "lcn",
            LCN_TRIGGERS,
            lcn({"DISPATCH_REASON": "REVERT_CANCELATION_ON_DEMAND"}),
            "license.updated",
            ("DISPATCH_REASON", "REVERT_CANCELATION_ON_DEMAND"),
        ),
        case(
            "lcn-country-by-name",
            "lcn",
            "LCN parameters page (COUNTRY: a name)",
            lcn({"COUNTRY_CODE": None, "COUNTRY": "Romania"}),
            "license.updated",
            ("DISPATCH_REASON", "LICENCE_CHANGE"),
            license__customer__country="RO",
        ),
        case(
            "lcn-auto-renewal-disabled",
            "lcn",
            f"{LCN_TRIGGERS} (ACTIVE & auto-renewal: 'updating Subscription info to change expiration date and "
            "recurring enabled/disabled'); RECURRING 0 as in the LCN sample of a Workato 2Checkout connector "
            "(code index, sample_lcn_output)",
            lcn({"RECURRING": "0", "NEXT_RENEWAL_DATE": ""}),
            "license.updated",
            ("DISPATCH_REASON", "LICENCE_CHANGE"),
            license__status="ACTIVE",
            license__auto_renewal=False,
            license__next_renewal_date=None,
        ),
        case(
            "lcn-auto-renewal-next-date",
            "lcn",
            f"{REAL_LCN} (RECURRING, NEXT_RENEWAL_DATE) with the documented fields; {LCN_TRIGGERS}",
            lcn({"NEXT_RENEWAL_DATE": "2021-09-22", "NEXT_RENEWAL_PRICE": "99.00", "NEXT_RENEWAL_CURRENCY": "usd"}),
            "license.updated",
            ("DISPATCH_REASON", "LICENCE_CHANGE"),
            license__auto_renewal=True,
            license__next_renewal_date="2021-09-22",
        ),
        # --- INS ---
        case(
            "ins-ship-status-shipped",
            "ins",
            "legacy INS 1.1 Shipping Status Changed page (2checkout.com/static/va/documentation/INS/"
            "message_shipping_status_changed.html): 'the ship_status of an order has changed, from not_shipped "
            "to shipped', ship_status and ship_tracking_number marked most useful",
            ins(
                {
                    "message_type": "SHIP_STATUS_CHANGED",
                    "message_description": "Order ship status changed",
                    "ship_status": "shipped",
                    "ship_tracking_number": "ZG7893748973",
                    "ship_name": "June Cleaver",
                    "ship_country": "USA",
                }
            ),
            "order.shipping_updated",
            ("message_type", "SHIP_STATUS_CHANGED"),
            order__shipping={"status": "shipped", "tracking_number": "ZG7893748973"},
        ),
        case(
            "ins-no-shipping-for-an-intangible-sale",
            "ins",
            "w3guy/omnipay-2checkout tests/Mock/FraudChangeNotificationPass.txt @c59b2ac (a real FRAUD_STATUS_CHANGED "
            "whose ship_status and ship_tracking_number are empty)",
            ins({"message_type": "FRAUD_STATUS_CHANGED", "ship_status": "", "ship_tracking_number": ""}),
            "fraud.status_changed",
            ("message_type", "FRAUD_STATUS_CHANGED"),
            order__shipping=None,
        ),
        case(
            "ins-invoice-pending-after-approval",
            "ins",
            "INS invoice_status_changed page: \"Most orders go from 'approved' to 'pending' to 'deposited'\"",
            ins({"message_type": "INVOICE_STATUS_CHANGED", "invoice_status": "pending"}),
            "order.authorized",
            ("invoice_status", "pending"),
        ),
        case(
            "ins-timestamp-eest",
            "ins",
            "INS read receipt response page (timestamp 2021-01-01 12:00:00 EEST)",
            ins({"timestamp": "2021-01-01 12:00:00 EEST"}),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            occurred_at="2021-01-01T12:00:00+03:00",
            order__customer__country="JP",
            order__fraud_status="approved",
        ),
        case(
            "ins-timestamp-eet",
            "ins",
            "a real INS stub's EET timestamp (protocol notes §9)",
            ins({"timestamp": "2021-01-01 12:00:00 EET"}),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            occurred_at="2021-01-01T12:00:00+02:00",
        ),
        case(
            "ins-timestamp-unknown-zone",
            "ins",
            "the relay's rule: a valid time is never dropped",
            ins({"timestamp": "2021-01-01 12:00:00 MSK"}),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            occurred_at="2021-01-01T12:00:00",
        ),
        case(
            "ins-timestamp-no-zone-eastern-summer",
            "ins",
            'INS 1.1 user guide, Document Conventions: "All times will be sent in U.S. Eastern Time" '
            "(2checkout.com/static/va/documentation/INS/index.html); the timestamp, with no zone, of the real "
            "FRAUD_STATUS_CHANGED in w3guy/omnipay-2checkout tests/Mock/FraudChangeNotification.txt @b37e0fc: "
            "America/New_York on that date is EDT",
            ins({"timestamp": "2012-07-19 17:01:19"}),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            occurred_at="2012-07-19T17:01:19-04:00",
        ),
        case(
            "ins-timestamp-no-zone-eastern-winter",
            "ins",
            'INS 1.1 user guide: "All times will be sent in U.S. Eastern Time"; in January, EST',
            ins({"timestamp": "2021-01-01 12:00:00"}),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            occurred_at="2021-01-01T12:00:00-05:00",
        ),
        case(
            "ins-recurring-installment-details",
            "ins",
            "legacy INS 1.1 Recurring Installment Success page (item-level; item_duration_#, item_recurrence_#, "
            "item_rec_status_#, item_rec_date_next_#, item_rec_install_billed_#); values as in the real "
            "FRAUD_STATUS_CHANGED of w3guy/omnipay-2checkout tests/Mock/FraudChangeNotificationPass.txt @c59b2ac",
            ins(
                {
                    "message_type": "RECURRING_INSTALLMENT_SUCCESS",
                    "message_description": "Recurring installment successfully billed",
                    "recurring": "1",
                    "item_duration_1": "Forever",
                    "item_recurrence_1": "1 Week",
                    "item_rec_list_amount_1": "10.00",
                    "item_rec_status_1": "live",
                    "item_rec_date_next_1": "2012-07-26",
                    "item_rec_install_billed_1": "4",
                }
            ),
            "subscription.renewed",
            ("message_type", "RECURRING_INSTALLMENT_SUCCESS"),
            order__items__0__recurring={
                "status": "live",
                "recurrence": "1 Week",
                "duration": "Forever",
                "next_billing_date": "2012-07-26",
                "installments_billed": 4,
            },
        ),
        case(
            "ins-fraud-fail",
            "ins",
            "INS fraud_status_changed page (fraud_status pass / fail / wait)",
            ins({"message_type": "FRAUD_STATUS_CHANGED", "fraud_status": "fail"}),
            "fraud.status_changed",
            ("message_type", "FRAUD_STATUS_CHANGED"),
            order__fraud_status="denied",
        ),
        case(
            "ins-not-applicable-placeholders",
            "ins",
            "2Checkout's INS test message (message_description 'Test Message', vendor_id 1007) as a merchant's "
            "module keeps it: vinothtimes/dchqtest payment/2checkout.php @472fa1d (Jamit Job Board): "
            "item_type_1, auth_exp and the item_rec_* fields are 'N/A'",
            ins(
                {
                    "message_type": "FRAUD_STATUS_CHANGED",
                    "message_description": "Test Message",
                    "auth_exp": "N/A",
                    "item_type_1": "N/A",
                    "item_duration_1": "1",
                    "item_recurrence_1": "N/A",
                    "item_rec_list_amount_1": "N/A",
                    "item_rec_status_1": "N/A",
                    "item_rec_date_next_1": "N/A",
                    "item_rec_install_billed_1": "0",
                }
            ),
            "fraud.status_changed",
            ("message_type", "FRAUD_STATUS_CHANGED"),
            order__items__0__type=None,
            order__items__0__price="10.00",
            order__items__0__recurring=None,
            order__fraud_status="approved",
        ),
        case(
            "ins-fraud-wait",
            "ins",
            "INS fraud_status_changed page (fraud_status pass / fail / wait)",
            ins({"message_type": "FRAUD_STATUS_CHANGED", "fraud_status": "wait"}),
            "fraud.status_changed",
            ("message_type", "FRAUD_STATUS_CHANGED"),
            order__fraud_status="under_review",
        ),
        case(
            "ins-list-amounts-only",
            "ins",
            f"{INS_LEGACY} (list_* amounts in list_currency, cust_* in cust_currency)",
            ins(
                {
                    "list_currency": "GBP",
                    "cust_currency": "JPY",
                    "invoice_list_amount": "5.00",
                    "invoice_cust_amount": None,
                    "item_list_amount_1": "5.00",
                    "item_cust_amount_1": None,
                }
            ),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            order__currency="GBP",
            order__total="5.00",
            order__items__0__price="5.00",
        ),
        case(
            "ins-customer-amounts",
            "ins",
            f"{INS_LEGACY} (list_* amounts in list_currency, cust_* in cust_currency)",
            ins(
                {
                    "list_currency": "GBP",
                    "cust_currency": "JPY",
                    "invoice_list_amount": "5.00",
                    "invoice_cust_amount": "905",
                    "item_list_amount_1": "5.00",
                    "item_cust_amount_1": "905",
                }
            ),
            "order.created",
            ("message_type", "ORDER_CREATED"),
            order__currency="JPY",
            order__total="905",
            order__items__0__price="905",
        ),
    ]


def main() -> None:
    document = {
        "description": "Signed notifications, one per typed-event case of docs/events.md, made by "
        "tests/event_vectors.py from documented field sets; IPN/LCN signed with "
        "ipn_lcn_secret_key (HASH, SIGNATURE_SHA2_256, SIGNATURE_SHA3_256), INS md5_hash "
        "with ins_secret_word and seller_id. expected.fields: JSON pointer -> value.",
        "ipn_lcn_secret_key": SECRET_KEY,
        "ins_secret_word": INS_WORD,
        "seller_id": SELLER_ID,
        "vectors": cases(),
    }
    OUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
