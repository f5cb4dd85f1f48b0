-- Count one refusal of a source's notification (relay/web/ingress.py) for health and alerts.
-- KEYS: 1 relay:src:{src}:lastrej, 2 relay:ix:src:{src}
-- (the per-minute counter, key.source_rejects(src, minute), is built here: its minute is Redis's)
-- ARGV: 1 source, 2 reason, 3 detail, 4 channel, 5 minute key ttl ms, 6 lastrej ttl ms,
--       7 accepted in a row that end an incident
-- An incident begins (``first``) at a refusal that follows none, or follows enough accepted
-- notifications that the previous incident had ended: so ``first`` is "refusing since".
-- Stamped on Redis's clock (TIME), the one health reads the window on: an ingress whose clock is off
-- would otherwise file its refusals outside the window and source_rejecting would never rise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute_key = key.source_rejects(ARGV[1], math.floor(now / 60000))
redis.call('INCR', minute_key)
redis.call('PEXPIRE', minute_key, ARGV[5])
local last = redis.call('HGET', KEYS[1], 'at')
-- resends (ids `X~rN`) are the operator's, not 2Checkout's: they never end an incident
local function received(from, cap)
  local n, offset = 0, 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', KEYS[2], from, '+inf', 'LIMIT', offset, 1000)
    for _, id in ipairs(ids) do
      if not string.find(id, '~', 1, true) then
        n = n + 1
        if n >= cap then return n end
      end
    end
    if #ids < 1000 then return n end
    offset = offset + 1000
  end
end
if not last or received('(' .. last, tonumber(ARGV[7])) >= tonumber(ARGV[7]) then
  redis.call('HSET', KEYS[1], 'first', now)
end
redis.call('HSET', KEYS[1], 'at', now, 'reason', ARGV[2], 'detail', ARGV[3], 'channel', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
