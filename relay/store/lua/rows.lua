-- The rows of a listing page (relay/store/queries.py load_rows) in one call: each notification's
-- summary fields, then each of its routed endpoints and that delivery's summary fields. A page is at
-- most a few hundred notifications, so the call is bounded by the page, never by the store; one
-- call instead of a command per notification and delivery spares the client most of a page's cost.
-- ARGV is named in relay/store/wire.py (ROWS): the ids follow the (no) named ARGV.
-- Returns per id {summary values (SUMMARY order), ep, delivery values (DELIVERY order), ep, ...}.
local out = {}
for a = #A_LIST + 1, #ARGV do
  local nid = ARGV[a]
  local n = redis.call('HMGET', key.notification(nid), unpack(SUMMARY_LIST))
  local row = {n}
  local eps = n[SUMMARY.eps]
  if eps then
    for ep in string.gmatch(eps, '[^,]+') do
      row[#row + 1] = ep
      row[#row + 1] = redis.call('HMGET', key.delivery(nid, ep), unpack(DELIVERY_LIST))
    end
  end
  out[#out + 1] = row
end
return out
