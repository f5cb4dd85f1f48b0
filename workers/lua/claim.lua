-- Claim due deliveries for one endpoint, within its in-flight limit across all worker processes.
-- KEYS: 1 ep queue, 2 ep lease, 3 relay:fanout
-- ARGV: 1 endpoint, 2 now ms, 3 serial (1|0), 4 in-flight limit, 5 lease ms, 6 batch size
-- Returns {code, wait_until_ms, nid1, attempt1, body1, ct1, source1, channel1, recv1, resend_of1, flag1, nid2, ...}
--   code 'ok' (items follow), 'idle' (nothing due), 'busy' (limit reached), 'blocked' (serial head
--   waits for an older notification's fan-out).
local ep, now, serial = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local limit, lease_ms, batch = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local q, lease = KEYS[1], KEYS[2]

-- leases past expiry belong to a worker that died mid-delivery: its items become due again
redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
local free = limit - redis.call('ZCARD', lease)
if free <= 0 then return {'busy', 0} end

local candidates
if serial then
  local head = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
  if #head == 0 then return {'idle', 0} end
  -- an older notification not yet routed may belong ahead of the head: wait for its fan-out
  local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  if #oldest > 0 and tonumber(oldest[2]) < tonumber(head[2]) then return {'blocked', 0} end
  local nxt = tonumber(redis.call('HGET', 'relay:d:' .. head[1] .. ':' .. ep, 'next') or '0')
  if nxt > now then return {'idle', nxt} end
  candidates = {head[1]}
else
  candidates = redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, math.min(free, batch))
  if #candidates == 0 then
    local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    if #first > 0 then return {'idle', tonumber(first[2])} end
    return {'idle', 0}
  end
end

local out = {'ok', 0}
for _, nid in ipairs(candidates) do
  local d = 'relay:d:' .. nid .. ':' .. ep
  local state = redis.call('HGET', d, 'state')
  local n = redis.call('HMGET', 'relay:n:' .. nid, 'body', 'ct', 'source', 'channel', 'recv', 'resend_of', 'flag')
  if not state or state == 'delivered' or state == 'failed' or state == 'skipped' or not n[1] then
    -- finished, or expired by retention: nothing to send
    redis.call('ZREM', q, nid)
  else
    if state == 'in_flight' then
      -- the previous holder's lease expired without a result
      redis.call('RPUSH', 'relay:a:' .. nid .. ':' .. ep, cjson.encode({
        n = tonumber(redis.call('HGET', d, 'attempts')), at = now, outcome = 'retry',
        error = 'worker_lost', message = 'no result before the lease expired (worker killed or stalled)'}))
    end
    redis.call('ZREM', 'relay:ep:' .. ep .. ':st:' .. state, nid)
    redis.call('ZADD', 'relay:ep:' .. ep .. ':st:in_flight', now, nid)
    local attempt = redis.call('HINCRBY', d, 'attempts', 1)
    redis.call('HSET', d, 'state', 'in_flight', 'updated', now, 'lease', now + lease_ms)
    redis.call('ZADD', lease, now + lease_ms, nid)
    -- a concurrent item's due time moves to its lease expiry: if this worker dies, it is due again then
    if not serial then redis.call('ZADD', q, now + lease_ms, nid) end
    out[#out + 1] = nid
    out[#out + 1] = attempt
    for j = 1, 7 do out[#out + 1] = n[j] or '' end
  end
end
if #out == 2 then return {'idle', 0} end
return out
