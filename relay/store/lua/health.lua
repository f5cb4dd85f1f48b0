-- Every figure of the evaluation of health (relay/store/stats.py), read in one call: counting in
-- Redis spares the client thousands of replies to pack and parse. Read-only.
-- KEYS and ARGV are named in relay/store/wire.py (HEALTH): after the named ARGV come A.endpoints records
-- of HEALTH_EP fields (name, window ms, serial 1/0), then A.sources records of HEALTH_SRC fields (name,
-- silence limit ms or 0).
-- Returns {endpoint rows..., source rows...}: each row's fields are named by relay/store/stats.py
-- (EP_FIELDS, SRC_FIELDS), read here through the generated EP and SRC tables, never by position.
local now = tonumber(ARGV[A.now_ms])
local states = {pending = 'n_pending', in_flight = 'n_in_flight', retrying = 'n_retrying', failed = 'n_failed',
                delivered = 'n_delivered', skipped = 'n_skipped', resolved = 'n_resolved'}
local out = {}
local i = #A_LIST + 1
-- how many waiting deliveries the receipt time of the oldest one is read from exactly (ZINTER with
-- the receipt index); above it, only the CANDIDATES that changed longest ago are looked at
local EXACT_UP_TO, CANDIDATES = 250, 20
-- how many queue entries of a per_order endpoint are looked at for a pending delivery held behind its
-- order's failing head (about 1 ms of Redis for 500; health runs every few seconds)
local ORDER_SCAN = 200
local function head(key, rev)
  local r
  if rev then r = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES') else r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES') end
  return r
end
-- a row with every field set, so the reply array has no hole
local function row_of(fields)
  local row = {}
  for n = 1, #fields do row[n] = '' end
  return row
end
-- when a failing delivery first failed: its first attempt's time (the log keeps the first
-- ATTEMPTS_CAP attempts' successors only when it overflows: then its oldest kept one), else `score`
local function first_failure(nid, ep, score)
  local first = redis.call('LINDEX', key.attempts(nid, ep), 0)
  if first then
    local ok, rec = pcall(cjson.decode, first)
    if ok and type(rec) == 'table' and tonumber(rec.at) then return tonumber(rec.at) end
  end
  return tonumber(score)
end
-- the earliest receipt (ms) among an endpoint's waiting deliveries, '' when none waits
local function oldest_receipt(p, serial_head)
  local best = nil
  local function consider(nid)
    local recv = tonumber(redis.call('HGET', key.notification(nid), 'recv') or '')
    if recv and (best == nil or recv < best) then best = recv end
  end
  local pend = redis.call('ZRANGE', p('pending'), 0, 0)
  if pend[1] then consider(pend[1]) end
  if serial_head then consider(serial_head) end
  local retrying = p('retrying')
  if redis.call('ZCARD', retrying) <= EXACT_UP_TO then
    local recv = redis.call('ZINTER', 2, retrying, KEYS[K.ix_all], 'WEIGHTS', 0, 1, 'WITHSCORES')
    if recv[2] and (best == nil or tonumber(recv[2]) < best) then best = tonumber(recv[2]) end
  else
    for _, nid in ipairs(redis.call('ZRANGE', retrying, 0, CANDIDATES - 1)) do consider(nid) end
  end
  return best or ''
end
for _ = 1, tonumber(ARGV[A.endpoints]) do
  local ep, window = ARGV[i + HEALTH_EP.name - 1], tonumber(ARGV[i + HEALTH_EP.window_ms - 1])
  local serial = ARGV[i + HEALTH_EP.serial - 1] == '1'
  i = i + #HEALTH_EP_LIST
  local function p(state) return key.ep_state(ep, state) end
  local row = row_of(EP_LIST)
  for s, field in pairs(states) do row[EP[field]] = redis.call('ZCARD', p(s)) end
  local ph = head(p('pending'))
  row[EP.pending_at] = ph[2] or ''
  -- per_order: a pending delivery waits behind an older delivery of its own order that failed an
  -- attempt (retrying, or in flight again), not for the endpoint's rate_limit, which a throttled
  -- endpoint's note would say (relay/store/problems.py). The queue is in receipt order, its first entry
  -- of an order that order's head: the first pending entry behind a failing head is the oldest held.
  -- Looked for only while something failed (retrying or in flight), in ORDER_SCAN entries at most.
  if ph[1] and (tonumber(row[EP.n_retrying]) > 0 or tonumber(row[EP.n_in_flight]) > 0)
      and redis.call('HGET', key.delivery(ph[1], ep), 'mode') == 'per_order' then
    local heads = {}
    for _, nid in ipairs(redis.call('ZRANGE', key.ep_queue(ep), 0, ORDER_SCAN - 1)) do
      local order = redis.call('HGET', key.notification(nid), 'ref')
      if not order or order == '' then order = '#' .. nid end
      local d = redis.call('HMGET', key.delivery(nid, ep), 'state', 'attempts', 'last')
      local failing = heads[order]
      if failing == nil then
        heads[order] = (d[1] == 'retrying' or (d[1] == 'in_flight' and tonumber(d[2] or '0') > 1)) and (d[3] or '')
          or false
      elseif failing and d[1] == 'pending' then
        row[EP.order_held_at] = redis.call('ZSCORE', p('pending'), nid) or ''
        row[EP.order_head_last] = failing
        break
      end
    end
  end
  for w, span in ipairs({window, 3600000, 86400000}) do
    for _, s in ipairs({'retrying', 'failed', 'delivered', 'resolved'}) do
      row[EP['w' .. w .. '_' .. s]] = redis.call('ZCOUNT', p(s), now - span, '+inf')
    end
  end
  -- a serial endpoint sends only its head (the oldest waiting notification): once the head has
  -- failed an attempt, everything behind it is held back
  local blocked = nil
  if serial then
    local q = key.ep_queue(ep)
    local first = redis.call('ZRANGE', q, 0, 0)
    if first[1] then
      local d = redis.call('HMGET', key.delivery(first[1], ep), 'state', 'attempts', 'last', 'updated')
      if d[1] == 'retrying' or (d[1] == 'in_flight' and tonumber(d[2] or '0') > 1) then
        blocked = first[1]
        row[EP.head_nid], row[EP.head_last], row[EP.head_at] = first[1], d[3] or '', d[4] or ''
        row[EP.held_back] = redis.call('ZCARD', q) - 1
      end
    end
  end
  -- the incident's start: when the first of its failing deliveries first failed; and the latest
  -- failing delivery (its last error)
  local since, latest, latest_at = nil, '', -1
  for _, s in ipairs({'retrying', 'failed'}) do
    local firsts = redis.call('ZRANGEBYSCORE', p(s), now - window, '+inf', 'WITHSCORES', 'LIMIT', 0, CANDIDATES)
    for j = 1, #firsts, 2 do
      local at = first_failure(firsts[j], ep, firsts[j + 1])
      if since == nil or at < since then since = at end
    end
    local last = head(p(s), true)
    if last[2] and tonumber(last[2]) > latest_at then latest, latest_at = last[1], tonumber(last[2]) end
  end
  if blocked then
    local at = first_failure(blocked, ep, row[EP.head_at] ~= '' and row[EP.head_at] or now)
    if since == nil or at < since then since = at end
  end
  row[EP.first_failing] = since or ''
  local err = {false, false}
  if latest ~= '' then err = redis.call('HMGET', key.delivery(latest, ep), 'last', 'updated') end
  row[EP.last_error] = err[1] or ''
  row[EP.last_error_at] = err[2] or ''
  row[EP.oldest_recv] = oldest_receipt(p, blocked)
  row[EP.open_since] = redis.call('GET', key.alert_open('ep:' .. ep)) or ''
  local stats = redis.call('HMGET', KEYS[K.stats], ep .. '|last_ok', ep .. '|last_fail')
  row[EP.last_ok] = stats[1] or ''
  row[EP.last_fail] = stats[2] or ''
  row[EP.resent] = redis.call('ZCARD', key.ep_resent(ep))
  out[#out + 1] = row
end
local n, minutes = tonumber(ARGV[A.sources]), tonumber(ARGV[A.source_window_minutes])
local now_min = math.floor(now / 60000)
local AFTER_CAP = 1000
-- received() reads RECEIVED_PAGES pages at most: this only says it need not stop before
local UNCOUNTED_CAP = 1000000
-- the newest notification 2Checkout sent to a source (not a resend): at most `pages` pages of the
-- index, newest first; when all of those are resends, the oldest of them bounds it
local function last_received(ix, pages)
  local at = ''
  for page = 0, pages - 1 do
    local ids = redis.call('ZREVRANGE', ix, page * 200, page * 200 + 199, 'WITHSCORES')
    for j = 1, #ids, 2 do
      if not string.find(ids[j], '~', 1, true) then return ids[j + 1] end
      at = ids[j + 1]
    end
    if #ids < 400 then return '' end
  end
  return at
end
for _ = 1, n do
  local src, silence = ARGV[i + HEALTH_SRC.name - 1], tonumber(ARGV[i + HEALTH_SRC.silence_ms - 1])
  i = i + #HEALTH_SRC_LIST
  local row = row_of(SRC_LIST)
  -- refused and accepted in the window's minutes, from the counters kept as requests come in
  -- (refusal.lua, ingest.lua): a few GETs however many notifications the window holds
  local refused, accepted, counted_from = 0, 0, nil
  for m = minutes - 1, 0, -1 do
    refused = refused + tonumber(redis.call('GET', key.source_rejects(src, now_min - m)) or '0')
    local acc = redis.call('GET', key.source_accepted(src, now_min - m))
    if acc then
      accepted = accepted + tonumber(acc)
      counted_from = counted_from or now_min - m
    end
  end
  local ix = key.idx_source(src)
  -- the window's minutes before its first counter: stored by a relay without the counters (the first
  -- window after an upgrade to them), or nothing stored (a quiet source, or one refusing everything):
  -- read from the index, resends left out, as received() bounds it (empty once the counters fill the window)
  local first_ms = (now_min - minutes + 1) * 60000
  if counted_from ~= first_ms / 60000 then
    local to = counted_from and '(' .. (counted_from * 60000) or '+inf'
    accepted = accepted + received(ix, first_ms, UNCOUNTED_CAP, to)
  end
  row[SRC.refused] = refused
  row[SRC.accepted] = accepted
  local last = redis.call('HMGET', key.source_lastrej(src), 'at', 'first', 'reason', 'detail', 'channel')
  row[SRC.last_at], row[SRC.first], row[SRC.reason] = last[1] or '', last[2] or '', last[3] or ''
  row[SRC.detail], row[SRC.channel] = last[4] or '', last[5] or ''
  -- counted up to AFTER_CAP: only the first SOURCE_RECOVERY_ACCEPTED decide anything, and the latest
  -- refusal's record lives 49 h, so an uncapped count walked a day's notifications at every evaluation
  -- (60 ms of Redis time at 100,000 a day, every 10 s from the workers and from relay serve)
  row[SRC.after] = -1
  if last[1] then row[SRC.after] = received(ix, '(' .. last[1], AFTER_CAP) end
  -- an incident the alerts opened (relay/constants.py alert_open) lasts until notifications are accepted
  row[SRC.opened] = redis.call('GET', key.alert_open('src:' .. src)) or ''
  if silence > 0 then
    row[SRC.last_received] = last_received(ix, 10)
    row[SRC.watched] = redis.call('GET', key.source_watched(src)) or ''
  end
  out[#out + 1] = row
end
return out
