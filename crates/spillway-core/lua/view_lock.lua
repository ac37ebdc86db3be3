-- Takes the reload lock of one view key, so one caller (of any gateway) reloads it.
-- KEYS[1] the lock, KEYS[2] the key's generation (bumped by every commit that changes it)
-- ARGV[1] the caller's token, ARGV[2] the lock's lifetime in ms (the reload timeout)
-- Returns {1 when taken else 0, the generation ('' when none)}: a reload stores its result
-- only if the generation is still the one it read here, so a reload that raced a commit
-- never writes its older result over the refreshed one.
local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local generation = redis.call('GET', KEYS[2]) or ''
if taken then
  return {1, generation}
end
return {0, generation}
