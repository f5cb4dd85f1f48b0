-- Operator actions on deliveries: pause, resume, retry now, cancel. An action on one notification is
-- one atomic call with its audit entry. An action on a whole endpoint (pause, resume, retry every
-- retrying delivery, cancel_removed) is done in pages of at most A.page deliveries, one call each
-- (relay/store/control.py walks them), so no call holds Redis for longer as the backlog grows: each
-- page is atomic, and the action is idempotent, so a rerun finishes what a crash between pages left
-- (see each action). Its audit entry is pushed by the last page, counting A.done of the earlier ones.
-- Keys are built by the key.* functions generated from relay/constants.py (relay/store/scripts.py).
-- KEYS and ARGV are named in relay/store/wire.py (CONTROL): A.ep is the endpoint (for 'retry' and 'cancel'
-- with an nid: endpoints, comma-separated), A.audit the audit entry JSON ('' for none; its at and count,
-- and per endpoint its target, are set here); then, per action ('' where it takes none):
--   pause:          A.who (JSON; its at is set here), A.page, A.done, A.always ('1': audit even if
--                   nothing moved)
--   resume:         A.page, A.done
--   retry:          A.nid ('' = every retrying delivery of the endpoint, then A.page, A.done, A.cursor
--                   ('' or "score nid" of the last one looked at) and A.upto (the ms the first page
--                   answered: what became retrying since is not this action's))
--   cancel:         A.nid, A.who (text)
--   cancel_removed: A.who (text), A.upto: only deliveries of notifications up to this seq (work routed
--                   after a re-add is never touched), A.from_state the state index to walk, A.offset its
--                   rank to start at, A.page how many to look at (one page: relay/store/control.py walks
--                   the pages and audits once)
-- Nothing here takes the caller's configuration: serial or concurrent is each delivery's own 'mode',
-- as the fan-out recorded it. A delivery that retention expired is never written (that would re-create
-- it with no expiry): its stale index entries are removed instead.
-- Returns {code, count, detail}: code 'ok' or a refusal ('paused', 'not_paused', 'missing',
-- 'in_flight', 'finished', 'not_waiting'); detail is a state or an nid, or ''. With an nid, 'retry'
-- and 'cancel' act on each endpoint that can be acted on and return {'ok', count, JSON {endpoint:
-- {code, detail, count}}} (code 'ok' or the refusal): what was done, exactly, in one atomic call.
-- Redis's clock, as the delivery scripts use (workers/lua): due times and paused time agree with theirs
local now = now_ms()
local action = ARGV[A.action]
local ep = ARGV[A.ep]

local function d_key(nid) return key.delivery(nid, ep) end

local function move(nid, from, to)
  redis.call('ZREM', key.ep_state(ep, from), nid)
  redis.call('ZADD', key.ep_state(ep, to), now, nid)
end

-- an index entry whose delivery retention expired: drop it (and its queue entry), write nothing
local function stale(nid, state)
  if redis.call('EXISTS', d_key(nid)) == 1 then return false end
  redis.call('ZREM', key.ep_state(ep, state), nid)
  redis.call('ZREM', key.ep_queue(ep), nid)
  return true
end

local function audit(count, always, target)
  if ARGV[A.audit] == '' or (count == 0 and not always) then return end
  local doc = cjson.decode(ARGV[A.audit])
  doc.count = count
  doc.at = now
  if target then doc.target = target end
  redis.call('LPUSH', KEYS[K.audit], cjson.encode(doc))
  redis.call('LTRIM', KEYS[K.audit], 0, tonumber(ARGV[A.audit_cap]) - 1)
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

-- retry now: make one retrying delivery due. A serial one is only ever sent as its queue's head, so
-- for it retrying now means making the head due (if the head is retrying): the order of receipt holds.
-- Returns how many were made due and the nid of the serial head it concerned ('' if none).
local function retry_one(nid, mode)
  if mode == 'serial' then
    local q = key.ep_queue(ep)
    -- a head retention expired leaves the queue: the next one is the head (bounded, like any scan here)
    for _ = 1, 1000 do
      local head = redis.call('ZRANGE', q, 0, 0)[1]
      if not head then return 0, '' end
      local d = d_key(head)
      local state = redis.call('HGET', d, 'state')
      if state then
        if state ~= 'retrying' then return 0, head end
        redis.call('HSET', d, 'next', now, 'updated', now)
        return 1, head
      end
      redis.call('ZREM', q, head)
    end
    return 0, ''
  end
  redis.call('HSET', d_key(nid), 'next', now, 'updated', now)
  -- per_order: a retrying delivery is its order's head (the later ones wait behind it), and the queue
  -- keeps receipt order: its 'next' alone makes it due
  if mode ~= 'per_order' then redis.call('ZADD', key.ep_queue(ep), now, nid) end
  return 1, ''
end

local page, done = tonumber(ARGV[A.page] ~= '' and ARGV[A.page] or '500'), tonumber(ARGV[A.done] ~= '' and ARGV[A.done] or '0')

-- pause: the flag first (from then on the claim script gives the endpoint nothing and new or finished
-- work parks as 'paused'), then one page of what waits. A crash between pages leaves the flag set and
-- some deliveries still 'pending' or 'retrying', none of them sent; pausing again moves them.
if action == 'pause' then
  local already = redis.call('HEXISTS', KEYS[K.paused], ep) == 1
  if not already then
    local who = cjson.decode(ARGV[A.who])
    who.at = now
    redis.call('HSET', KEYS[K.paused], ep, cjson.encode(who))
  end
  local count, left = 0, page
  for _, from in ipairs({'pending', 'retrying'}) do
    if left > 0 then
      for _, nid in ipairs(redis.call('ZRANGE', key.ep_state(ep, from), 0, left - 1)) do
        left = left - 1
        if not stale(nid, from) then
          redis.call('HSET', d_key(nid), 'state', 'paused', 'paused_from', from, 'updated', now)
          move(nid, from, 'paused')
          count = count + 1
        end
      end
    end
  end
  local more = left == 0
  if not more then audit(done + count, ARGV[A.always] == '1') end
  return {'ok', count, cjson.encode({more = more, already = already})}
end

-- resume: one page of the paused deliveries back to the state they had; the flag goes with the last
-- (until then the endpoint gets nothing, so the order of receipt holds). A crash between pages leaves
-- the flag and the rest paused; resuming again finishes.
if action == 'resume' then
  local raw = redis.call('HGET', KEYS[K.paused], ep)
  if not raw then return {'not_paused', 0, ''} end
  local ok, info = pcall(cjson.decode, raw)
  local since = now
  if ok and type(info) == 'table' and tonumber(info.at) then since = tonumber(info.at) end
  local count = 0
  local paused = key.ep_state(ep, 'paused')
  for _, nid in ipairs(redis.call('ZRANGE', paused, 0, page - 1)) do
    if not stale(nid, 'paused') then
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
  end
  local more = redis.call('ZCARD', paused) > 0
  if not more then
    redis.call('HDEL', KEYS[K.paused], ep)
    audit(done + count, true)
  end
  return {'ok', count, cjson.encode({more = more})}
end

-- one notification, one or several endpoints: each is acted on if it can be, in this one call
if (action == 'retry' or action == 'cancel') and ARGV[A.nid] ~= '' then
  local nid = ARGV[A.nid]
  local report, total = {}, 0
  for name in string.gmatch(ARGV[A.ep], '[^,]+') do
    ep = name
    local code, detail, count = 'ok', '', 0
    local state = redis.call('HGET', d_key(nid), 'state')
    if action == 'cancel' then
      code = cancel_one(nid, ARGV[A.who]) or 'ok'
      if code == 'ok' then count = 1 else detail = state or '' end
    elseif redis.call('HEXISTS', KEYS[K.paused], ep) == 1 then
      code = 'paused'
    elseif not state then
      code = 'missing'
    else
      local mode = redis.call('HGET', d_key(nid), 'mode')
      -- serial: anything still queued waits behind the head, which is what is made due
      local waits = state == 'retrying'
      if mode == 'serial' then waits = redis.call('ZSCORE', key.ep_queue(ep), nid) ~= false end
      if waits then
        local head
        count, head = retry_one(nid, mode)
        detail = head
      else
        code, detail = 'not_waiting', state
      end
    end
    if code == 'ok' then
      total = total + count
      audit(count, true, nid .. ':' .. ep)
    end
    report[ep] = {code = code, detail = detail, count = count}
  end
  return {'ok', total, cjson.encode(report)}
end

-- retry every retrying delivery: one page of the index, in its order from a cursor, concurrent ones due
-- now, serial ones by making the head due (once per action: A.cursor's page says whether it was). Making
-- due twice is harmless, so a rerun after a crash only repeats it.
if action == 'retry' then
  if redis.call('HEXISTS', KEYS[K.paused], ep) == 1 then return {'paused', 0, ''} end
  local upto = ARGV[A.upto] ~= '' and tonumber(ARGV[A.upto]) or now
  local set = key.ep_state(ep, 'retrying')
  local first, serial_done = 0, false
  if ARGV[A.cursor] ~= '' then
    local score, member, serial = string.match(ARGV[A.cursor], '^(%S+) (%S+) (%d)$')
    first, serial_done = rank_after(set, score, member), serial == '1'
  end
  local count, head, last, more = 0, '', '', false
  local seen = redis.call('ZRANGE', set, first, first + page - 1, 'WITHSCORES')
  for j = 1, #seen, 2 do
    local nid = seen[j]
    if tonumber(seen[j + 1]) > upto then break end
    last = seen[j + 1] .. ' ' .. nid
    more = j + 1 == #seen and #seen == 2 * page
    if not stale(nid, 'retrying') then
      local mode = redis.call('HGET', d_key(nid), 'mode')
      if mode ~= 'serial' then
        count = count + retry_one(nid, mode)
      elseif not serial_done then
        serial_done = true
        local n
        n, head = retry_one(nid, mode)
        count = count + n
      end
    end
  end
  if not more then audit(done + count, true) end
  local cursor = last ~= '' and (last .. ' ' .. (serial_done and '1' or '0')) or ARGV[A.cursor]
  return {'ok', count, cjson.encode({more = more, cursor = cursor, upto = upto, head = head})}
end

if action == 'cancel_removed' then
  -- one page of one state index (the caller walks them: one call never holds Redis for a backlog)
  local upto, from, offset = tonumber(ARGV[A.upto]), ARGV[A.from_state], tonumber(ARGV[A.offset])
  local count, left, kept = 0, 0, 0
  local nids = redis.call('ZRANGE', key.ep_state(ep, from), offset, offset + page - 1)
  for _, nid in ipairs(nids) do
    if stale(nid, from) then
      -- gone from the index
    elseif (tonumber(redis.call('HGET', d_key(nid), 'seq')) or 0) > upto then
      kept = kept + 1  -- routed after a re-add: never touched
    elseif from ~= 'in_flight' then
      if cancel_one(nid, ARGV[A.who]) then kept = kept + 1 else count = count + 1 end
    else
      -- in flight to the removed endpoint: out of its queue, so a re-added endpoint never claims it when
      -- its lease runs out; cancelled once the lease has run out (its worker died), else left to finish
      local d = d_key(nid)
      redis.call('ZREM', key.ep_queue(ep), nid)
      if (tonumber(redis.call('HGET', d, 'lease')) or 0) <= now then
        redis.call('ZREM', key.ep_lease(ep), nid)
        move(nid, 'in_flight', 'cancelled')
        redis.call('HSET', d, 'state', 'cancelled', 'updated', now, 'cancelled_at', now, 'cancelled_by', ARGV[A.who])
        redis.call('HDEL', d, 'next', 'paused_from')
        count = count + 1
      else
        left = left + 1
        kept = kept + 1
      end
    end
  end
  -- detail: still in flight, left in the index before the next page, examined
  return {'ok', count, left .. ',' .. kept .. ',' .. #nids}
end

return redis.error_reply('unknown action ' .. tostring(action))
