-- Record the result of one delivery attempt and move the delivery to its next state.
-- KEYS: 1 delivery hash, 2 attempts list, 3 ep queue, 4 ep lease, 5 ep minute hash, 6 relay:stats
-- ARGV: 1 nid, 2 endpoint, 3 attempt number, 4 outcome (delivered|retry|failed), 5 now ms,
--       6 next due ms (retry), 7 attempt JSON, 8 retention ms, 9 last status text,
--       10.. field, increment pairs for relay:stats
-- Returns 1, or 0 when the attempt is stale (its lease expired and another worker took over).
local nid, ep, attempt, outcome = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now, nxt, retention = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
redis.call('RPUSH', KEYS[2], ARGV[7])
redis.call('LTRIM', KEYS[2], -200, -1)
redis.call('PEXPIRE', KEYS[2], retention)
local d = redis.call('HMGET', KEYS[1], 'state', 'attempts', 'mode')
if d[1] ~= 'in_flight' or tonumber(d[2]) ~= attempt then
  return 0
end
redis.call('ZREM', KEYS[4], nid)
redis.call('ZREM', 'relay:ep:' .. ep .. ':st:in_flight', nid)
local state = outcome
if outcome == 'retry' then
  state = 'retrying'
  redis.call('HSET', KEYS[1], 'next', nxt)
  if d[3] ~= 'serial' then redis.call('ZADD', KEYS[3], nxt, nid) end
else
  redis.call('HDEL', KEYS[1], 'next')
  redis.call('ZREM', KEYS[3], nid)
end
redis.call('HSET', KEYS[1], 'state', state, 'updated', now, 'last', ARGV[9])
if outcome == 'delivered' then redis.call('HSET', KEYS[1], 'delivered_at', now) end
redis.call('ZADD', 'relay:ep:' .. ep .. ':st:' .. state, now, nid)
local counter = 'ok'
if outcome ~= 'delivered' then counter = 'fail' end
redis.call('HINCRBY', KEYS[5], counter, 1)
if outcome == 'failed' then redis.call('HINCRBY', KEYS[5], 'gaveup', 1) end
redis.call('EXPIRE', KEYS[5], 90000)
if outcome == 'delivered' then
  redis.call('HSET', KEYS[6], ep .. '|last_ok', now)
else
  redis.call('HSET', KEYS[6], ep .. '|last_fail', now)
end
for i = 10, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[6], ARGV[i], ARGV[i + 1])
end
return 1
