-- Notifications 2Checkout sent to a source, scored above `from` in its index `ix` (refusal.lua,
-- health.lua): a resend (id `X~rN`) is the operator's, not a request, so it neither dilutes a refused
-- share nor ends an incident. Counting stops at `cap` (nil: all); pages keep each reply small.
local function received(ix, from, cap)
  local n, offset = 0, 0
  while true do
    local ids = redis.call('ZRANGEBYSCORE', ix, from, '+inf', 'LIMIT', offset, 1000)
    for _, id in ipairs(ids) do
      if not string.find(id, '~', 1, true) then
        n = n + 1
        if cap and n >= cap then return n end
      end
    end
    if #ids < 1000 then return n end
    offset = offset + 1000
  end
end
