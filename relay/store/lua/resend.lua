-- Record a resend of one original notification as a new notification and queue it for its fan-out,
-- atomically (the same writes ingest.lua makes for a received notification).
-- KEYS and ARGV are named in relay/store/wire.py (RESEND): K.ix_ref, K.idempotency and K.ix_type are ''
-- when there is none; A.targets is the comma-separated endpoints.
-- Times (receipt, index scores) come from Redis's clock (now_ms), never from the caller's.
-- Returns {'created', new nid}, {'reused', earlier resend nid} when the idempotency map already has
-- one for this original, or {'gone', ''} when the original no longer exists.
local now = now_ms()
local orig_nid, nid, retention = ARGV[A.original_nid], ARGV[A.nid], tonumber(ARGV[A.retention_ms])
if KEYS[K.idempotency] ~= '' then
  local earlier = redis.call('HGET', KEYS[K.idempotency], orig_nid)
  if earlier then return {'reused', earlier} end
end
local orig = redis.call('HGETALL', KEYS[K.original])
if #orig == 0 then return {'gone', ''} end
-- the body and parsed facts are copied verbatim; receipt, routing and lineage are the resend's own
local own = {seq = true, recv = true, eps = true, targets = true, resend_of = true}
local fields = {}
for i = 1, #orig, 2 do
  if not own[orig[i]] then
    fields[#fields + 1] = orig[i]
    fields[#fields + 1] = orig[i + 1]
  end
end
local seq = redis.call('INCR', KEYS[K.seq])
redis.call('HSET', KEYS[K.notification], 'seq', seq, 'recv', now, 'resend_of', orig_nid, 'targets', ARGV[A.targets], unpack(fields))
redis.call('PEXPIRE', KEYS[K.notification], retention)
-- the body is copied as stored: a field of the hash (copied above), or its own compressed key
local bodyz = redis.call('GET', KEYS[K.original_body])
if bodyz then redis.call('SET', KEYS[K.body], bodyz, 'PX', retention) end
index_receipt(now, nid, KEYS[K.ix_all], KEYS[K.ix_channel], KEYS[K.ix_source])
index_within(KEYS[K.ix_ref], now, nid, retention)
index_within(KEYS[K.ix_type], now, nid, retention)
redis.call('ZADD', KEYS[K.fanout], seq, nid)
redis.call('ZADD', KEYS[K.resends], now, nid)
redis.call('PEXPIRE', KEYS[K.resends], retention)
-- the original's failed deliveries to these endpoints are resolved once this resend is delivered
-- there (relay/store/lua/resolve.lua looks for it)
for ep in string.gmatch(ARGV[A.targets], '[^,]+') do
  redis.call('ZADD', key.ep_resent(ep), now, orig_nid)
  redis.call('PEXPIRE', key.ep_resent(ep), retention)
end
if KEYS[K.idempotency] ~= '' then
  redis.call('HSET', KEYS[K.idempotency], orig_nid, nid)
  redis.call('PEXPIRE', KEYS[K.idempotency], ARGV[A.idempotency_ttl_ms])
end
return {'created', nid}
