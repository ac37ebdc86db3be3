-- Creates a counter from its database row unless Redis holds it already (another instance
-- or an earlier call loaded it). The members were put in a staging set first (SADD in
-- chunks, same hash tag); they replace the member set only here, atomically, and only when
-- the counter is absent, so a live member set is never touched.
-- KEYS[1] the counter hash, KEYS[2] the member set, KEYS[3] the staging set
-- ARGV[1] value, ARGV[2] version, then pairs of partition, offset
-- Returns 1 when it loaded, 0 when the counter was already there.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[3])
  return 0
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[2])
else
  redis.call('DEL', KEYS[2])
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'o:' .. ARGV[i], ARGV[i + 1])
end
return 1
