-- Mark failed deliveries of one endpoint resolved once a resend of them was delivered there.
-- KEYS and ARGV are named in relay/store/wire.py (RESOLVE); the resends of each original and their
-- deliveries are only known as it runs: key.* from relay/constants.py (relay/store/scripts.py).
-- ``resolved_at`` and the retention cut are on Redis's clock (TIME), as every other stamp is.
-- A resolved delivery keeps state ``failed`` (what happened) and gains ``resolved_by`` and
-- ``resolved_at``; it moves from the failed index to the resolved one, scored by when it failed, so a
-- window counts it where it failed. Idempotent: running it twice changes nothing more.
-- Returns the number resolved by this call.
local now = now_ms()
local ep, max, retention = ARGV[A.ep], tonumber(ARGV[A.per_call]), tonumber(ARGV[A.retention_ms])
redis.call('ZREMRANGEBYSCORE', KEYS[K.resent], '-inf', now - retention)
local resolved = 0
for _, orig in ipairs(redis.call('ZRANGE', KEYS[K.resent], 0, max - 1)) do
  local failed_at = redis.call('ZSCORE', KEYS[K.failed], orig)
  if failed_at and redis.call('EXISTS', key.delivery(orig, ep)) == 0 then
    -- expired by retention: writing it would re-create it with no expiry; its index entry goes
    redis.call('ZREM', KEYS[K.failed], orig)
    failed_at = false
  end
  if not failed_at then
    -- not (or no longer) an unresolved failure here: nothing to resolve
    redis.call('ZREM', KEYS[K.resent], orig)
  else
    for _, r in ipairs(redis.call('ZRANGE', key.resends(orig), 0, -1)) do
      if redis.call('HGET', key.delivery(r, ep), 'state') == 'delivered' then
        redis.call('ZREM', KEYS[K.failed], orig)
        redis.call('ZADD', KEYS[K.resolved], failed_at, orig)
        redis.call('PEXPIRE', KEYS[K.resolved], retention)
        redis.call('HSET', key.delivery(orig, ep), 'resolved_by', r, 'resolved_at', now)
        redis.call('ZREM', KEYS[K.resent], orig)
        resolved = resolved + 1
        break
      end
    end
  end
end
return resolved
