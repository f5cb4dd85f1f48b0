"""Every Redis key and queue name the relay uses, in one place.

Layout (``{nid}`` = notification id, ``{ep}`` = endpoint name):

=====================================  =====  ==============================================================
key                                    type   what
=====================================  =====  ==============================================================
relay:seq                              str    receipt counter; a notification's ``seq`` is its order of receipt
relay:n:{nid}                          hash   the notification: ``ct``, ``source``, ``channel``, ``recv`` (ms),
                                              ``seq``, ``algo``, the parsed facts, ``braw`` while relay:b is not
                                              compressed yet, and the raw ``body`` when it is not in relay:b
                                              (empty, or stored before issue 26; relay/store/body.py)
relay:b:{nid}                          str    its body: as received from the ingress, zlib-compressed in place by
                                              the fan-out (workers/lua/route.lua) when that is smaller; same TTL
relay:ix:all / ch:{c} / src:{s}        zset   nid -> received ms, for listing newest first
relay:ix:ref:{ref}                     zset   nid -> received ms, by REFNO / sale_id / LICENSE_CODE; trimmed
                                              to the retention period on every write
relay:ix:type:{type}                   zset   nid -> received ms, by event type (relay/events/); trimmed
                                              to the retention period on every write
relay:fanout                           zset   nid -> seq of notifications not yet routed to endpoints
relay:fanlease                         zset   nid -> lease expiry ms: notifications of relay:fanout a worker is
                                              routing now (workers/lua/fanclaim.lua); a lapsed lease is free
relay:d:{nid}:{ep}                     hash   one delivery: ``state``, ``attempts``, ``next`` (ms), ...
relay:a:{nid}:{ep}                     list   its attempts, one compact JSON object each; the last ATTEMPTS_CAP are
                                              kept (the delivery's ``attempts_dropped`` counts the rest)
relay:ep:{ep}:st:{state}               zset   nid -> last change ms, per endpoint and delivery state
relay:ep:{ep}:q                        zset   work queue: nid -> seq (serial, per_order) or due ms (concurrent)
relay:ep:{ep}:lease                    zset   nid -> lease expiry ms: what is in flight, across processes
relay:ep:{ep}:rate                     hash   rate_limit state (workers/lua/rate.lua): ``tat`` (GCRA's theoretical
                                              arrival time, ms), requests in this and the last window, when a
                                              claim was last held back; expires when idle
relay:ep:{ep}:m:{minute}               hash   legacy per-minute attempt counts: no longer written, they expire
                                              within 25 h; only bench/health.py writes them, to time the old read
relay:stats                            hash   cumulative counters read by /metrics
relay:rejects                          list   capped log of rejected requests (JSON)
relay:workers                          zset   worker name -> last heartbeat ms
relay:ins:{src}:{sale}:{inv}:{type}    str    first INS message_id seen for a signed triple and type
relay:resends:{nid}                    zset   resend ids of an original -> created ms (relay/store/resend.py)
relay:resend-seq:{nid}                 str    counter behind resend ids ``{nid}~r{n}``
relay:idem:{key} (+ :map, :result)     -      bulk-resend idempotency keys, kept 24 h
relay:dash:session:{sid}               str    a dashboard session, until it expires or logs out
relay:alert:{subject} (+ :open)        str    alert rate limit and open incident (since ms) (workers/alerts.py);
                                              subject ``ep:{ep}``, ``src:{src}``, or ``rec:{src}`` (missing
                                              orders); both expire
relay:ep:{ep}:resent                   zset   original nid -> ms: failed deliveries resent to ep, until the
                                              resend is delivered (relay/store/resolve.py)
relay:ep:{ep}:st:resolved              zset   nid -> ms it failed: failed deliveries whose resend was delivered
relay:src:{src}:rej:{minute}           str    refusals of a source in one minute, kept 2 h
relay:src:{src}:acc:{minute}           str    notifications of a source stored in one minute (not resends), kept
                                              2 h: health's accepted count is read from these, never from the index
relay:src:{src}:lastrej                hash   the latest refusal (``at``, ``reason``, ``detail``, ``channel``)
                                              and when the incident began (``first``), kept 49 h
relay:rec:{src}:seen                   hash   order RefNo -> "STATUS first_seen_ms": the orders of 2Checkout's listing
                                              in the lookback window, replaced by each pass (relay/store/reconcile.py)
relay:rec:{src}:state                  str    JSON: the last reconciliation (missing orders, error); expires
relay:rec:{src}:turn                   str    whose pass runs now (``run:{who}``, lease) or ``idle`` until the next
                                              is due: one pass at a time across all workers, on Redis's clock
relay:src:{src}:watched                str    ms the relay first ran with ``expect_within_hours`` for it, 7 days
relay:alert:lease:ingress              str    the ``relay serve`` process that checks for no_worker (relay/alerting)
relay:list:{token}                     zset   nid -> ms: a state listing's notifications that its later pages
                                              could meet again (relay/store/lua/merge.lua); expires 1 h after
                                              its last page
relay:audit                            list   operator actions, newest first, JSON each, capped (relay/store/audit.py)
relay:paused                           hash   endpoint -> JSON {at, by}: endpoints paused by an operator
relay:ep-added                         hash   endpoint -> ms it was added by a config reload (fan-out routes it
                                              only notifications received after that)
relay:endpoints                        hash   endpoint -> JSON of its routing rule, as the last worker to start
                                              or reload with it configured wrote it (relay/store/endpoints.py)
relay:ep-removed                       hash   endpoint -> JSON {at, seq, rule, by}: removed by a reload or a
                                              restart; its work up to seq ends cancelled; kept for retention
relay:procs                            hash   process name -> JSON {role, config hash, seen ms} (relay/store/reload.py);
                                              entries not refreshed for a day are dropped
relay:reload (pub/sub channel)         -      reload requests; answers go to relay:reload:{id} (list, 60 s)
relay:queue                            zset   the ARQ queue: the worker's cron jobs (and the fan-out jobs
arq:job:{id}                           str    an ingress older than the batched fan-out wrote, one per notification)
=====================================  =====  ==============================================================
"""

SEQ = "relay:seq"
FANOUT = "relay:fanout"
# not under relay:fanout: the worker's wake (workers/wake.py) tracks that prefix, and a lease is no news
FANOUT_LEASE = "relay:fanlease"
STATS = "relay:stats"
REJECTS = "relay:rejects"
WORKERS = "relay:workers"
IDX_ALL = "relay:ix:all"
AUDIT = "relay:audit"
PAUSED = "relay:paused"
EP_ADDED = "relay:ep-added"
EP_REGISTRY = "relay:endpoints"
EP_REMOVED = "relay:ep-removed"
PROCS = "relay:procs"
RELOAD_CHANNEL = "relay:reload"
# the id of the latest reload request: a process that (re)subscribes to RELOAD_CHANNEL compares it with
# the last it saw, so a request published while it was not subscribed (a Redis restart) is not lost
RELOAD_LAST = "relay:reload:last"
# every key of one endpoint, and every source index, starts so (workers/retention.py sweeps them)
EP_PREFIX = "relay:ep:"
IDX_SOURCE_PREFIX = "relay:ix:src:"

QUEUE_NAME = "relay:queue"

REJECTS_CAP = 1000
DAY_MS = 86_400_000
# the cyclic GC runs less often in the long-lived processes (see relay.server.serve)
GC_THRESHOLD = 20_000
# seconds; shared by the ingress ack histogram and the delivery latency counters in Redis
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# attempt records kept per delivery (complete.lua and claim.lua trim to it, counting what they drop)
ATTEMPTS_CAP = 200

# the audit log keeps this many newest entries
AUDIT_CAP = 10_000
# a process that has not reported its config hash for this long is no longer counted as live
PROC_ALIVE_MS = 30_000

# paused: waiting while its endpoint is paused; cancelled: taken out of the queue by an operator or by
# a reload that removed its endpoint (resendable, never counted as failing)
STATES = ("pending", "in_flight", "retrying", "delivered", "failed", "skipped", "paused", "cancelled")
# the states of a delivery still waiting to be sent
WAITING = ("pending", "retrying", "paused")

# not a delivery state: the index a failed delivery moves to once a resend of it was delivered
RESOLVED = "resolved"
# receipt to delivered spans the retry schedule: seconds up to 2Checkout's 48 h
R2D_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.5,
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    12 * 3600.0,
    24 * 3600.0,
    48 * 3600.0,
)
# the relay:stats field prefix of those buckets (``{ep}|r2d|h{i}``); the ``{ep}|r2d|{i}`` fields of
# earlier workers used LATENCY_BUCKETS and are read into the same histogram by their upper bounds
R2D_FIELD = "h"
SOURCE_REJECTS_TTL_MS = 2 * 3_600_000
# the accepted counters live as long: both outlast the longest source_window_minutes (120)
SOURCE_ACCEPTED_TTL_MS = SOURCE_REJECTS_TTL_MS
SOURCE_LASTREJ_TTL_MS = 49 * 3_600_000
# a state listing's pages can follow each other this long (relay/store/lua/merge.lua's listed set)
LISTING_SEEN_TTL_MS = 3_600_000
ALERT_OPEN_TTL_MS = 7 * DAY_MS
# a refusing source has recovered once this many notifications were accepted after its last refusal
SOURCE_RECOVERY_ACCEPTED = 5
SOURCE_WATCHED_TTL_MS = 7 * DAY_MS
ALERT_INGRESS_LEASE = "relay:alert:lease:ingress"


# the keys the Lua scripts build themselves (per notification, or per minute): relay/store/scripts.py
# turns each template into a Lua function of the same name, so both sides spell a key one way
KEY_TEMPLATES = {
    "notification": "relay:n:{nid}",
    "body": "relay:b:{nid}",
    "delivery": "relay:d:{nid}:{ep}",
    "attempts": "relay:a:{nid}:{ep}",
    "ep_state": "relay:ep:{ep}:st:{state}",
    "ep_queue": "relay:ep:{ep}:q",
    "ep_lease": "relay:ep:{ep}:lease",
    "ep_rate": "relay:ep:{ep}:rate",
    "ep_minute": "relay:ep:{ep}:m:{minute}",
    "ep_resent": "relay:ep:{ep}:resent",
    "resends": "relay:resends:{nid}",
    "source_rejects": "relay:src:{src}:rej:{minute}",
    "source_accepted": "relay:src:{src}:acc:{minute}",
    "source_watched": "relay:src:{src}:watched",
    "source_lastrej": "relay:src:{src}:lastrej",
    "idx_source": "relay:ix:src:{src}",
    "alert_open": "relay:alert:{subject}:open",
}


def notification(nid: str) -> str:
    return KEY_TEMPLATES["notification"].format(nid=nid)


def body(nid: str) -> str:
    """A notification's body beside its hash: as received, then compressed by the fan-out (relay/store/body.py)."""
    return KEY_TEMPLATES["body"].format(nid=nid)


def idx_channel(channel: str) -> str:
    return f"relay:ix:ch:{channel}"


def idx_source(source: str) -> str:
    return KEY_TEMPLATES["idx_source"].format(src=source)


def idx_type(etype: str) -> str:
    return f"relay:ix:type:{etype}"


def idx_ref(ref: str) -> str:
    return f"relay:ix:ref:{ref}"


def ins_triple(source: str, sale_id: str, invoice_id: str, message_type: str) -> str:
    return f"relay:ins:{source}:{sale_id}:{invoice_id}:{message_type}"


def delivery(nid: str, ep: str) -> str:
    return KEY_TEMPLATES["delivery"].format(nid=nid, ep=ep)


def attempts(nid: str, ep: str) -> str:
    return KEY_TEMPLATES["attempts"].format(nid=nid, ep=ep)


def ep_state(ep: str, state: str) -> str:
    return KEY_TEMPLATES["ep_state"].format(ep=ep, state=state)


def ep_queue(ep: str) -> str:
    return KEY_TEMPLATES["ep_queue"].format(ep=ep)


def ep_lease(ep: str) -> str:
    return KEY_TEMPLATES["ep_lease"].format(ep=ep)


def ep_rate(ep: str) -> str:
    return KEY_TEMPLATES["ep_rate"].format(ep=ep)


def ep_minute(ep: str, minute: int) -> str:
    return KEY_TEMPLATES["ep_minute"].format(ep=ep, minute=minute)


def ep_resent(ep: str) -> str:
    return KEY_TEMPLATES["ep_resent"].format(ep=ep)


def source_rejects(src: str, minute: int) -> str:
    return KEY_TEMPLATES["source_rejects"].format(src=src, minute=minute)


def source_accepted(src: str, minute: int) -> str:
    return KEY_TEMPLATES["source_accepted"].format(src=src, minute=minute)


def source_lastrej(src: str) -> str:
    return KEY_TEMPLATES["source_lastrej"].format(src=src)


def source_watched(src: str) -> str:
    """ms the relay first ran with the source's ``expect_within_hours`` (source_silent counts from it
    while nothing was ever received); refreshed by the alert checks, expires SOURCE_WATCHED_TTL_MS later."""
    return KEY_TEMPLATES["source_watched"].format(src=src)


def listing_seen(token: str) -> str:
    """zset of one state listing across endpoints (relay/store/queries.py): nid -> its lowest entry."""
    return f"relay:list:{token}"


def resends(nid: str) -> str:
    """zset of the resends of one original: resend nid -> created ms."""
    return KEY_TEMPLATES["resends"].format(nid=nid)


def resend_seq(nid: str) -> str:
    return f"relay:resend-seq:{nid}"


def idempotency(key: str) -> tuple[str, str, str]:
    """A bulk resend's fingerprint (SET NX), its original -> resend map, and its stored answer."""
    base = f"relay:idem:{key}"
    return base, f"{base}:map", f"{base}:result"


def dash_session(sid: str) -> str:
    return f"relay:dash:session:{sid}"


def alert(subject: str) -> str:
    """ms of the last alert about ``subject`` (``ep:{ep}`` or ``src:{src}``); expires after frequency_hours."""
    return f"relay:alert:{subject}"


def alert_open(subject: str) -> str:
    """ms the incident began, while an alert about ``subject`` still owes a recovery message.

    Refreshed to ALERT_OPEN_TTL_MS on every check while the problem lasts, so it is always bounded."""
    return KEY_TEMPLATES["alert_open"].format(subject=subject)


def reconcile_seen(src: str) -> str:
    """Orders of the last listing: RefNo -> "STATUS first_seen_ms" (relay/store/reconcile.py)."""
    return f"relay:rec:{src}:seen"


def reconcile_state(src: str) -> str:
    """The last reconciliation of a source, JSON (relay/store/reconcile.py)."""
    return f"relay:rec:{src}:state"


def reconcile_turn(src: str) -> str:
    """The lease of the running pass, then the wait until the next one (relay/store/reconcile.py)."""
    return f"relay:rec:{src}:turn"


def reload_answers(request_id: str) -> str:
    """List where each process answers one reload request (relay/store/reload.py)."""
    return f"relay:reload:{request_id}"


def webhook_id(nid: str, ep: str) -> str:
    """Standard Webhooks ``webhook-id``: the same for every attempt of one delivery. A resend is a
    notification of its own (``X~r1``), so it has an id of its own (workers/forward.py)."""
    return f"{nid}:{ep}"
