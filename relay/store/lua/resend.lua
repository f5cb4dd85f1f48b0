-- Record a resend of one original notification as a new notification and enqueue its ARQ fan-out
-- job, atomically (the same writes ingest.lua makes for a received notification).
-- KEYS: 1 original hash, 2 new hash, 3 seq counter, 4 ix:all, 5 ix:ch, 6 ix:src, 7 ix:ref ('' if none),
--       8 fanout zset, 9 resends of the original (zset), 10 arq job key, 11 arq queue,
--       12 idempotency map (hash original -> resend, '' if none), 13 ix:type ('' if none)
-- ARGV: 1 original nid, 2 new nid, 3 retention ms, 4 pickled arq job, 5 job expiry ms,
--       6 fan-out job id, 7 targets (comma-separated endpoints), 8 idempotency ttl ms
-- Times (receipt, index and job scores) come from Redis's clock (TIME), never from the caller's.
-- Returns {'created', new nid}, {'reused', earlier resend nid} when the idempotency map already has
-- one for this original, or {'gone', ''} when the original no longer exists.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local orig_nid, nid, retention = ARGV[1], ARGV[2], tonumber(ARGV[3])
if KEYS[12] ~= '' then
  local earlier = redis.call('HGET', KEYS[12], orig_nid)
  if earlier then return {'reused', earlier} end
end
local orig = redis.call('HGETALL', KEYS[1])
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
local seq = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], 'seq', seq, 'recv', now, 'resend_of', orig_nid, 'targets', ARGV[7], unpack(fields))
redis.call('PEXPIRE', KEYS[2], retention)
redis.call('ZADD', KEYS[4], now, nid)
redis.call('ZADD', KEYS[5], now, nid)
redis.call('ZADD', KEYS[6], now, nid)
if KEYS[7] ~= '' then
  -- a reference (a licence code) can live for years: its index keeps only the retention period
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - retention)
  redis.call('ZADD', KEYS[7], now, nid)
  redis.call('PEXPIRE', KEYS[7], retention)
end
if KEYS[13] ~= '' then
  -- a few types take most notifications: the index keeps only the retention period
  redis.call('ZREMRANGEBYSCORE', KEYS[13], '-inf', now - retention)
  redis.call('ZADD', KEYS[13], now, nid)
  redis.call('PEXPIRE', KEYS[13], retention)
end
redis.call('ZADD', KEYS[8], seq, nid)
redis.call('ZADD', KEYS[9], now, nid)
redis.call('PEXPIRE', KEYS[9], retention)
redis.call('SET', KEYS[10], ARGV[4], 'PX', ARGV[5])
redis.call('ZADD', KEYS[11], now, ARGV[6])
-- the original's failed deliveries to these endpoints are resolved once this resend is delivered
-- there (relay/store/lua/resolve.lua looks for it)
for ep in string.gmatch(ARGV[7], '[^,]+') do
  redis.call('ZADD', key.ep_resent(ep), now, orig_nid)
  redis.call('PEXPIRE', key.ep_resent(ep), retention)
end
if KEYS[12] ~= '' then
  redis.call('HSET', KEYS[12], orig_nid, nid)
  redis.call('PEXPIRE', KEYS[12], ARGV[8])
end
return {'created', nid}
