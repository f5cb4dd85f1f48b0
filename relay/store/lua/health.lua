-- Every figure of the evaluation of health (relay/store/stats.py), read in one call: counting in
-- Redis spares the client thousands of replies to pack and parse. Read-only.
-- ARGV: 1 now ms, 2 number of endpoints E, then E x (name, window ms),
--       then number of sources S, refusal window in minutes, then S x name
-- Returns {endpoint rows..., source rows...}; see relay/store/stats.py for their layout.
local now = tonumber(ARGV[1])
local states = {'pending', 'in_flight', 'retrying', 'failed', 'delivered', 'skipped', 'resolved'}
local out = {}
local i = 3
local function head(key, rev)
  local r
  if rev then r = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES') else r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES') end
  return r
end
-- Notifications 2Checkout sent to a source, scored above `from` in its index: a resend (id `X~rN`)
-- is the operator's, not a request, so it neither dilutes a refused share nor ends an incident.
-- Counting stops at `cap` (nil: all); pages keep each reply small.
local function received(ix, from, cap)
  local n, offset = 0, 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', ix, from, '+inf', 'LIMIT', offset, 1000)
    for _, id in ipairs(ids) do
      if not string.find(id, '~', 1, true) then
        n = n + 1
        if cap and n >= cap then return n end
      end
    end
    if #ids < 1000 then return n end
    offset = offset + 1000
  end
end
for _ = 1, tonumber(ARGV[2]) do
  local ep, window = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local p = 'relay:ep:' .. ep .. ':st:'
  local row = {}
  for _, s in ipairs(states) do row[#row + 1] = redis.call('ZCARD', p .. s) end
  local ph, rh = head(p .. 'pending'), head(p .. 'retrying')
  row[#row + 1] = ph[2] or ''
  row[#row + 1] = rh[2] or ''
  for _, span in ipairs({window, 3600000, 86400000}) do
    for _, s in ipairs({'retrying', 'failed', 'delivered', 'resolved'}) do
      row[#row + 1] = redis.call('ZCOUNT', p .. s, now - span, '+inf')
    end
  end
  -- the oldest failing delivery in the window ("since") and the latest one (its last error)
  local since, latest, latest_at = '', '', -1
  for _, s in ipairs({'retrying', 'failed'}) do
    local first = redis.call('ZRANGEBYSCORE', p .. s, now - window, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if first[2] and (since == '' or tonumber(first[2]) < tonumber(since)) then since = first[2] end
    local last = head(p .. s, true)
    if last[2] and tonumber(last[2]) > latest_at then latest, latest_at = last[1], tonumber(last[2]) end
  end
  row[#row + 1] = since
  local err = {false, false}
  if latest ~= '' then err = redis.call('HMGET', 'relay:d:' .. latest .. ':' .. ep, 'last', 'updated') end
  row[#row + 1] = err[1] or ''
  row[#row + 1] = err[2] or ''
  row[#row + 1] = redis.call('GET', 'relay:alert:ep:' .. ep .. ':open') or ''
  local stats = redis.call('HMGET', 'relay:stats', ep .. '|last_ok', ep .. '|last_fail')
  row[#row + 1] = stats[1] or ''
  row[#row + 1] = stats[2] or ''
  row[#row + 1] = redis.call('ZCARD', 'relay:ep:' .. ep .. ':resent')
  out[#out + 1] = row
end
local n, minutes = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
i = i + 2
local now_min = math.floor(now / 60000)
for _ = 1, n do
  local src = ARGV[i]
  i = i + 1
  local refused = 0
  for m = 0, minutes - 1 do
    refused = refused + tonumber(redis.call('GET', 'relay:src:' .. src .. ':rej:' .. (now_min - m)) or '0')
  end
  local ix = 'relay:ix:src:' .. src
  local accepted = received(ix, now - minutes * 60000)
  local last = redis.call('HMGET', 'relay:src:' .. src .. ':lastrej', 'at', 'first', 'reason', 'detail', 'channel')
  local after = -1
  if last[1] then after = received(ix, '(' .. last[1]) end
  -- an incident the alerts opened (relay/constants.py alert_open) lasts until notifications are accepted
  local opened = redis.call('GET', 'relay:alert:src:' .. src .. ':open') or ''
  out[#out + 1] = {refused, accepted, last[1] or '', last[2] or '', last[3] or '', last[4] or '', last[5] or '', after,
                   opened}
end
return out
