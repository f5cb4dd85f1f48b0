-- Route a batch of notifications to their endpoints: create each delivery record once, and queue it.
-- Idempotent: a batch whose worker was killed is claimed and routed again (workers/lua/fanclaim.lua), and
-- an old ingress's ARQ job may route a notification the batch loop routes too.
-- KEYS and ARGV are named in workers/wire.py (ROUTE): after K.fanout and K.lease come, per notification,
-- its key, its body's key and then per route the keys named by ROUTE_KEYS_LIST; after A.retention_ms
-- come, per notification, the fields named by ROUTE_HEAD_LIST (its nid, number of routes and its body
-- compressed, or ''), then per route the fields named by ROUTE_LIST (mode: serial, concurrent, per_order,
-- skip, or removed: recorded cancelled)
-- Times come from Redis's clock (now_ms), never from the worker's.
-- Returns {oldest, then per notification created}: the seq of the oldest notification still waiting for
-- its fan-out (-1: none), which tells the worker whether a serial lane blocked behind an unrouted
-- notification can go on; and the number of delivery records created (-1 if the notification is gone).
local now = now_ms()
local retention = tonumber(ARGV[A.retention_ms])
local function oldest()
  local first = redis.call('ZRANGE', KEYS[K.fanout], 0, 0, 'WITHSCORES')
  if #first == 0 then return -1 end
  return tonumber(first[2])
end
-- one notification: its routes are ARGV[ai ...] and KEYS[ki ...]
local function route(nkey, nid, count, ai, ki)
  local seq = redis.call('HGET', nkey, 'seq')
  if not seq then
    return -1
  end
  local created, names = 0, {}
  for i = ai, ai + (count - 1) * #ROUTE_LIST, #ROUTE_LIST do
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
  redis.call('HSET', nkey, 'eps', table.concat(names, ','))
  return created
end
-- the body the ingress stored as received, replaced by the worker's compression of it (relay/store/body.py):
-- only while braw says it is not compressed yet, so routing it twice writes it once; XX and KEEPTTL: never a
-- body without its TTL, nor one past its retention
local function compressed(nkey, bkey, bodyz)
  if bodyz ~= '' and redis.call('HDEL', nkey, 'braw') == 1 then
    redis.call('SET', bkey, bodyz, 'XX', 'KEEPTTL')
  end
end
local out = {0}
local ai, ki = #A_LIST + 1, #K_LIST + 1
while ai <= #ARGV do
  local nid, count = ARGV[ai + ROUTE_HEAD.nid - 1], tonumber(ARGV[ai + ROUTE_HEAD.routes - 1])
  local bodyz = ARGV[ai + ROUTE_HEAD.bodyz - 1]
  ai = ai + #ROUTE_HEAD_LIST
  -- no longer waiting: another worker routed it (this one stalled past its lease, or an old ingress's
  -- job): its records exist, and its list of endpoints, which a configuration reloaded since may have
  -- made longer, stays as that worker wrote it
  local created = 0
  if redis.call('ZSCORE', KEYS[K.fanout], nid) then created = route(KEYS[ki], nid, count, ai, ki + 2) end
  if created >= 0 then compressed(KEYS[ki], KEYS[ki + 1], bodyz) end
  out[#out + 1] = created
  ai, ki = ai + count * #ROUTE_LIST, ki + 2 + count * #ROUTE_KEYS_LIST
  redis.call('ZREM', KEYS[K.fanout], nid)
  redis.call('ZREM', KEYS[K.lease], nid)
end
out[1] = oldest()
return out
