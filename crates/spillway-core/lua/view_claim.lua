-- After a commit changed a view key: a new generation (reloads begun before it will not
-- store), and, when the key is cached, its value marked stale and the reload lock taken by
-- the refresher, so readers keep getting the old value until the refreshed one is stored,
-- without reloading it themselves.
-- KEYS[1] the value, KEYS[2] the generation, KEYS[3] the lock
-- ARGV[1] the refresher's token, ARGV[2] the lock's lifetime in ms, ARGV[3] the
-- generation's lifetime in ms
-- Returns {1 when cached else 0, the new generation}.
local generation = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local value = redis.call('GET', KEYS[1])
if not value then
  return {0, tostring(generation)}
end
local separator = string.find(value, ':', 1, true)
redis.call('SET', KEYS[1], '0' .. string.sub(value, separator), 'KEEPTTL')
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return {1, tostring(generation)}
