-- Per endpoint and clock hour: deliveries whose last change in that hour left them delivered or
-- resolved (ok) and retrying or failed (fail), from the state indexes. Read-only; one call for the
-- dashboard's charts instead of a reply per hour, state and endpoint.
-- ARGV: 1 first hour's start ms, 2 hour ms, 3 number of hours H, then endpoint names
-- Returns per endpoint {ok_1, fail_1, ..., ok_H, fail_H}.
local start, span, hours = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for a = 4, #ARGV do
  local ep = ARGV[a]
  local function count(state, lo, hi) return redis.call('ZCOUNT', key.ep_state(ep, state), lo, hi) end
  local row = {}
  for h = 0, hours - 1 do
    local lo = start + h * span
    local hi = '(' .. (lo + span)
    row[#row + 1] = count('delivered', lo, hi) + count('resolved', lo, hi)
    row[#row + 1] = count('retrying', lo, hi) + count('failed', lo, hi)
  end
  out[#out + 1] = row
end
return out
