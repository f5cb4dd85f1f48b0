-- Per endpoint and clock hour: deliveries whose last change in that hour left them delivered or
-- resolved (ok) and retrying or failed (fail), from the state indexes. Read-only; one call for the
-- dashboard's charts instead of a reply per hour, state and endpoint.
-- ARGV is named in relay/store/wire.py (HOURLY): the hours, then the endpoint names.
-- Returns per endpoint {ok_1, fail_1, ..., ok_H, fail_H}.
local start, span, hours = tonumber(ARGV[A.first_ms]), tonumber(ARGV[A.hour_ms]), tonumber(ARGV[A.hours])
local out = {}
for a = #A_LIST + 1, #ARGV do
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
