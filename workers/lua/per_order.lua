-- The claim of a per_order endpoint: at most one delivery in flight per order, in order of receipt
-- within it, different orders side by side. Part of step.lua, before claim.lua, which calls it.
-- The queue is ordered by receipt (score: seq) and keeps a delivery while it is in flight or waiting
-- to retry, so the first entry of each order is that order's oldest unfinished delivery: only it may
-- be sent. It is sent unless it is in flight under a live lease, or retrying and not yet due. The
-- order is the notification's ref (IPN REFNO, LCN LICENSE_CODE, INS sale_id; protocol.facts); a
-- notification without one is an order of its own.
-- per_order(q, lease, ep, now, fanout, want) -> candidates, states, wait, blocked
--   candidates: up to ``want`` nids in receipt order, with their delivery fields in states
--   wait: ms until the first waiting head is due (0: none); blocked: the seq of the first entry an
--   older notification not yet routed may precede (it could be of the same order), or nil
-- At most PER_ORDER_SCAN entries are looked at per claim: a claim never holds Redis for a whole backlog.
local function per_order(q, lease, ep, now, fanout, want)
  local oldest = redis.call('ZRANGE', fanout, 0, 0, 'WITHSCORES')
  local unrouted = tonumber(oldest[2] or '')
  local seen, candidates, states = {}, {}, {}
  local wait, blocked, start = nil, nil, 0
  while #candidates < want and start < PER_ORDER_SCAN and not blocked do
    local page = redis.call('ZRANGE', q, start, start + 99, 'WITHSCORES')
    if #page == 0 then break end
    start = start + 100
    local j = 1
    while j < #page and #candidates < want do
      local nid, seq = page[j], tonumber(page[j + 1])
      j = j + 2
      if unrouted and unrouted < seq then
        blocked = seq
        break
      end
      local order = redis.call('HGET', key.notification(nid), 'ref')
      if not order or order == '' then order = '#' .. nid end
      if not seen[order] then
        seen[order] = true
        local st = redis.call('HMGET', key.delivery(nid, ep), 'state', 'attempts', 'next', 'paused_ms', 'unsent')
        local nxt = tonumber(st[3] or '0')
        if st[1] == 'in_flight' and redis.call('ZSCORE', lease, nid) then
          -- in flight under a live lease: its order waits (an expired lease is a lost worker: sent again)
        elseif nxt > now then
          if not wait or nxt - now < wait then wait = nxt - now end
        else
          candidates[#candidates + 1], states[#candidates + 1] = nid, st
        end
      end
    end
  end
  return candidates, states, wait or 0, blocked
end
