"""What the engine and its Lua scripts exchange, named once, here.

Each tuple below is the order of one positional array that crosses between Python and Lua, and each
``Spec`` (relay/store/scripts.py, the one loader) names one script's KEYS and ARGV. The scripts never
count positions: the loader prepends a Lua preamble generated from these (``K.fanout``, ``A.nid``,
``R.outcome``, ``RK.delivery``, ``CLAIMED_LIST`` ...), the key templates of relay/constants.py
(``key.delivery(nid, ep)``), the shared numbers and fragments. Reordering or adding a field here changes
both sides at once.
"""

from __future__ import annotations

from functools import lru_cache

from relay import constants as k
from relay.store.scripts import Spec, constants, names

# one finished attempt (complete.lua), and the keys it writes
RESULT_FIELDS = ("nid", "ep", "attempt", "outcome", "delay_ms", "record", "last", "lat_bucket", "lat_us", "recv")
RESULT_KEYS = ("delivery", "attempts", "lease", "queue", "st_in_flight", "st_to", "paused", "st_paused")
# one endpoint asking for work (claim.lua), and the keys it reads and writes
CLAIM_FIELDS = ("ep", "mode", "limit", "lease_ms", "batch", "interval_ms", "burst")
CLAIM_KEYS = ("queue", "lease", "st_pending", "st_retrying", "st_in_flight", "paused", "rate")
# one claimed delivery, as claim.lua returns it
# paused_ms: time it spent paused by an operator (relay/store/control.py), not counted by the retry window;
# unsent: claims of it given back unsent (complete.lua 'dropped'), not counted by the retry schedule
# packed: 1 when body is the stored compressed form (relay/store/body.py), restored by the worker
CLAIMED_FIELDS = (
    "nid",
    "attempt",
    "body",
    "ct",
    "source",
    "channel",
    "recv",
    "resend_of",
    "flag",
    "paused_ms",
    "unsent",
    "packed",
)
# a per_order claim looks at this many queued deliveries at most (workers/lua/per_order.lua)
PER_ORDER_SCAN = 2000
# rate_limit: requests are counted in windows of this many ms; health and the dashboard show the last whole one
RATE_WINDOW_MS = 2000
# what the fan-out reads of each notification it claims (fanclaim.lua returns them in this order)
# (braw: its body is not compressed yet, relay/store/body.py)
FANOUT_FIELDS = ("source", "channel", "mtype", "status", "test", "targets", "type", "recv", "seq", "resend_of", "braw")
# one notification of a fan-out batch (route.lua): its nid, how many routes follow, and its body compressed
# to replace the one stored as received ('' when there is none to replace)
ROUTE_HEAD = ("nid", "routes", "bodyz")
# one route of a fan-out (route.lua), and the keys it writes
ROUTE_FIELDS = ("ep", "mode", "reason")
ROUTE_KEYS = ("delivery", "st_pending", "st_skipped", "queue", "paused", "st_paused")


def preamble() -> str:
    return (
        names("R", RESULT_FIELDS)
        + names("RK", RESULT_KEYS)
        + names("C", CLAIM_FIELDS)
        + names("CK", CLAIM_KEYS)
        + names("CLAIMED", CLAIMED_FIELDS)
        + names("FANOUT", FANOUT_FIELDS)
        + names("ROUTE_HEAD", ROUTE_HEAD)
        + names("ROUTE", ROUTE_FIELDS)
        + names("ROUTE_KEYS", ROUTE_KEYS)
        + constants(
            {
                "ATTEMPTS_CAP": k.ATTEMPTS_CAP,
                "LATENCY_BUCKETS_US": [round(b * 1_000_000) for b in k.LATENCY_BUCKETS],
                "R2D_BUCKETS_US": [round(b * 1_000_000) for b in k.R2D_BUCKETS],
                "R2D_FIELD": k.R2D_FIELD,
                "PER_ORDER_SCAN": PER_ORDER_SCAN,
                "RATE_WINDOW_MS": RATE_WINDOW_MS,
            }
        )
    )


# the workers' scripts (workers/lua/), assembled by relay/store/scripts.py
# one worker round trip: results recorded (complete.lua), then claims (per_order.lua, rate.lua, claim.lua)
STEP = Spec(
    ("complete", "per_order", "rate", "claim", "step"),
    package="workers",
    tables=preamble,
    keys=("fanout", "stats"),
    keys_rest="#RESULT_KEYS per result, then #CLAIM_KEYS per claim",
    args=("results",),
    args_rest="the results (RESULT_FIELDS each), then the claims (CLAIM_FIELDS)",
)
# a batch of notifications claimed for their fan-out, under a lease (workers/fanout.py)
FANCLAIM = Spec(
    ("fanclaim",),
    package="workers",
    tables=preamble,
    keys=("fanout", "lease"),
    args=("batch", "lease_ms", "body"),
)
# one fan-out call: a batch of notifications routed
ROUTE = Spec(
    ("route",),
    package="workers",
    tables=preamble,
    keys=("fanout", "lease"),
    keys_rest="per notification: its key, its body's key, then ROUTE_KEYS per route",
    args=("retention_ms",),
    args_rest="per notification: ROUTE_HEAD, then ROUTE_FIELDS per route",
)
# an endpoint whose mode a reload changed, and one page of its queue
REMODE = Spec(("remode",), package="workers", keys=("queue",), args=("ep", "mode"), args_rest="the nids")
# the retention trim of the time-scored indexes (workers/retention.py)
SWEEP = Spec(
    ("sweep",),
    package="workers",
    keys_rest="the zsets scored by ms, then relay:workers",
    args=("retention_ms", "worker_ttl_ms"),
)


def result_keys(nid: str, ep: str, to_state: str) -> list[str]:
    return [k.delivery(nid, ep), k.attempts(nid, ep), *_result_ep_keys(ep, to_state)]


def claim_keys(ep: str) -> list[str]:
    return list(_claim_keys(ep))


def route_keys(nid: str, ep: str) -> list[str]:
    return [k.delivery(nid, ep), *_route_ep_keys(ep)]


# An endpoint's own keys are the same for every delivery: built once per endpoint (and state), not
# for each of the thousands of results, claims and routes a second. Bounded: endpoints x 4 states.
# The per-delivery keys come first in RESULT_KEYS and ROUTE_KEYS (checked here, at import).
assert RESULT_KEYS[:2] == ("delivery", "attempts") and ROUTE_KEYS[:1] == ("delivery",)


@lru_cache(maxsize=1024)
def _result_ep_keys(ep: str, to_state: str) -> tuple[str, ...]:
    by_name = {
        "lease": k.ep_lease(ep),
        "queue": k.ep_queue(ep),
        "st_in_flight": k.ep_state(ep, "in_flight"),
        "st_to": k.ep_state(ep, to_state),
        "paused": k.PAUSED,
        "st_paused": k.ep_state(ep, "paused"),
    }
    return tuple(by_name[name] for name in RESULT_KEYS[2:])


@lru_cache(maxsize=1024)
def _claim_keys(ep: str) -> tuple[str, ...]:
    by_name = {
        "queue": k.ep_queue(ep),
        "lease": k.ep_lease(ep),
        "st_pending": k.ep_state(ep, "pending"),
        "st_retrying": k.ep_state(ep, "retrying"),
        "st_in_flight": k.ep_state(ep, "in_flight"),
        "paused": k.PAUSED,
        "rate": k.ep_rate(ep),
    }
    return tuple(by_name[name] for name in CLAIM_KEYS)


@lru_cache(maxsize=1024)
def _route_ep_keys(ep: str) -> tuple[str, ...]:
    by_name = {
        "st_pending": k.ep_state(ep, "pending"),
        "st_skipped": k.ep_state(ep, "skipped"),
        "queue": k.ep_queue(ep),
        "paused": k.PAUSED,
        "st_paused": k.ep_state(ep, "paused"),
    }
    return tuple(by_name[name] for name in ROUTE_KEYS[1:])
