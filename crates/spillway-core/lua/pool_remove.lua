-- Takes copies out of a pool so that nobody can be handed them any more (before they are
-- deleted from S3).
-- KEYS[1] list of copy ids, KEYS[2] records; ARGV the copy ids
-- Returns the ids that were in the pool (only those may be deleted).
local removed = {}
for _, id in ipairs(ARGV) do
  if redis.call('HDEL', KEYS[2], id) == 1 then
    redis.call('LREM', KEYS[1], 0, id)
    removed[#removed + 1] = id
  end
end
return removed
