-- One worker round trip: record waiting results, then claim for the endpoints that asked.
-- Preceded by the generated preamble (field and key names, constants), complete.lua and claim.lua.
-- KEYS and ARGV are named in workers/wire.py (STEP): after K.fanout and K.stats come #RK_LIST keys per
-- result, then #CK_LIST keys per claim; after A.results (their number N), N results of #R_LIST fields,
-- then claims of #C_LIST fields.
-- Returns Redis's clock (ms), N flags (see complete.lua; 'err' for a result whose recording raised),
-- then each claim's part (see claim.lua).
local now = now_ms()
local nres = tonumber(ARGV[A.results])
local out, tally, latest = {now}, {}, {}
local nr, nk, nc, nck = #R_LIST, #RK_LIST, #C_LIST, #CK_LIST
local i, ki = #A_LIST + 1, #K_LIST + 1
for _ = 1, nres do
  -- pcall: one result that cannot be recorded (a wrong-type key) fails alone, not the whole call,
  -- and complete() is idempotent per attempt, so retrying it cannot double what did get written
  local ok, fresh = pcall(complete, {unpack(ARGV, i, i + nr - 1)}, {unpack(KEYS, ki, ki + nk - 1)}, now,
                          tally, latest)
  if ok then out[#out + 1] = fresh else out[#out + 1] = 'err' end
  i, ki = i + nr, ki + nk
end
-- counters of every result in this call: one write per counter. pcall: a corrupt counter must not
-- stop deliveries (the results above are already written)
for f, n in pairs(tally) do redis.pcall('HINCRBY', KEYS[K.stats], f, n) end
local last = {}
for f, ms in pairs(latest) do last[#last + 1] = f; last[#last + 1] = ms end
if #last > 0 then redis.pcall('HSET', KEYS[K.stats], unpack(last)) end
while i <= #ARGV do
  claim({unpack(ARGV, i, i + nc - 1)}, {unpack(KEYS, ki, ki + nck - 1)}, now, KEYS[K.fanout], out)
  i, ki = i + nc, ki + nck
end
return out
