-- Trim the time-scored indexes to the retention period, on Redis's clock (TIME).
-- KEYS: the zsets scored by received / last-change ms, then relay:workers (last)
-- ARGV: 1 retention ms, 2 how long a silent worker stays listed (ms)
-- Returns Redis's clock (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
for i = 1, #KEYS - 1 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)
end
redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS], '-inf', now - tonumber(ARGV[2]))
return now
