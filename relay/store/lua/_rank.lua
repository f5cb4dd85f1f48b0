-- Where a walk of a sorted set goes on from (score, member), whether or not that member is still there
-- (control.lua's paged retry, merge.lua's listing): members of equal score are ordered bytewise, and a
-- pause or a resume gives thousands the same score, so the place among them is found by binary search.
-- bytewise a <= b, as a sorted set orders members (Lua's own comparison follows the locale)
local function lex_le(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a <= #b
end
-- the rank (ZRANGE order, lowest first) of the first member after (score, member)
local function rank_after(set, score, member)
  local lo = redis.call('ZCOUNT', set, '-inf', '(' .. score)
  local hi = redis.call('ZCOUNT', set, '-inf', score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZRANGE', set, mid, mid)[1]
    if m and lex_le(m, member) then lo = mid + 1 else hi = mid end
  end
  return lo
end
-- the rank (ZREVRANGE order, highest first) of the first member after (score, member)
local function rank_after_desc(set, score, member)
  local lo = redis.call('ZCOUNT', set, '(' .. score, '+inf')
  local hi = redis.call('ZCOUNT', set, score, '+inf')
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZREVRANGE', set, mid, mid)[1]
    if m and lex_le(member, m) then lo = mid + 1 else hi = mid end
  end
  return lo
end
