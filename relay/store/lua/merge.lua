-- One page of a delivery state across endpoints (relay/store/queries.py): the state indexes of every
-- endpoint (KEYS, each scored by its deliveries' last change) merged newest first, each notification
-- once. Reads about A.limit entries of each index per refill and A.budget notifications at most, never
-- the indexes themselves, so a page costs the same whatever the backlog.
-- KEYS and ARGV are named in relay/store/wire.py (MERGE).
-- A notification is listed at its oldest entry among the indexes (the last one a walk newest first
-- meets): once listed, every entry it has left is above the cursor, and an entry it gains (a delivery
-- entering the state) is scored now, above it too, so no page lists it twice; one that stays in the
-- state is listed when the walk reaches that entry.
-- Returns {more (1 or 0), cursor score, cursor member, examined, nid, score, nid, score, ...}.
local limit, budget = tonumber(ARGV[A.limit]), tonumber(ARGV[A.budget])
local lo = ARGV[A.lo] ~= '-inf' and tonumber(ARGV[A.lo]) or nil
local n = #KEYS
local pos, buf, at, ended = {}, {}, {}, {}
for i = 1, n do
  pos[i], buf[i], at[i], ended[i] = 0, {}, 1, false
  if ARGV[A.after_score] ~= '' then pos[i] = rank_after_desc(KEYS[i], ARGV[A.after_score], ARGV[A.after_nid]) end
end
-- index i's next entry (member, score), refilling its buffer a page at a time
local function head(i)
  if at[i] > #buf[i] then
    if ended[i] then return nil end
    buf[i], at[i] = redis.call('ZREVRANGE', KEYS[i], pos[i], pos[i] + limit - 1, 'WITHSCORES'), 1
    pos[i] = pos[i] + #buf[i] / 2
    ended[i] = #buf[i] < 2 * limit
    if #buf[i] == 0 then return nil end
  end
  return buf[i][at[i]], tonumber(buf[i][at[i] + 1])
end
-- the next (member, score) of the merge: the highest score, then the highest member, as ZREVRANGE orders
local function top()
  local best, bs = nil, nil
  for i = 1, n do
    local m, s = head(i)
    if m and (best == nil or s > bs or (s == bs and not lex_le(m, best))) then best, bs = m, s end
  end
  if best == nil or (lo and bs < lo) then return nil end
  return best, bs
end
local out, examined, last_m, last_s = {}, 0, '', ''
while examined < budget and #out < 2 * limit do
  local best, bs = top()
  if best == nil then break end
  for i = 1, n do
    local m, s = head(i)
    if m == best and s == bs then at[i] = at[i] + 2 end
  end
  examined = examined + 1
  last_m, last_s = best, string.format('%.17g', bs)
  local oldest = true
  for i = 1, n do
    local s = redis.call('ZSCORE', KEYS[i], best)
    if s and tonumber(s) < bs then
      oldest = false
      break
    end
  end
  if oldest then
    out[#out + 1] = best
    out[#out + 1] = string.format('%.17g', bs)
  end
end
local more = top() ~= nil and 1 or 0
local reply = {more, last_s, last_m, examined}
for j = 1, #out do reply[#reply + 1] = out[j] end
return reply
