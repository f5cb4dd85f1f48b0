-- Which endpoints the relay has (relay/store/endpoints.py): register the configured ones and record the
-- removal of the others, atomically, on Redis's clock.
-- KEYS: 1 relay:endpoints, 2 relay:ep-removed, 3 relay:seq
-- ARGV: 1 'start' | 'reload', 2 JSON {name: rule JSON} configured, 3 JSON {name: rule JSON} removed by
--       this reload ('{}' at start), 4 retention ms, 5 JSON list of the delivery states (their indexes)
-- At start, every registered endpoint the configuration lacks was removed while no process ran it (the
-- file was edited and the worker restarted, not reloaded). A removal records Redis's clock and the
-- notification sequence number now (seq): the removed endpoint's work routed up to seq ends cancelled,
-- what a re-added endpoint is routed later never. A removal older than retention is forgotten.
-- Returns the names whose removal this call recorded.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local configured = cjson.decode(ARGV[2])
local removing = cjson.decode(ARGV[3])
local by = 'reload'
if ARGV[1] == 'start' then
  by = 'restart'
  local registered = redis.call('HGETALL', KEYS[1])
  for i = 1, #registered, 2 do
    if configured[registered[i]] == nil then removing[registered[i]] = registered[i + 1] end
  end
end
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
local gone = {}
for name, rule in pairs(removing) do
  if configured[name] == nil then
    redis.call('HSET', KEYS[2], name, cjson.encode({at = now, seq = seq, rule = rule, by = by}))
    redis.call('HDEL', KEYS[1], name)
    gone[#gone + 1] = name
  end
end
-- a configured endpoint's keys lose any expiry now: the sweeper gives the keys of a removed name the
-- retention period (workers/retention.py), and a re-added endpoint's live queue must not expire
local states = cjson.decode(ARGV[5])
for name, rule in pairs(configured) do
  redis.call('HSET', KEYS[1], name, rule)
  redis.call('PERSIST', key.ep_queue(name))
  redis.call('PERSIST', key.ep_lease(name))
  redis.call('PERSIST', key.ep_resent(name))
  for _, state in ipairs(states) do redis.call('PERSIST', key.ep_state(name, state)) end
end
local removed = redis.call('HGETALL', KEYS[2])
for i = 1, #removed, 2 do
  local ok, doc = pcall(cjson.decode, removed[i + 1])
  if not ok or type(doc) ~= 'table' or (tonumber(doc.at) or 0) < now - tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[2], removed[i])
  end
end
return gone
