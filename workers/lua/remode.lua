-- A reload changed an endpoint between serial and concurrent: re-score its queued deliveries for the
-- new mode, and record the mode on each (complete.lua reschedules a retry by it, and the operator
-- actions of relay/store/lua/control.lua read it). Idempotent: every worker runs it at its reload.
-- KEYS and ARGV are named in workers/wire.py (REMODE): after A.ep and A.mode come the nids to re-score (a
-- page of the queue, read by the caller: one call never holds Redis for a whole backlog)
--   serial, per_order: by receipt (the delivery's seq), the order a serial queue keeps; a retry's due time
--               stays in its 'next', which only the head's claim reads
--   concurrent: by due time: a retry (or a paused retry) at its 'next', one in flight at its lease
--               expiry (as claim.lua scores it), anything else due since it was routed ('created')
-- Returns the number of deliveries re-scored (those no longer queued are left alone).
local q = KEYS[K.queue]
local ep, mode = ARGV[A.ep], ARGV[A.mode]
local count = 0
for i = #A_LIST + 1, #ARGV do
  local nid = ARGV[i]
  if redis.call('ZSCORE', q, nid) then
    local d = key.delivery(nid, ep)
    local st = redis.call('HMGET', d, 'state', 'seq', 'next', 'lease', 'created', 'paused_from')
    local score
    if not st[1] then
      score = nil  -- expired by retention: claim.lua drops it from the queue
    elseif mode == 'serial' or mode == 'per_order' then
      score = tonumber(st[2])
    elseif st[1] == 'in_flight' then
      score = tonumber(st[4])
    elseif st[1] == 'retrying' or (st[1] == 'paused' and st[6] == 'retrying') then
      score = tonumber(st[3])
    else
      score = tonumber(st[5])
    end
    if score then
      redis.call('ZADD', q, score, nid)
      redis.call('HSET', d, 'mode', mode)
      count = count + 1
    end
  end
end
return count
