-- After its row's commit, turns a marker into a tombstone, unless it holds a newer write of
-- the id than the one committed (a later offset of the same partition), which stays pending.
-- The tombstone (no row; `c` the committed offset) lives a minute, so a gateway whose marker
-- arrives after the commit (its Redis call was slow) cannot leave a marker nobody clears.
-- KEYS[1] the marker {w:<sink>:<id>}
-- ARGV[1] partition, ARGV[2] offset of the newest write of the id the commit holds,
-- ARGV[3] how long the tombstone lives (ms)
-- Returns 1 when a pending marker was cleared.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'string' then
  return redis.call('DEL', KEYS[1]) -- a marker of spillway before markers were hashes
end
local cleared = 0
if kind == 'hash' then
  if redis.call('HGET', KEYS[1], 'p') ~= ARGV[1] then
    return 0
  end
  if tonumber(redis.call('HGET', KEYS[1], 'o') or '-1') > tonumber(ARGV[2]) then
    return 0
  end
  cleared = redis.call('HEXISTS', KEYS[1], 'r')
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'p', ARGV[1], 'c', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return cleared
