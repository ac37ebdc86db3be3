-- The row of a pending write, or nil when none is pending (no marker, or a tombstone).
-- KEYS[1] the marker {w:<sink>:<id>}
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then
  return redis.call('GET', KEYS[1]) -- a marker of spillway before markers were hashes
end
if kind == 'hash' then
  return redis.call('HGET', KEYS[1], 'r')
end
return false
