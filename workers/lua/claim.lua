-- Claim due deliveries for one endpoint, within its in-flight limit across all worker processes.
-- Part of step.lua (see complete.lua): a function, called after the results of the same call are
-- recorded, so a finished delivery's lease is already free when its endpoint claims again.
-- claim(c, kk, now, fanout, out)
--   c: the claim's fields by name through C (workers/wire.py CLAIM_FIELDS)
--   kk: the endpoint's keys by name through CK (CLAIM_KEYS), passed in KEYS
--   now: Redis's clock (TIME): leases and due times of every worker are judged by it alone
-- appends to out: code, wait, count, then per item its fields in CLAIMED_LIST order
--   code 'ok' (count items follow), 'idle' (nothing due; wait = ms until the first item is due, or 0),
--   'paused' (an operator paused the endpoint: relay:paused, see relay/store/control.py),
--   'busy' (limit reached), 'throttled' (rate_limit: wait = ms until the next request is allowed), 'blocked' (serial head, or per_order's first sendable entry, waits for an
--   older notification's fan-out; wait = its seq, so the worker knows which fan-out unblocks it).
-- mode: serial (only the queue's head), per_order (per_order.lua: one per order), concurrent.
local function put3(out, a, b, c)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = a, b, c
end

local function due_in(at, now)
  if at <= now then return 1 end  -- 0 means "no hint"
  return at - now
end

local function claim(c, kk, now, fanout, out)
  local ep, mode = c[C.ep], c[C.mode]
  local serial = mode == 'serial'
  local limit, lease_ms, batch = tonumber(c[C.limit]), tonumber(c[C.lease_ms]), tonumber(c[C.batch])
  local q, lease = kk[CK.queue], kk[CK.lease]
  -- a paused endpoint gets nothing, from any worker: its deliveries wait as 'paused'
  if redis.call('HEXISTS', kk[CK.paused], ep) == 1 then
    put3(out, 'paused', 0, 0)
    return
  end
  -- leases past expiry belong to a worker that died mid-delivery: its items become due again
  redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
  local free = limit - redis.call('ZCARD', lease)
  if free <= 0 then
    put3(out, 'busy', 0, 0)
    return
  end
  -- rate_limit (rate.lua): claim no more than it allows now; none: 'throttled', wait = ms until one
  local interval, burst = tonumber(c[C.interval_ms]), tonumber(c[C.burst])
  local want, tat = math.min(free, batch), 0
  if interval > 0 then
    local allowed, wait
    allowed, tat, wait = rate_allowed(kk[CK.rate], interval, burst, now)
    if allowed <= 0 then
      local due
      if mode == 'concurrent' then
        due = #redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, 1) > 0
      else
        due = redis.call('ZCARD', q) > redis.call('ZCARD', lease)
      end
      if due then rate_held(kk[CK.rate], interval, burst, now) end
      put3(out, 'throttled', wait, 0)
      return
    end
    want = math.min(want, allowed)
  end

  local candidates, states = {}, {}
  if serial then
    local head = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    if #head == 0 then
      put3(out, 'idle', 0, 0)
      return
    end
    -- an older notification not yet routed may belong ahead of the head: wait for its fan-out
    local oldest = redis.call('ZRANGE', fanout, 0, 0, 'WITHSCORES')
    if #oldest > 0 and tonumber(oldest[2]) < tonumber(head[2]) then
      put3(out, 'blocked', tonumber(head[2]), 0)
      return
    end
    local st = redis.call('HMGET', key.delivery(head[1], ep), 'state', 'attempts', 'next', 'paused_ms', 'unsent')
    local nxt = tonumber(st[3] or '0')
    if nxt > now then
      put3(out, 'idle', due_in(nxt, now), 0)
      return
    end
    candidates[1], states[1] = head[1], st
  elseif mode == 'per_order' then
    local wait, blocked
    candidates, states, wait, blocked = per_order(q, lease, ep, now, fanout, want)
    if #candidates == 0 then
      if blocked then put3(out, 'blocked', blocked, 0) else put3(out, 'idle', wait, 0) end
      return
    end
  else
    candidates = redis.call('ZRANGEBYSCORE', q, '-inf', now, 'LIMIT', 0, want)
    if #candidates == 0 then
      local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
      put3(out, 'idle', first[2] and due_in(tonumber(first[2]), now) or 0, 0)
      return
    end
  end

  local at = #out
  put3(out, 'ok', 0, 0)
  local count = 0
  local from = {pending = kk[CK.st_pending], retrying = kk[CK.st_retrying], in_flight = kk[CK.st_in_flight]}
  for i, nid in ipairs(candidates) do
    local d = key.delivery(nid, ep)
    local st = states[i] or redis.call('HMGET', d, 'state', 'attempts', 'next', 'paused_ms', 'unsent')
    local state = st[1]
    -- the body: in relay:b:{nid}, compressed unless 'braw' says the fan-out has not compressed it yet,
    -- else as received in the hash (relay/store/body.py; a 'bodyz' field is an earlier relay's compressed one)
    local n = redis.call('HMGET', key.notification(nid), 'body', 'ct', 'source', 'channel', 'recv', 'resend_of', 'flag',
                         'bodyz', 'braw')
    if n[3] and not n[1] and not n[8] then
      n[8] = redis.call('GET', key.body(nid))
      if n[9] then n[1], n[8] = n[8], nil end
    end
    if not from[state] or not (n[1] or n[8]) then
      -- finished, or expired by retention: nothing to send
      redis.call('ZREM', q, nid)
    else
      local attempts = tonumber(st[2] or '0')
      if state == 'in_flight' then
        -- the previous holder's lease expired without a result: logged like complete.lua logs one
        local a = key.attempts(nid, ep)
        log_attempt(a, d, cjson.encode({
          n = attempts, at = now, outcome = 'retry',
          error = 'worker_lost', message = 'no result before the lease expired (worker killed or stalled)'}))
      end
      redis.call('ZREM', from[state], nid)
      redis.call('ZADD', kk[CK.st_in_flight], now, nid)
      -- one HSET for the count and the state (the script is atomic, so no HINCRBY is needed)
      redis.call('HSET', d, 'attempts', attempts + 1, 'state', 'in_flight', 'updated', now, 'lease', now + lease_ms)
      redis.call('ZADD', lease, now + lease_ms, nid)
      -- a concurrent item's due time moves to its lease expiry: if this worker dies, it is due again then
      -- (serial and per_order queues keep receipt order: the lease alone says when it is due again)
      if mode == 'concurrent' then redis.call('ZADD', q, now + lease_ms, nid) end
      count = count + 1
      local item = {nid = nid, attempt = attempts + 1, body = n[8] or n[1], ct = n[2], source = n[3],
                    channel = n[4], recv = n[5], resend_of = n[6], flag = n[7], paused_ms = st[4] or 0,
                    unsent = st[5] or 0, packed = n[8] and 1 or 0}
      for _, name in ipairs(CLAIMED_LIST) do out[#out + 1] = item[name] or '' end
    end
  end
  if count == 0 then out[at + 1] = 'idle' end
  if interval > 0 and count > 0 then rate_spent(kk[CK.rate], interval, burst, tat, count, now) end
  out[at + 3] = count
end
