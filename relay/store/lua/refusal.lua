-- Count one refusal of a source's notification (relay/web/ingress.py) for health and alerts.
-- KEYS and ARGV are named in relay/store/wire.py (REFUSAL). The per-minute counter,
-- key.source_rejects(src, minute), is built here: its minute is Redis's.
-- An incident begins (``first``) at a refusal that follows none, or follows enough accepted
-- notifications that the previous incident had ended: so ``first`` is "refusing since".
-- Stamped on Redis's clock (TIME), the one health reads the window on: an ingress whose clock is off
-- would otherwise file its refusals outside the window and source_rejecting would never rise.
local now = now_ms()
local minute_key = key.source_rejects(ARGV[A.source], math.floor(now / 60000))
redis.call('INCR', minute_key)
redis.call('PEXPIRE', minute_key, ARGV[A.minute_ttl_ms])
local last = redis.call('HGET', KEYS[K.lastrej], 'at')
-- resends (ids `X~rN`) are the operator's, not 2Checkout's: they never end an incident (_received.lua)
local cap = tonumber(ARGV[A.recovery_accepted])
if not last or received(KEYS[K.ix_source], '(' .. last, cap) >= cap then
  redis.call('HSET', KEYS[K.lastrej], 'first', now)
end
redis.call('HSET', KEYS[K.lastrej], 'at', now, 'reason', ARGV[A.reason], 'detail', ARGV[A.detail],
           'channel', ARGV[A.channel])
redis.call('PEXPIRE', KEYS[K.lastrej], ARGV[A.lastrej_ttl_ms])
return 1
