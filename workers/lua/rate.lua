-- rate_limit: an endpoint's requests per second across all worker processes, judged on Redis's clock
-- (GCRA: one stored "theoretical arrival time" per endpoint). Part of step.lua, before claim.lua,
-- which asks rate_allowed before it claims and records what it claimed with rate_spent. A delivery the
-- limit holds back is simply not claimed: it stays pending or retrying, no attempt is made or counted,
-- and the lane sleeps until the next request is allowed (no polling). rk: relay:ep:{ep}:rate.
-- interval: ms between requests (1000 / rate_limit, fractions kept); burst: rate_burst.

-- how many requests may start now, the arrival time they start from, and, when none may, the ms
-- until one may
local function rate_allowed(rk, interval, burst, now)
  local tat = tonumber(redis.call('HGET', rk, 'tat') or '') or 0
  if tat < now then tat = now end
  -- a little slack below 1: the division of whole ms by a fractional interval must not lose a request
  local allowed = math.floor((now + burst * interval - tat) / interval + 1e-9)
  if allowed > 0 then return allowed, tat, 0 end
  return 0, tat, math.max(1, math.ceil(tat + interval - burst * interval - now))
end

-- ``count`` requests claimed from ``tat``: the next arrival time, and the count of this window (the
-- rate relay health shows: requests of the last whole RATE_WINDOW_MS)
local function rate_spent(rk, interval, burst, tat, count, now)
  local win = math.floor(now / RATE_WINDOW_MS)
  local st = redis.call('HMGET', rk, 'win', 'n')
  local at, n = tonumber(st[1] or '') or -1, tonumber(st[2] or '') or 0
  if at == win then
    redis.call('HSET', rk, 'tat', tat + count * interval, 'n', n + count)
  else
    local prev = 0
    if at == win - 1 then prev = n end
    redis.call('HSET', rk, 'tat', tat + count * interval, 'win', win, 'n', count, 'prev', prev)
  end
  redis.call('PEXPIRE', rk, math.max(2 * RATE_WINDOW_MS, math.ceil(2 * burst * interval)))
end

-- held back now with work due: stamped for relay health and the dashboard ('throttled')
local function rate_held(rk, interval, burst, now)
  redis.call('HSET', rk, 'held', now)
  redis.call('PEXPIRE', rk, math.max(2 * RATE_WINDOW_MS, math.ceil(2 * burst * interval)))
end
