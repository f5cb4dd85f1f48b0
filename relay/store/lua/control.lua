-- Operator actions on deliveries: pause, resume, retry now, cancel. One atomic call each, with its
-- audit entry pushed in the same call, so an action is never half done nor done without its entry.
-- KEYS: 1 relay:paused, 2 relay:audit
-- ARGV: 1 action, 2 endpoint, 3 now ms, 4 audit entry JSON ('' for none), 5 audit cap,
--       6 serial (1|0: the endpoint's configured mode), then per action:
--   pause:      7 who (JSON)
--   resume:     (nothing)
--   retry:      7 nid ('' = every retrying delivery of the endpoint)
--   cancel:     7 nid, 8 who (text)
--   cancel_all: 7 who (text); the entry is written only when something was cancelled
-- Returns {code, count, detail}: code 'ok' or a refusal ('paused', 'not_paused', 'missing',
-- 'in_flight', 'finished', 'not_waiting'); detail is a state or an nid, or ''.
local action, ep, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local serial = ARGV[6] == '1'
local base = 'relay:ep:' .. ep

local function d_key(nid) return 'relay:d:' .. nid .. ':' .. ep end

local function move(nid, from, to)
  redis.call('ZREM', base .. ':st:' .. from, nid)
  redis.call('ZADD', base .. ':st:' .. to, now, nid)
end

local function audit(count, always)
  if ARGV[4] == '' or (count == 0 and not always) then return end
  local doc = cjson.decode(ARGV[4])
  doc.count = count
  redis.call('LPUSH', KEYS[2], cjson.encode(doc))
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
end

-- cancel one waiting delivery; returns a refusal code, or nil when it was cancelled
local function cancel_one(nid, who)
  local d = d_key(nid)
  local state = redis.call('HGET', d, 'state')
  if not state then return 'missing' end
  if state == 'in_flight' then return 'in_flight' end
  if state ~= 'pending' and state ~= 'retrying' and state ~= 'paused' then return 'finished' end
  redis.call('ZREM', base .. ':q', nid)
  move(nid, state, 'cancelled')
  redis.call('HSET', d, 'state', 'cancelled', 'updated', now, 'cancelled_at', now, 'cancelled_by', who)
  redis.call('HDEL', d, 'next', 'paused_from')
  return nil
end

if action == 'pause' then
  if redis.call('HEXISTS', KEYS[1], ep) == 1 then
    return {'ok', 0, 'already'}
  end
  redis.call('HSET', KEYS[1], ep, ARGV[7])
  -- what waits now waits as 'paused'; in-flight deliveries finish (complete.lua parks a retry)
  local count = 0
  for _, from in ipairs({'pending', 'retrying'}) do
    for _, nid in ipairs(redis.call('ZRANGE', base .. ':st:' .. from, 0, -1)) do
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
  for _, nid in ipairs(redis.call('ZRANGE', base .. ':st:paused', 0, -1)) do
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
  local nid = ARGV[7]
  if serial then
    -- only the head is ever sent: retrying now means making the head due now, so order holds
    local head = redis.call('ZRANGE', base .. ':q', 0, 0)[1]
    if nid ~= '' and redis.call('ZSCORE', base .. ':q', nid) == false then
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
    targets = redis.call('ZRANGE', base .. ':st:retrying', 0, -1)
  end
  for _, t in ipairs(targets) do
    redis.call('HSET', d_key(t), 'next', now, 'updated', now)
    redis.call('ZADD', base .. ':q', now, t)
  end
  audit(#targets, true)
  return {'ok', #targets, ''}
end

if action == 'cancel' then
  local refused = cancel_one(ARGV[7], ARGV[8])
  if refused then
    return {refused, 0, redis.call('HGET', d_key(ARGV[7]), 'state') or ''}
  end
  audit(1, true)
  return {'ok', 1, ''}
end

if action == 'cancel_all' then
  local count = 0
  for _, from in ipairs({'pending', 'retrying', 'paused'}) do
    for _, nid in ipairs(redis.call('ZRANGE', base .. ':st:' .. from, 0, -1)) do
      if not cancel_one(nid, ARGV[7]) then count = count + 1 end
    end
  end
  audit(count, false)
  return {'ok', count, ''}
end

return redis.error_reply('unknown action ' .. tostring(action))
