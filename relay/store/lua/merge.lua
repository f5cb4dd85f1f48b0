-- One page of a delivery state across endpoints (relay/store/queries.py): the state indexes of every
-- endpoint (KEYS, each scored by its deliveries' last change) merged newest first, each notification
-- once. Reads about A.limit entries of each index per refill and A.budget notifications at most, never
-- the indexes themselves, so a page costs the same whatever the backlog.
-- KEYS and ARGV are named in relay/store/wire.py (MERGE).
-- A notification is listed at its newest entry among the indexes (the first a walk newest first
-- meets): an entry of one that has an entry above it was met there, on this page or an earlier one,
-- so it is passed over. One whose deliveries stay in the state is listed exactly once; one that left
-- it on some endpoint after the listing began (its newest entry gone) could be met again lower down:
-- queries.py leaves those out of later pages (their deliveries' 'updated' says so), and one that
-- re-entered it is scored now, above every page's cursor.
-- Returns {more (1 or 0), cursor score, cursor member, examined, now ms, nid, score, nid, score, ...}.
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
  local newest = true
  for i = 1, n do
    local s = redis.call('ZSCORE', KEYS[i], best)
    if s and tonumber(s) > bs then
      newest = false
      break
    end
  end
  if newest then
    out[#out + 1] = best
    out[#out + 1] = string.format('%.17g', bs)
  end
end
local more = top() ~= nil and 1 or 0
local reply = {more, last_s, last_m, examined, now_ms()}
for j = 1, #out do reply[#reply + 1] = out[j] end
return reply
