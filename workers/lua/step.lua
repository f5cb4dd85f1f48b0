-- One worker round trip: record waiting results, then claim for the endpoints that asked.
-- Preceded by complete.lua and claim.lua (their functions), concatenated by workers/engine.py.
-- KEYS: 1 relay:fanout, 2 relay:stats
-- ARGV: 1 now ms (claims), 2 retention ms, 3 number of results R,
--       then R results of 13 fields each (see complete.lua),
--       then claims of 5 fields each: endpoint, serial (1|0), in-flight limit, lease ms, batch size
-- Returns R fresh flags (1, or 0 for a stale result), then each claim's part (see claim.lua).
local now, retention, nres = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out, tally, minutes, latest = {}, {}, {}, {}
local i = 4
for _ = 1, nres do
  out[#out + 1] = complete({unpack(ARGV, i, i + 12)}, retention, tally, minutes, latest)
  i = i + 13
end
-- counters of every result in this call: one write per counter. pcall: a corrupt counter must not
-- stop deliveries (the results above are already written)
for key, fields in pairs(minutes) do
  local created = false
  for f, n in pairs(fields) do
    if redis.call('HINCRBY', key, f, n) == n then created = true end
  end
  -- a minute hash gets its expiry when one of its fields is created, not on every write
  if created then redis.call('EXPIRE', key, 90000) end
end
for f, n in pairs(tally) do redis.pcall('HINCRBY', KEYS[2], f, n) end
local last = {}
for f, ms in pairs(latest) do last[#last + 1] = f; last[#last + 1] = ms end
if #last > 0 then redis.call('HSET', KEYS[2], unpack(last)) end
while i <= #ARGV do
  claim(ARGV[i], now, ARGV[i + 1] == '1', tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), out)
  i = i + 5
end
return out
