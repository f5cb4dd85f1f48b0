-- Route one notification to its endpoints: create each delivery record once, and queue it.
-- Idempotent: ARQ runs jobs at least once, and the sweeper may re-run a fan-out.
-- KEYS and ARGV are named in workers/wire.py (ROUTE): after K.notification and K.fanout come per route the
-- keys named by ROUTE_KEYS_LIST; after A.nid and A.retention_ms, per route the fields named by ROUTE_LIST
-- (mode: serial, concurrent, per_order, skip, or removed: recorded cancelled)
-- Times come from Redis's clock (now_ms), never from the worker's.
-- Returns {created, oldest}: the number of delivery records created (-1 if the notification is gone),
-- and the seq of the oldest notification still waiting for its fan-out (-1: none), which tells the
-- worker whether a serial lane blocked behind an unrouted notification can go on.
local now = now_ms()
local nid, retention = ARGV[A.nid], tonumber(ARGV[A.retention_ms])
local seq = redis.call('HGET', KEYS[K.notification], 'seq')
local function oldest()
  local first = redis.call('ZRANGE', KEYS[K.fanout], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2])
end
if not seq then
  redis.call('ZREM', KEYS[K.fanout], nid)
  return {-1, oldest()}
end
local created, names = 0, {}
local ki = 3
for i = #A_LIST + 1, #ARGV, #ROUTE_LIST do
  local r = {unpack(ARGV, i, i + #ROUTE_LIST - 1)}
  local kk = {unpack(KEYS, ki, ki + #ROUTE_KEYS_LIST - 1)}
  ki = ki + #ROUTE_KEYS_LIST
  local mode = r[ROUTE.mode]
  names[#names + 1] = r[ROUTE.ep]
  local d = kk[ROUTE_KEYS.delivery]
  if redis.call('EXISTS', d) == 0 then
    created = created + 1
    if mode == 'skip' then
      redis.call('HSET', d, 'state', 'skipped', 'reason', r[ROUTE.reason], 'attempts', 0, 'created', now,
                 'updated', now, 'seq', seq)
      redis.call('ZADD', kk[ROUTE_KEYS.st_skipped], now, nid)
    elseif mode == 'removed' then
      -- a reload or restart removed the endpoint after the notification was received
      -- (workers/removed.py): a record, never a send, so nothing acknowledged is routed to nobody
      redis.call('HSET', d, 'state', 'cancelled', 'attempts', 0, 'created', now, 'updated', now, 'seq', seq,
                 'cancelled_at', now, 'cancelled_by', 'fan-out: endpoint removed')
      redis.call('ZADD', key.ep_state(r[ROUTE.ep], 'cancelled'), now, nid)
    else
      -- a paused endpoint's new work waits as 'paused' (relay/store/control.py), 'pending' on resume
      if redis.call('HEXISTS', kk[ROUTE_KEYS.paused], r[ROUTE.ep]) == 1 then
        redis.call('HSET', d, 'state', 'paused', 'paused_from', 'pending', 'attempts', 0, 'created', now,
                   'updated', now, 'seq', seq, 'mode', mode)
        redis.call('ZADD', kk[ROUTE_KEYS.st_paused], now, nid)
      else
        redis.call('HSET', d, 'state', 'pending', 'attempts', 0, 'created', now, 'updated', now,
                   'seq', seq, 'mode', mode)
        redis.call('ZADD', kk[ROUTE_KEYS.st_pending], now, nid)
      end
      -- serial and per_order queues are ordered by receipt; concurrent ones by due time
      local score = now
      if mode == 'serial' or mode == 'per_order' then score = tonumber(seq) end
      redis.call('ZADD', kk[ROUTE_KEYS.queue], score, nid)
    end
    redis.call('PEXPIRE', d, retention)
  end
end
redis.call('HSET', KEYS[K.notification], 'eps', table.concat(names, ','))
redis.call('ZREM', KEYS[K.fanout], nid)
return {created, oldest()}
