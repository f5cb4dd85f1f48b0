-- Operator actions on deliveries: pause, resume, retry now, cancel. One atomic call each, with its
-- audit entry pushed in the same call, so an action is never half done nor done without its entry.
-- Keys are built by the key.* functions generated from relay/constants.py (relay/store/scripts.py).
-- KEYS: 1 relay:paused, 2 relay:audit
-- ARGV: 1 action, 2 endpoint, 3 audit entry JSON ('' for none; its at and count are set here),
--       4 audit cap, 5 serial (1|0: the endpoint's configured mode), then per action:
--   pause:      6 who (JSON; its at is set here)
--   resume:     (nothing)
--   retry:      6 nid ('' = every retrying delivery of the endpoint)
--   cancel:     6 nid, 7 who (text)
--   cancel_all: 6 who (text); the entry is written only when something was cancelled
-- Returns {code, count, detail}: code 'ok' or a refusal ('paused', 'not_paused', 'missing',
-- 'in_flight', 'finished', 'not_waiting'); detail is a state or an nid, or ''.
-- Redis's clock, as the delivery scripts use (workers/lua): due times and paused time agree with theirs
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local action, ep = ARGV[1], ARGV[2]
local serial = ARGV[5] == '1'

local function d_key(nid) return key.delivery(nid, ep) end

local function move(nid, from, to)
  redis.call('ZREM', key.ep_state(ep, from), nid)
  redis.call('ZADD', key.ep_state(ep, to), now, nid)
end

local function audit(count, always)
  if ARGV[3] == '' or (count == 0 and not always) then return end
  local doc = cjson.decode(ARGV[3])
  doc.count = count
  doc.at = now
  redis.call('LPUSH', KEYS[2], cjson.encode(doc))
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end

-- cancel one waiting delivery; returns a refusal code, or nil when it was cancelled
local function cancel_one(nid, who)
  local d = d_key(nid)
  local state = redis.call('HGET', d, 'state')
  if not state then return 'missing' end
  if state == 'in_flight' then return 'in_flight' end
  if state ~= 'pending' and state ~= 'retrying' and state ~= 'paused' then return 'finished' end
  redis.call('ZREM', key.ep_queue(ep), nid)
  move(nid, state, 'cancelled')
  redis.call('HSET', d, 'state', 'cancelled', 'updated', now, 'cancelled_at', now, 'cancelled_by', who)
  redis.call('HDEL', d, 'next', 'paused_from')
  return nil
end

if action == 'pause' then
  if redis.call('HEXISTS', KEYS[1], ep) == 1 then
    return {'ok', 0, 'already'}
  end
  local who = cjson.decode(ARGV[6])
  who.at = now
  redis.call('HSET', KEYS[1], ep, cjson.encode(who))
  -- what waits now waits as 'paused'; in-flight deliveries finish (complete.lua parks a retry)
  local count = 0
  for _, from in ipairs({'pending', 'retrying'}) do
    for _, nid in ipairs(redis.call('ZRANGE', key.ep_state(ep, from), 0, -1)) do
      redis.call('HSET', d_key(nid), 'state', 'paused', 'paused_from', from, 'updated', now)
      move(nid, from, 'paused')
      count = count + 1
    end
  end
  audit(count, true)
  return {'ok', count, ''}
end

if action == 'resume' then
  local raw = redis.call('HGET', KEYS[1], ep)
  if not raw then return {'not_paused', 0, ''} end
  local ok, info = pcall(cjson.decode, raw)
  local since = now
  if ok and type(info) == 'table' and tonumber(info.at) then since = tonumber(info.at) end
  redis.call('HDEL', KEYS[1], ep)
  local count = 0
  for _, nid in ipairs(redis.call('ZRANGE', key.ep_state(ep, 'paused'), 0, -1)) do
    local d = d_key(nid)
    local st = redis.call('HMGET', d, 'paused_from', 'created')
    local from = st[1] or 'pending'
    -- the time it spent paused does not count against the retry window (workers/schedule.py)
    local start = math.max(since, tonumber(st[2] or since))
    if now > start then redis.call('HINCRBY', d, 'paused_ms', now - start) end
    redis.call('HSET', d, 'state', from, 'updated', now)
    redis.call('HDEL', d, 'paused_from')
    move(nid, 'paused', from)
    count = count + 1
  end
  audit(count, true)
  return {'ok', count, ''}
end

if action == 'retry' then
  if redis.call('HEXISTS', KEYS[1], ep) == 1 then return {'paused', 0, ''} end
  local nid = ARGV[6]
  if serial then
    -- only the head is ever sent: retrying now means making the head due now, so order holds
    local head = redis.call('ZRANGE', key.ep_queue(ep), 0, 0)[1]
    if nid ~= '' and redis.call('ZSCORE', key.ep_queue(ep), nid) == false then
      local state = redis.call('HGET', d_key(nid), 'state')
      if not state then return {'missing', 0, ''} end
      return {'not_waiting', 0, state}
    end
    if not head then return {'ok', 0, ''} end
    local d = d_key(head)
    local count = 0
    if redis.call('HGET', d, 'state') == 'retrying' then
      redis.call('HSET', d, 'next', now, 'updated', now)
      count = 1
    end
    audit(count, true)
    return {'ok', count, head}
  end
  local targets = {}
  if nid ~= '' then
    local state = redis.call('HGET', d_key(nid), 'state')
    if not state then return {'missing', 0, ''} end
    if state ~= 'retrying' then return {'not_waiting', 0, state} end
    targets[1] = nid
  else
    targets = redis.call('ZRANGE', key.ep_state(ep, 'retrying'), 0, -1)
  end
  for _, t in ipairs(targets) do
    redis.call('HSET', d_key(t), 'next', now, 'updated', now)
    redis.call('ZADD', key.ep_queue(ep), now, t)
  end
  audit(#targets, true)
  return {'ok', #targets, ''}
end

if action == 'cancel' then
  local refused = cancel_one(ARGV[6], ARGV[7])
  if refused then
    return {refused, 0, redis.call('HGET', d_key(ARGV[6]), 'state') or ''}
  end
  audit(1, true)
  return {'ok', 1, ''}
end

if action == 'cancel_all' then
  local count = 0
  for _, from in ipairs({'pending', 'retrying', 'paused'}) do
    for _, nid in ipairs(redis.call('ZRANGE', key.ep_state(ep, from), 0, -1)) do
      if not cancel_one(nid, ARGV[6]) then count = count + 1 end
    end
  end
  audit(count, false)
  return {'ok', count, ''}
end

return redis.error_reply('unknown action ' .. tostring(action))
