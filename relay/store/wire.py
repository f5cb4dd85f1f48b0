"""What the store's Lua scripts (relay/store/lua/) and Python exchange, named once, here.

Each ``Spec`` names one script's KEYS and ARGV in order (relay/store/scripts.py, the one loader, turns
them into ``K.*`` and ``A.*`` for the script, and packs the Python side by the same names); the field
tuples name the rows a script returns. workers/wire.py does the same for the workers' scripts.
tests/test_lua_keys.py checks that every script has its spec and reads KEYS and ARGV only by name.
"""

from __future__ import annotations

from relay.store.scripts import Spec, names

# health.lua: one row per endpoint and one per source, their fields in these orders (relay/store/stats.py)
EP_FIELDS = (
    "n_pending",
    "n_in_flight",
    "n_retrying",
    "n_failed",
    "n_delivered",
    "n_skipped",
    "n_resolved",
    "pending_at",  # the pending head's score: when the oldest never-attempted delivery became pending
    # per_order: the oldest pending delivery held behind an older delivery of its own order that failed
    # an attempt (when it became pending, and that head's last result): it waits for that head, not for
    # the endpoint's rate_limit
    "order_held_at",
    "order_head_last",
    # the endpoint's window (w1), the last hour (w2), the last day (w3), by each delivery's last change
    *(f"w{w}_{s}" for w in (1, 2, 3) for s in ("retrying", "failed", "delivered", "resolved")),
    "head_nid",
    "head_last",
    "head_at",
    "held_back",  # a serial endpoint's head, once it failed an attempt
    "first_failing",  # when the first failing delivery in the window first failed
    "last_error",
    "last_error_at",  # the latest failing delivery's last result and its time
    "oldest_recv",  # the earliest receipt among the waiting (pending or retrying) deliveries
    "open_since",
    "last_ok",
    "last_fail",
    "resent",
)
SRC_FIELDS = (
    "refused",
    "accepted",
    "last_at",
    "first",
    "reason",
    "detail",
    "channel",
    "after",
    "opened",
    "last_received",
    "watched",
)

# one verified notification stored and queued for its fan-out (relay/store/ingest.py); the hot path
INGEST = Spec(
    ("ingest",),
    fragments=("_index",),
    keys=(
        "notification",
        "seq",
        "ix_all",
        "ix_channel",
        "ix_source",
        "ix_ref",
        "fanout",
        "ins_triple",
        "ix_type",
        "body",
    ),
    args=("nid", "retention_ms", "message_id", "source", "accepted_ttl_ms", "body"),
    args_rest="field, value pairs of the notification hash",
    # '' when there is none (body: empty, a field of the hash)
    optional=frozenset({"ix_ref", "ins_triple", "ix_type", "body"}),
)
# one resend of an original as a new notification (relay/store/resend.py)
RESEND = Spec(
    ("resend",),
    fragments=("_index",),
    keys=(
        "original",
        "notification",
        "seq",
        "ix_all",
        "ix_channel",
        "ix_source",
        "ix_ref",
        "fanout",
        "resends",
        "idempotency",
        "ix_type",
        "original_body",
        "body",
    ),
    args=("original_nid", "nid", "retention_ms", "targets", "idempotency_ttl_ms"),
    optional=frozenset({"ix_ref", "idempotency", "ix_type"}),  # '' when there is none
)
# one refused notification of a source counted (relay/store/ingest.py)
REFUSAL = Spec(
    ("refusal",),
    fragments=("_received",),
    keys=("lastrej", "ix_source"),
    args=("source", "reason", "detail", "channel", "minute_ttl_ms", "lastrej_ttl_ms", "recovery_accepted"),
)
# failed deliveries of one endpoint resolved by a delivered resend (relay/store/resolve.py)
RESOLVE = Spec(("resolve",), keys=("resent", "failed", "resolved"), args=("ep", "per_call", "retention_ms"))
# the configured endpoints registered, the others' removal recorded (relay/store/endpoints.py)
ENDPOINTS = Spec(
    ("endpoints",),
    keys=("registry", "removed", "seq"),
    args=("when", "configured", "removing", "retention_ms", "states"),
)
# an operator action: pause, resume, retry, cancel, cancel_removed (relay/store/control.py); the action's
# own ARGV are '' where it takes none (control.lua says which). An action on a whole endpoint is paged:
# ``page`` deliveries a call, ``done`` counted by the earlier pages, ``cursor`` where retry goes on
CONTROL = Spec(
    ("control",),
    fragments=("_rank",),
    keys=("paused", "audit"),
    args=(
        "action",
        "ep",
        "audit",
        "audit_cap",
        "nid",
        "who",
        "upto",
        "from_state",
        "offset",
        "page",
        "done",
        "always",
        "cursor",
    ),
    optional=frozenset({"nid", "who", "upto", "from_state", "offset", "page", "done", "always", "cursor"}),
)
# every figure of health in one read (relay/store/stats.py)
# what it is asked, after the named ARGV: per endpoint (serial: 1 or 0), then per source (silence_ms: 0 for
# no expect_within_hours)
HEALTH_EP_ARGS = ("name", "window_ms", "serial")
HEALTH_SRC_ARGS = ("name", "silence_ms")
HEALTH = Spec(
    ("health",),
    fragments=("_received",),
    tables=lambda: (
        names("EP", EP_FIELDS)
        + names("SRC", SRC_FIELDS)
        + names("HEALTH_EP", HEALTH_EP_ARGS)
        + names("HEALTH_SRC", HEALTH_SRC_ARGS)
    ),
    keys=("ix_all", "stats"),
    args=("now_ms", "endpoints", "sources", "source_window_minutes"),
    args_rest="A.endpoints records of HEALTH_EP_ARGS, then A.sources records of HEALTH_SRC_ARGS",
)
# one page of a delivery state across endpoints (relay/store/queries.py): KEYS are the endpoints' state
# indexes; after_score/after_nid the cursor ('' for the first page), lo the lowest score ('-inf' for none)
MERGE = Spec(
    ("merge",),
    fragments=("_rank",),
    keys=("listed",),
    keys_rest="the state index of each endpoint",
    args=("limit", "budget", "lo", "after_score", "after_nid", "began", "ttl"),
    optional=frozenset({"after_score", "after_nid", "began"}),
)
# the rows of a listing page (relay/store/queries.py): a notification's summary fields, and its deliveries'
SUMMARY_FIELDS = ("channel", "source", "recv", "ref", "status", "mtype", "type", "test", "resend_of", "eps", "targets")
DELIVERY_SUMMARY = ("state", "attempts", "last", "updated", "next", "resolved_by", "resolved_at")
ROWS = Spec(
    ("rows",),
    tables=lambda: names("SUMMARY", SUMMARY_FIELDS) + names("DELIVERY", DELIVERY_SUMMARY),
    args_rest="the notifications' ids",
)
# the dashboard's hourly charts (relay/store/stats.py)
HOURLY = Spec(("hourly",), args=("first_ms", "hour_ms", "hours"), args_rest="the endpoint names")
