-- Creates a counter hash from its database row, unless it exists already (another instance
-- or an earlier call loaded it). The member set is filled with SADD before this runs; the
-- hash is created last, so "the hash exists" means "the counter is complete".
-- KEYS[1] the counter hash
-- ARGV[1] value, ARGV[2] version, then pairs of partition, offset
-- Returns 1 when it loaded, 0 when the counter was already there.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'o:' .. ARGV[i], ARGV[i + 1])
end
return 1
