-- Claim a batch of notifications waiting for their fan-out, under a lease, and read what routing them
-- needs: one round trip for the batch (workers/fanout.py), route.lua then routes it in one more.
-- KEYS and ARGV are named in workers/wire.py (FANCLAIM). relay:fanout stays the set of everything not
-- yet routed (the serial lanes' claims read its head: order of receipt); the lease set beside it says
-- which of them a worker is routing now, until when (Redis's clock).
-- A notification another worker holds under a live lease is skipped, so workers share the fan-out
-- without routing the same one at once; one whose lease ran out (its worker was SIGKILLed or stalled
-- mid-batch) is claimed again. Routing it twice is harmless: route.lua creates each delivery once.
-- Returns {n, then per notification claimed: nid, the FANOUT_FIELDS values (false: missing; seq false:
-- the notification is gone), and its body as stored: plain, and compressed (relay/store/body.py; both
-- false unless A.body is '1', it has no type field or its body is not compressed yet: braw)}.
local now = now_ms()
local want, lease_ms = tonumber(ARGV[A.batch]), tonumber(ARGV[A.lease_ms])
-- run-out leases go: their notifications are claimable again (or were routed meanwhile)
redis.call('ZREMRANGEBYSCORE', KEYS[K.lease], '-inf', now)
-- the first want + held entries hold want unleased ones, if there are that many: a bounded read
local held = redis.call('ZCARD', KEYS[K.lease])
local nids = redis.call('ZRANGE', KEYS[K.fanout], 0, want + held - 1)
local out, n = {0}, 0
for _, nid in ipairs(nids) do
  if n >= want then break end
  if not redis.call('ZSCORE', KEYS[K.lease], nid) then
    redis.call('ZADD', KEYS[K.lease], now + lease_ms, nid)
    n = n + 1
    local nkey = key.notification(nid)
    local values = redis.call('HMGET', nkey, unpack(FANOUT_LIST))
    out[#out + 1] = nid
    for i = 1, #FANOUT_LIST do out[#out + 1] = values[i] end
    -- the body for a ``match`` filter, for a notification stored before types were, and to compress
    -- one the ingress stored as received (braw: route.lua writes it back compressed)
    local body = {false, false}
    local raw = values[FANOUT.braw]
    if values[FANOUT.seq] and raw then
      body[1] = redis.call('GET', key.body(nid))
    elseif values[FANOUT.seq] and (ARGV[A.body] == '1' or not values[FANOUT.type]) then
      body = redis.call('HMGET', nkey, 'body', 'bodyz')
      if not body[1] and not body[2] then body[2] = redis.call('GET', key.body(nid)) end
    end
    out[#out + 1], out[#out + 2] = body[1], body[2]
  end
end
out[1] = n
return out
