"""LCN (``/lcn``): its event type and its ``license``. The source of every row is in docs/events.md."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from config.event_types import UNMAPPED
from relay.events.values import Fields, country, expiry, first, full_name, offset, opt, timestamp

# DISPATCH_REASON values that say what happened whatever the licence's state (LCN triggers page)
REASONS: Mapping[str, str] = {
    "LICENCE_EXPIRATION": "license.expired",
    "LICENCE_PASTDUE": "license.past_due",
    "LICENCE_CPC_ACCEPTED": "license.updated",
    "SCHEDULED_FOR_CANCELATION_ON_DEMAND": "license.updated",
    "REVERT_CANCELATION_ON_DEMAND": "license.updated",
}
# the licence's state, which decides before the generic "something changed" reasons below: a
# cancellation made in the Control Panel is sent as a LICENCE_CHANGE of a CANCELED licence
STATUSES: Mapping[str, str] = {
    "EXPIRED": "license.expired",
    "PASTDUE": "license.past_due",
    "CANCELED": "license.canceled",
}
# flags of the LCN parameters, read when STATUS says none of the above
FLAGS: tuple[tuple[str, str], ...] = (("EXPIRED", "license.expired"), ("DISABLED", "license.canceled"))
CHANGE_REASONS = frozenset({"LICENCE_CHANGE", "LICENCE_GP_CHANGE", "LICENCE_PENDING_ACTIVATION"})


def event_type(fields: Fields) -> tuple[str, str, str]:
    status, reason = first(fields, "STATUS"), first(fields, "DISPATCH_REASON")
    if reason in REASONS:
        return REASONS[reason], "DISPATCH_REASON", reason
    if status in STATUSES:
        return STATUSES[status], "STATUS", status
    for flag, etype in FLAGS:
        if first(fields, flag) == "1":
            return etype, flag, "1"
    if reason in CHANGE_REASONS:
        return "license.updated", "DISPATCH_REASON", reason
    # DISPATCH_REASON is optional (the one real public LCN has none): a licence with a state is an
    # update of that licence (ACTIVE and any other state), never unmapped
    if status and first(fields, "LICENSE_CODE"):
        return "license.updated", "STATUS", status
    return UNMAPPED, "DISPATCH_REASON", reason


def license(fields: Fields) -> dict[str, Any]:
    f = partial(first, fields)
    zone = offset(f("TIMEZONE_OFFSET"))
    # EXPIRATION_DATE may be a date only; EXPIRATION_DATE_TIME, when sent, has the time too
    expires = expiry(f("EXPIRATION_DATE_TIME"), zone) or expiry(f("EXPIRATION_DATE"), zone)
    return {
        "code": f("LICENSE_CODE"),
        "status": opt(f("STATUS")),
        "type": opt(f("LICENSE_TYPE")),
        "expires_at": expires,
        "product_code": opt(f("LICENSE_PRODUCT_CODE")),
        "dispatch_reason": opt(f("DISPATCH_REASON")),
        "changed_by": opt(f("CHANGED_BY")),
        # "recurring enabled/disabled" is a licence change of its own (LCN triggers page)
        "auto_renewal": {"1": True, "0": False}.get(f("RECURRING").strip()),
        "next_renewal_date": expiry(f("NEXT_RENEWAL_DATE"), zone),
        "customer": {
            "name": full_name(f("FIRST_NAME"), f("LAST_NAME")),
            "email": opt(f("EMAIL")),
            "country": country(f("COUNTRY_CODE")) or country(f("COUNTRY")),
            # a business licence holder may be named here only (the real public LCN has no FIRST_NAME)
            "company": opt(f("COMPANY")),
            "reference": opt(f("AVANGATE_CUSTOMER_REFERENCE")),
            "external_reference": opt(f("EXTERNAL_CUSTOMER_REFERENCE")),
        },
    }


def occurred_at(fields: Fields) -> str | None:
    return timestamp(first(fields, "DATE_UPDATED"), offset(first(fields, "TIMEZONE_OFFSET")))
