-- Store one verified notification and enqueue its ARQ fan-out job, atomically.
-- KEYS: 1 notification hash, 2 seq counter, 3 ix:all, 4 ix:ch, 5 ix:src, 6 ix:ref ('' if none),
--       7 fanout zset, 8 arq job key, 9 arq queue, 10 INS signed-triple key ('' if not checked),
--       11 ix:type (event type index, '' if none)
-- ARGV: 1 nid, 2 retention ms, 3 pickled arq job, 4 job expiry ms, 5 fan-out job id,
--       6 INS message_id, 7.. field, value pairs for the notification hash
-- The receipt time (``recv``), the index scores and the fan-out job's score come from Redis's clock
-- (TIME): an ingress whose clock runs ahead would otherwise schedule the fan-out in the future.
-- Returns 0 for a duplicate (same source, channel and body), else the new seq.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nid, retention = ARGV[1], tonumber(ARGV[2])
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'seq', seq, 'recv', now, unpack(ARGV, 7))
if KEYS[10] ~= '' then
  -- the INS md5_hash covers only sale_id, vendor_id and invoice_id: the same triple and message
  -- type under another message_id may be a replay with altered fields
  local first = redis.call('GET', KEYS[10])
  if not first then
    redis.call('SET', KEYS[10], ARGV[6], 'PX', retention)
  elseif first ~= ARGV[6] then
    redis.call('HSET', KEYS[1], 'flag', 'ins_replay_suspect', 'flag_first', first)
  end
end
redis.call('PEXPIRE', KEYS[1], retention)
redis.call('ZADD', KEYS[3], now, nid)
redis.call('ZADD', KEYS[4], now, nid)
redis.call('ZADD', KEYS[5], now, nid)
if KEYS[6] ~= '' then
  -- a reference (a licence code) can live for years: its index keeps only the retention period
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - retention)
  redis.call('ZADD', KEYS[6], now, nid)
  redis.call('PEXPIRE', KEYS[6], retention)
end
if KEYS[11] ~= '' then
  -- a few types take most notifications: the index keeps only the retention period
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', now - retention)
  redis.call('ZADD', KEYS[11], now, nid)
  redis.call('PEXPIRE', KEYS[11], retention)
end
redis.call('ZADD', KEYS[7], seq, nid)
redis.call('SET', KEYS[8], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[9], now, ARGV[5])
return seq
