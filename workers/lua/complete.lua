-- Record the result of one delivery attempt and move the delivery to its next state.
-- Part of step.lua (workers/step.py puts a generated preamble, complete.lua, claim.lua and step.lua
-- together): a function, so one script call records every result a worker has waiting.
-- complete(r, kk, now, tally, latest)
--   r: the result's fields, read by name through R (workers/wire.py RESULT_FIELDS)
--   kk: the result's keys, read by name through RK (RESULT_KEYS), passed in KEYS
--   now: Redis's clock (TIME), the only clock that sets or compares times here
--   tally (relay:stats field -> increment) and latest (relay:stats field -> ms) collect the
--   counters; step.lua writes them once per call.
-- Returns 1 (recorded), 0 (stale: its lease expired and another worker took over, or the delivery
-- is gone), or 2 (this attempt's result was already recorded: a retried call).
-- Outcome 'dropped': the worker claimed the delivery but did not send it (its lease could have run
-- out first, or a reload retired the lane: workers/attempt.py not_sent). While this attempt still
-- holds it, it is logged and made due again at once, like a retry with no delay; once another worker
-- holds it, nothing is written (that worker's claim already logged 'worker_lost' for it).
-- the index of the first bound (integer microseconds) that ``us`` does not exceed; #bounds is +Inf
local function bucket_of(us, bounds)
  for i, upper in ipairs(bounds) do
    if us <= upper then return i - 1 end
  end
  return #bounds
end

-- append one attempt record to the log ``a`` of delivery ``d``: the log keeps the last ATTEMPTS_CAP
-- (counting the rest in ``attempts_dropped``) and lives exactly as long as its delivery: its expiry is
-- set with its first record, from the delivery's, which route.lua sets once and nothing changes.
-- Also used by claim.lua, which follows this file in the step script.
local function log_attempt(a, d, record)
  local len = redis.call('RPUSH', a, record)
  if len == 1 then
    local ttl = redis.call('PTTL', d)
    if ttl > 0 then redis.call('PEXPIRE', a, ttl) end
  elseif len > ATTEMPTS_CAP then
    redis.call('LTRIM', a, -ATTEMPTS_CAP, -1)
    redis.call('HINCRBY', d, 'attempts_dropped', len - ATTEMPTS_CAP)
  end
end

local function complete(r, kk, now, tally, latest)
  local nid, ep, attempt, outcome = r[R.nid], r[R.ep], tonumber(r[R.attempt]), r[R.outcome]
  local d, a = kk[RK.delivery], kk[RK.attempts]
  local dropped = outcome == 'dropped'
  local rec = 'rec:' .. attempt
  -- one read decides everything below (the script is atomic: nothing changes it meanwhile)
  local st = redis.call('HMGET', d, 'state', 'attempts', 'mode', 'next', rec, 'unsent')
  -- expired by retention: writing would re-create its keys with no expiry
  if not st[1] then return 0 end
  local held = st[1] == 'in_flight' and tonumber(st[2]) == attempt
  if dropped and not held then return 0 end
  -- once per attempt: a call retried after an error (a script that failed half-way, a lost reply)
  -- must not log or count the same attempt twice. rec:<n> is written in the same HSET as the state,
  -- right after the log, so no write can fail between the two.
  if st[5] then return 2 end
  local record = r[R.record]
  local nxt = 0
  if outcome == 'retry' or dropped then
    nxt = now + tonumber(r[R.delay_ms])
    local rec_doc = cjson.decode(record)
    rec_doc.next = nxt
    record = cjson.encode(rec_doc)
  end
  -- every attempt is logged, even a stale one
  log_attempt(a, d, record)
  if not held then
    redis.call('HSET', d, rec, outcome)
    return 0
  end
  local state = outcome
  local st_to = kk[RK.st_to]
  if outcome == 'retry' or dropped then
    state = 'retrying'
    -- paused while it was in flight: it waits as 'paused', and is 'retrying' again on resume
    if redis.call('HEXISTS', kk[RK.paused], ep) == 1 then
      state, st_to = 'paused', kk[RK.st_paused]
      redis.call('HSET', d, 'paused_from', 'retrying')
    end
    if dropped then
      -- its number is spent (rec:n), but it was no attempt at the endpoint: the schedule skips it
      redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[R.last], 'next', nxt, rec, outcome,
                 'unsent', (tonumber(st[6]) or 0) + 1)
    else
      redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[R.last], 'next', nxt, rec, outcome)
    end
    -- a serial or per_order queue keeps receipt order: the retry's due time is its 'next' alone
    if st[3] ~= 'serial' and st[3] ~= 'per_order' then redis.call('ZADD', kk[RK.queue], nxt, nid) end
  else
    if st[4] then redis.call('HDEL', d, 'next') end  -- only a delivery that was retrying has one
    if outcome == 'delivered' then
      redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[R.last], 'delivered_at', now, rec, outcome)
    else
      redis.call('HSET', d, 'state', state, 'updated', now, 'last', r[R.last], rec, outcome)
    end
    redis.call('ZREM', kk[RK.queue], nid)
  end
  redis.call('ZREM', kk[RK.lease], nid)
  redis.call('ZREM', kk[RK.st_in_flight], nid)
  redis.call('ZADD', st_to, now, nid)
  if dropped then
    tally[ep .. '|not_sent'] = (tally[ep .. '|not_sent'] or 0) + 1
    return 1
  end
  -- cumulative counters (/metrics): collected, written by step.lua. Health and alerts count
  -- deliveries from the state indexes (relay/store/lua/health.lua), not attempts.
  local last = ep .. '|last_fail'
  if outcome == 'delivered' then last = ep .. '|last_ok' end
  if (latest[last] or 0) < now then latest[last] = now end
  local incr = {ep .. '|' .. outcome, 1, ep .. '|lat|' .. r[R.lat_bucket], 1, ep .. '|lat|sum_us', tonumber(r[R.lat_us])}
  local recv = tonumber(r[R.recv]) or 0
  if outcome == 'delivered' and recv > 0 then
    -- receipt to delivery, both on Redis's clock, in buckets that reach the 48 h retry window
    local r2d_us = math.max(0, now - recv) * 1000
    incr[7], incr[8] = ep .. '|r2d|' .. R2D_FIELD .. bucket_of(r2d_us, R2D_BUCKETS_US), 1
    incr[9], incr[10] = ep .. '|r2d|sum_us', r2d_us
  end
  for j = 1, #incr, 2 do tally[incr[j]] = (tally[incr[j]] or 0) + incr[j + 1] end
  return 1
end
