-- Record the result of one delivery attempt and move the delivery to its next state.
-- Part of step.lua (workers/engine.py concatenates complete.lua, claim.lua and step.lua): a function,
-- so one script call records every result a worker has waiting (and claims again, see claim.lua).
-- complete(r, retention, tally, minutes, latest)
--   r: {nid, ep, attempt, outcome (delivered|retry|failed), now ms, next due ms (retry), attempt JSON,
--       last status text, minute hash key, latency bucket, latency us, r2d bucket (-1: none), r2d us}
--   tally (relay:stats field -> increment), minutes (minute key -> field -> increment) and latest
--   (relay:stats field -> ms) collect the counters; step.lua writes them once per call, so N results
--   of one endpoint cost one HINCRBY per counter, not N.
-- Returns 1, or 0 when the attempt is stale (its lease expired and another worker took over).
local function complete(r, retention, tally, minutes, latest)
  local nid, ep, attempt, outcome = r[1], r[2], tonumber(r[3]), r[4]
  local now, nxt = tonumber(r[5]), tonumber(r[6])
  local a, d = 'relay:a:' .. nid .. ':' .. ep, 'relay:d:' .. nid .. ':' .. ep
  -- every attempt is recorded, even a stale one; the list is capped at ATTEMPTS_CAP (set by workers/engine.py)
  if redis.call('RPUSH', a, r[7]) > ATTEMPTS_CAP then redis.call('LTRIM', a, -ATTEMPTS_CAP, -1) end
  redis.call('PEXPIRE', a, retention)
  local st = redis.call('HMGET', d, 'state', 'attempts', 'mode', 'next')
  if st[1] ~= 'in_flight' or tonumber(st[2]) ~= attempt then
    return 0
  end
  redis.call('ZREM', 'relay:ep:' .. ep .. ':lease', nid)
  redis.call('ZREM', 'relay:ep:' .. ep .. ':st:in_flight', nid)
  local state = outcome
  if outcome == 'retry' then
    state = 'retrying'
    redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[8], 'next', nxt)
    if st[3] ~= 'serial' then redis.call('ZADD', 'relay:ep:' .. ep .. ':q', nxt, nid) end
  else
    if st[4] then redis.call('HDEL', d, 'next') end  -- only a delivery that was retrying has one
    redis.call('ZREM', 'relay:ep:' .. ep .. ':q', nid)
    if outcome == 'delivered' then
      redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[8], 'delivered_at', now)
    else
      redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[8])
    end
  end
  redis.call('ZADD', 'relay:ep:' .. ep .. ':st:' .. state, now, nid)
  -- per-minute counts (health, alerts) and cumulative counters (/metrics): collected, written by step.lua
  local m = minutes[r[9]]
  if not m then m = {}; minutes[r[9]] = m end
  local counter = 'ok'
  if outcome ~= 'delivered' then counter = 'fail' end
  m[counter] = (m[counter] or 0) + 1
  if outcome == 'failed' then m.gaveup = (m.gaveup or 0) + 1 end
  local last = ep .. '|last_fail'
  if outcome == 'delivered' then last = ep .. '|last_ok' end
  if (latest[last] or 0) < now then latest[last] = now end
  local incr = {ep .. '|' .. outcome, 1, ep .. '|lat|' .. r[10], 1, ep .. '|lat|sum_us', tonumber(r[11])}
  if r[12] ~= '-1' then
    incr[7], incr[8], incr[9], incr[10] = ep .. '|r2d|' .. r[12], 1, ep .. '|r2d|sum_us', tonumber(r[13])
  end
  for j = 1, #incr, 2 do tally[incr[j]] = (tally[incr[j]] or 0) + incr[j + 1] end
  return 1
end
