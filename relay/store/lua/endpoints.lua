-- Which endpoints the relay has (relay/store/endpoints.py): register the configured ones and record the
-- removal of the others, atomically, on Redis's clock.
-- KEYS and ARGV are named in relay/store/wire.py (ENDPOINTS): A.when is 'start' or 'reload'; A.configured
-- and A.removing are JSON {name: rule JSON} (removing: by this reload, '{}' at start); A.states the JSON
-- list of the delivery states (their indexes).
-- At start, every registered endpoint the configuration lacks was removed while no process ran it (the
-- file was edited and the worker restarted, not reloaded). A removal records Redis's clock and the
-- notification sequence number now (seq): the removed endpoint's work routed up to seq ends cancelled,
-- what a re-added endpoint is routed later never. A removal older than retention is forgotten.
-- Returns the names whose removal this call recorded.
local now = now_ms()
local configured = cjson.decode(ARGV[A.configured])
local removing = cjson.decode(ARGV[A.removing])
local by = 'reload'
if ARGV[A.when] == 'start' then
  by = 'restart'
  local registered = redis.call('HGETALL', KEYS[K.registry])
  for i = 1, #registered, 2 do
    if configured[registered[i]] == nil then removing[registered[i]] = registered[i + 1] end
  end
end
local seq = tonumber(redis.call('GET', KEYS[K.seq]) or '0')
local gone = {}
for name, rule in pairs(removing) do
  if configured[name] == nil then
    redis.call('HSET', KEYS[K.removed], name, cjson.encode({at = now, seq = seq, rule = rule, by = by}))
    redis.call('HDEL', KEYS[K.registry], name)
    gone[#gone + 1] = name
  end
end
-- a configured endpoint's keys lose any expiry now: the sweeper gives the keys of a removed name the
-- retention period (workers/retention.py), and a re-added endpoint's live queue must not expire
local states = cjson.decode(ARGV[A.states])
for name, rule in pairs(configured) do
  redis.call('HSET', KEYS[K.registry], name, rule)
  redis.call('PERSIST', key.ep_queue(name))
  redis.call('PERSIST', key.ep_lease(name))
  redis.call('PERSIST', key.ep_resent(name))
  for _, state in ipairs(states) do redis.call('PERSIST', key.ep_state(name, state)) end
end
local removed = redis.call('HGETALL', KEYS[K.removed])
for i = 1, #removed, 2 do
  local ok, doc = pcall(cjson.decode, removed[i + 1])
  if not ok or type(doc) ~= 'table' or (tonumber(doc.at) or 0) < now - tonumber(ARGV[A.retention_ms]) then
    redis.call('HDEL', KEYS[K.removed], removed[i])
  end
end
return gone
