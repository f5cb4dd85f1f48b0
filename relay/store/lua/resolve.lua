-- Mark failed deliveries of one endpoint resolved once a resend of them was delivered there.
-- KEYS: 1 relay:ep:{ep}:resent, 2 relay:ep:{ep}:st:failed, 3 relay:ep:{ep}:st:resolved
-- (the resends of each original and their deliveries are only known as it runs: key.* from
-- relay/constants.py, see relay/store/scripts.py)
-- ARGV: 1 endpoint, 2 at most this many originals per call, 3 retention ms
-- ``resolved_at`` and the retention cut are on Redis's clock (TIME), as every other stamp is.
-- A resolved delivery keeps state ``failed`` (what happened) and gains ``resolved_by`` and
-- ``resolved_at``; it moves from the failed index to the resolved one, scored by when it failed, so a
-- window counts it where it failed. Idempotent: running it twice changes nothing more.
-- Returns the number resolved by this call.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ep, max, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - retention)
local resolved = 0
for _, orig in ipairs(redis.call('ZRANGE', KEYS[1], 0, max - 1)) do
  local failed_at = redis.call('ZSCORE', KEYS[2], orig)
  if failed_at and redis.call('EXISTS', key.delivery(orig, ep)) == 0 then
    -- expired by retention: writing it would re-create it with no expiry; its index entry goes
    redis.call('ZREM', KEYS[2], orig)
    failed_at = false
  end
  if not failed_at then
    -- not (or no longer) an unresolved failure here: nothing to resolve
    redis.call('ZREM', KEYS[1], orig)
  else
    for _, r in ipairs(redis.call('ZRANGE', key.resends(orig), 0, -1)) do
      if redis.call('HGET', key.delivery(r, ep), 'state') == 'delivered' then
        redis.call('ZREM', KEYS[2], orig)
        redis.call('ZADD', KEYS[3], failed_at, orig)
        redis.call('PEXPIRE', KEYS[3], retention)
        redis.call('HSET', key.delivery(orig, ep), 'resolved_by', r, 'resolved_at', now)
        redis.call('ZREM', KEYS[1], orig)
        resolved = resolved + 1
        break
      end
    end
  end
end
return resolved
