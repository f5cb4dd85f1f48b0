-- Notifications 2Checkout sent to a source, scored from `from` (up to `to`, '+inf' when nil) in its
-- index `ix` (refusal.lua, health.lua): a resend (id `X~rN`) is the operator's, not a request, so it neither dilutes a refused
-- share nor ends an incident. Counting stops at `cap`; pages keep each reply small, and at most
-- RECEIVED_PAGES of them are read (an index crowded with resends after a bulk resend is not walked to
-- its end: the count is then a lower bound), so a call never costs more as the store grows.
local RECEIVED_PAGES = 5
local function received(ix, from, cap, to)
  local n = 0
  for page = 0, RECEIVED_PAGES - 1 do
    local ids = redis.call('ZRANGEBYSCORE', ix, from, to or '+inf', 'LIMIT', page * 1000, 1000)
    for _, id in ipairs(ids) do
      if not string.find(id, '~', 1, true) then
        n = n + 1
        if n >= cap then return n end
      end
    end
    if #ids < 1000 then return n end
  end
  return n
end
