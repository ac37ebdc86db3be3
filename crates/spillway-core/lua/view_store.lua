-- Stores a reloaded view result unless a commit changed the key since the reload began,
-- and releases the caller's lock.
-- KEYS[1] the value, KEYS[2] the generation, KEYS[3] the lock
-- ARGV[1] the generation read when the reload began, ARGV[2] the value
-- ('<fresh until, unix ms>:<JSON>'), ARGV[3] its lifetime in ms (fresh + stale), ARGV[4]
-- the caller's lock token
-- Returns 1 when stored, 0 when superseded. The value always carries a TTL: views are
-- what Redis may evict.
local stored = 0
if (redis.call('GET', KEYS[2]) or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  stored = 1
end
if redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return stored
