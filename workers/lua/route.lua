-- Route one notification to its endpoints: create each delivery record once, and queue it.
-- Idempotent: ARQ runs jobs at least once, and the sweeper may re-run a fan-out.
-- KEYS: 1 notification hash, 2 relay:fanout
-- ARGV: 1 nid, 2 now ms, 3 retention ms, then triples: endpoint, mode (serial|concurrent|skip), reason
-- Returns {created, oldest}: the number of delivery records created (-1 if the notification is gone),
-- and the seq of the oldest notification still waiting for its fan-out (-1: none), which tells the
-- worker whether a serial lane blocked behind an unrouted notification can go on.
local nid, now, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local seq = redis.call('HGET', KEYS[1], 'seq')
local function oldest()
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2])
end
if not seq then
  redis.call('ZREM', KEYS[2], nid)
  return {-1, oldest()}
end
local created, names = 0, {}
for i = 4, #ARGV, 3 do
  local ep, mode, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  names[#names + 1] = ep
  local d = 'relay:d:' .. nid .. ':' .. ep
  if redis.call('EXISTS', d) == 0 then
    created = created + 1
    if mode == 'skip' then
      redis.call('HSET', d, 'state', 'skipped', 'reason', reason, 'attempts', 0, 'created', now,
                 'updated', now, 'seq', seq)
      redis.call('ZADD', 'relay:ep:' .. ep .. ':st:skipped', now, nid)
    else
      redis.call('HSET', d, 'state', 'pending', 'attempts', 0, 'created', now, 'updated', now,
                 'seq', seq, 'mode', mode)
      redis.call('ZADD', 'relay:ep:' .. ep .. ':st:pending', now, nid)
      -- serial queues are ordered by receipt; concurrent ones by due time
      local score = now
      if mode == 'serial' then score = tonumber(seq) end
      redis.call('ZADD', 'relay:ep:' .. ep .. ':q', score, nid)
    end
    redis.call('PEXPIRE', d, retention)
  end
end
redis.call('HSET', KEYS[1], 'eps', table.concat(names, ','))
redis.call('ZREM', KEYS[2], nid)
return {created, oldest()}
