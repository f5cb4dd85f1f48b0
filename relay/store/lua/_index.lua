-- A new notification's index writes (ingest.lua, resend.lua), each scored by its receipt time `now`.
-- The receipt indexes (every notification, its channel's, its source's) are trimmed by the sweeper.
local function index_receipt(now, nid, ix_all, ix_channel, ix_source)
  redis.call('ZADD', ix_all, now, nid)
  redis.call('ZADD', ix_channel, now, nid)
  redis.call('ZADD', ix_source, now, nid)
end
-- An index that keeps only the retention period itself ('' for none): a reference (a licence code) can
-- live for years, and a few event types take most notifications.
local function index_within(ix, now, nid, retention)
  if ix == '' then return end
  redis.call('ZREMRANGEBYSCORE', ix, '-inf', now - retention)
  redis.call('ZADD', ix, now, nid)
  redis.call('PEXPIRE', ix, retention)
end
