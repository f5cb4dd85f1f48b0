-- Store one verified notification and queue it for its fan-out (relay:fanout, which the workers claim in
-- batches: workers/lua/fanclaim.lua), atomically.
-- KEYS and ARGV are named in relay/store/wire.py (INGEST): K.ix_ref, K.ins_triple and K.ix_type are ''
-- when there is none, A.body '' when the body is empty (a field of the hash); after the named ARGV come the
-- field, value pairs of the notification hash.
-- The receipt time (``recv``) and the index scores come from Redis's clock (now_ms), never the ingress's.
-- Returns 0 for a duplicate (same source, channel and body), else the new seq.
if redis.call('EXISTS', KEYS[K.notification]) == 1 then
  return 0
end
local now = now_ms()
local nid, retention = ARGV[A.nid], tonumber(ARGV[A.retention_ms])
local seq = redis.call('INCR', KEYS[K.seq])
redis.call('HSET', KEYS[K.notification], 'seq', seq, 'recv', now, unpack(ARGV, #A_LIST + 1))
if KEYS[K.ins_triple] ~= '' then
  -- the INS md5_hash covers only sale_id, vendor_id and invoice_id: the same triple and message
  -- type under another message_id may be a replay with altered fields
  local first = redis.call('GET', KEYS[K.ins_triple])
  if not first then
    redis.call('SET', KEYS[K.ins_triple], ARGV[A.message_id], 'PX', retention)
  elseif first ~= ARGV[A.message_id] then
    redis.call('HSET', KEYS[K.notification], 'flag', 'ins_replay_suspect', 'flag_first', first)
  end
end
redis.call('PEXPIRE', KEYS[K.notification], retention)
-- the body in a key of its own: the hash keeps only short values, which Redis stores compactly (a
-- listpack); one long value would make it a hash table, ~700 bytes more. Stored as received (the
-- hash's braw field says so): the fan-out compresses it (workers/lua/route.lua), off the ingress's CPU
if ARGV[A.body] ~= '' then redis.call('SET', KEYS[K.body], ARGV[A.body], 'PX', retention) end
index_receipt(now, nid, KEYS[K.ix_all], KEYS[K.ix_channel], KEYS[K.ix_source])
-- counted per minute as it is stored, so health reads a source's accepted share from a few counters,
-- never by walking its index (relay/store/lua/health.lua); resends (resend.lua) are not counted
local accepted = key.source_accepted(ARGV[A.source], math.floor(now / 60000))
if redis.call('INCR', accepted) == 1 then redis.call('PEXPIRE', accepted, ARGV[A.accepted_ttl_ms]) end
index_within(KEYS[K.ix_ref], now, nid, retention)
index_within(KEYS[K.ix_type], now, nid, retention)
redis.call('ZADD', KEYS[K.fanout], seq, nid)
return seq
