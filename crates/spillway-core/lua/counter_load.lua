-- Creates a counter from its database state unless Redis holds it already (another instance
-- or an earlier call loaded it). The members and the recent event ids were put in staging
-- keys first (in chunks, same hash tag); they replace the live ones only here, atomically,
-- and only when the counter is absent, so a live member set or id set is never touched.
-- KEYS[1] the counter hash, KEYS[2] the member set, KEYS[3] the members' staging set,
-- KEYS[4] the recent event ids, KEYS[5] the ids' staging set
-- ARGV[1] value, ARGV[2] version, then pairs of partition, offset
-- Returns 1 when it loaded, 0 when the counter was already there.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3], KEYS[5])
  return 0
end
local function swap_in(staging, live)
  if redis.call('EXISTS', staging) == 1 then
    redis.call('RENAME', staging, live)
  else
    redis.call('DEL', live)
  end
end
swap_in(KEYS[3], KEYS[2])
swap_in(KEYS[5], KEYS[4])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'o:' .. ARGV[i], ARGV[i + 1])
end
return 1
