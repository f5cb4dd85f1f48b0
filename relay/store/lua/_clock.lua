-- Redis's clock in ms (TIME): every stamp and score the relay writes is on it, whatever the caller's
-- clock says (an ingress or worker whose clock runs ahead would otherwise file things in the future).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
