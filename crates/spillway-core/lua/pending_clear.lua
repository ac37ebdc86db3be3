-- Clears a marker after its row's commit, unless it holds a newer write of the id than the
-- one committed (a later offset of the same partition), which stays pending.
-- KEYS[1] the marker {w:<sink>:<id>}
-- ARGV[1] partition, ARGV[2] offset of the newest write of the id the commit holds
-- Returns 1 when the marker was deleted.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then
  return redis.call('DEL', KEYS[1]) -- a marker of spillway before markers were hashes
end
if kind ~= 'hash' or redis.call('HGET', KEYS[1], 'p') ~= ARGV[1] then
  return 0
end
if tonumber(redis.call('HGET', KEYS[1], 'o')) <= tonumber(ARGV[2]) then
  return redis.call('DEL', KEYS[1])
end
return 0
