-- Trim the time-scored indexes to the retention period, on Redis's clock (TIME).
-- KEYS: the zsets scored by received / last-change ms, then relay:workers (last); ARGV is named in
-- workers/wire.py (SWEEP).
-- Returns Redis's clock (ms).
local now = now_ms()
local cutoff = now - tonumber(ARGV[A.retention_ms])
for i = 1, #KEYS - 1 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', cutoff)
end
redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS], '-inf', now - tonumber(ARGV[A.worker_ttl_ms]))
return now
