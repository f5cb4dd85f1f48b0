-- One page of a delivery state across endpoints (relay/store/queries.py): the state indexes of every
-- endpoint (KEYS after K.listed, each scored by its deliveries' last change) merged newest first, each
-- notification once. Reads about A.limit entries of each index per refill and A.budget notifications at
-- most, never the indexes themselves, so a page costs the same whatever the backlog.
-- KEYS and ARGV are named in relay/store/wire.py (MERGE).
-- A.began is when the listing's first page was read (the first call takes its own time): an entry
-- scored after it changed since, and is above every page's cursor. A notification is listed at its
-- newest entry among those that did not change since (the first of them a walk newest first meets).
-- One that keeps a delivery in the state, unchanged, is so listed exactly once: its newest unchanged
-- entry only ever moves down, to entries the walk has not passed yet. It could be met again only if
-- the entry it was listed at changes later (its delivery leaves the state, or is scored anew) while it
-- has unchanged entries below the cursor: those notifications are kept in K.listed (scored by their
-- lowest such entry, dropped once the walk has passed it, expiring A.ttl ms after the last page) and
-- passed over when met again. One with no unchanged entry left has changed since the listing began:
-- a new listing shows it at the top.
-- Returns {more (1 or 0), cursor score, cursor member, examined, began ms, nid, score, nid, score, ...}.
local limit, budget = tonumber(ARGV[A.limit]), tonumber(ARGV[A.budget])
local lo = ARGV[A.lo] ~= '-inf' and tonumber(ARGV[A.lo]) or nil
local fresh = ARGV[A.began] == ''
local began = fresh and now_ms() or tonumber(ARGV[A.began])
-- entries scored up to `cut` did not change since the listing began: on the first call, every entry (it
-- sees them all as they are). A later call cannot tell an entry of began's millisecond the first call
-- saw from one a change wrote after it, so it counts none of them (one the first call listed and that
-- could be met again is in K.listed; one it did not reach is listed at its next entry); but see the end
local cut = fresh and math.huge or began - 1
local first, n = #K_LIST + 1, #KEYS
local pos, buf, at, ended = {}, {}, {}, {}
for i = first, n do
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
  for i = first, n do
    local m, s = head(i)
    if m and (best == nil or s > bs or (s == bs and not lex_le(m, best))) then best, bs = m, s end
  end
  if best == nil or (lo and bs < lo) then return nil end
  return best, bs
end
-- whether `best`, met at score bs, is listed here, and its lowest unchanged entry below bs (or nil)
local function listed_here(best, bs)
  if bs > cut then return false, nil end
  local low = nil
  for i = first, n do
    local s = redis.call('ZSCORE', KEYS[i], best)
    s = s and tonumber(s)
    if s and s > bs and s <= cut then return false, nil end
    if s and s < bs and (low == nil or s < low) then low = s end
  end
  if redis.call('ZSCORE', KEYS[K.listed], best) then return false, nil end
  return true, low
end
local out, examined, last_m, last_s, kept, top_s = {}, 0, '', '', false, nil
while examined < budget and #out < 2 * limit do
  local best, bs = top()
  if best == nil then break end
  top_s = top_s or bs
  for i = first, n do
    local m, s = head(i)
    if m == best and s == bs then at[i] = at[i] + 2 end
  end
  examined = examined + 1
  last_m, last_s = best, string.format('%.17g', bs)
  local here, low = listed_here(best, bs)
  if here then
    out[#out + 1] = best
    out[#out + 1] = last_s
    if low then
      redis.call('ZADD', KEYS[K.listed], low, best)
      kept = true
    end
  end
end
local more = top() ~= nil and 1 or 0
if more == 0 then
  redis.call('DEL', KEYS[K.listed])
elseif examined > 0 then
  -- those whose every unchanged entry the walk has passed can no longer be met again
  redis.call('ZREMRANGEBYSCORE', KEYS[K.listed], '(' .. last_s, '+inf')
  if kept or redis.call('EXISTS', KEYS[K.listed]) == 1 then redis.call('PEXPIRE', KEYS[K.listed], ARGV[A.ttl]) end
end
-- the listing began above every entry the first call saw (one scored ahead of Redis's clock, after the
-- clock stepped back, included), and after the last it examined when it stopped among entries of its
-- own millisecond: the later calls take the rest of them as unchanged (a change written in that
-- millisecond after the first call is then taken for unchanged too: it can hide that notification's
-- lower entries from this listing)
if fresh then
  if top_s and top_s > began then began = top_s end
  if more == 1 and last_s ~= '' and tonumber(last_s) >= began then began = began + 1 end
end
local reply = {more, last_s, last_m, examined, began}
for j = 1, #out do reply[#reply + 1] = out[j] end
return reply
