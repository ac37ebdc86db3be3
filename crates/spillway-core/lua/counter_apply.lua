-- Applies one counter event exactly once.
-- KEYS[1] the counter hash {c:<namespace>:<entity_id>} (fields: v value, ver version,
--         o:<partition> last applied offset of that partition)
-- KEYS[2] the distinct member set {c:<namespace>:<entity_id>}:m
-- ARGV[1] partition, ARGV[2] offset, ARGV[3] operation (add | remove | incr),
-- ARGV[4] member, ARGV[5] delta
-- Returns {status, value}: status 0 = the counter is not loaded (load it, then retry),
-- 1 = applied, 2 = already applied (a replay: nothing changed).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0}
end
local offset_field = 'o:' .. ARGV[1]
local offset = tonumber(ARGV[2])
local applied = tonumber(redis.call('HGET', KEYS[1], offset_field) or '-1')
if offset <= applied then
  return {2, tonumber(redis.call('HGET', KEYS[1], 'v') or '0')}
end
-- `0 - n`, not `-n`: Lua's -0 would reach HINCRBY as "-0", which Redis refuses.
local change = 0
if ARGV[3] == 'add' then
  change = redis.call('SADD', KEYS[2], ARGV[4])
elseif ARGV[3] == 'remove' then
  change = 0 - redis.call('SREM', KEYS[2], ARGV[4])
else
  change = tonumber(ARGV[5])
end
local value = redis.call('HINCRBY', KEYS[1], 'v', change)
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], offset_field, offset)
return {1, value}
