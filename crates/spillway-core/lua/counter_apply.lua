-- Applies one consumer batch's events of one counter, each exactly once, in one call.
-- KEYS[1] the counter hash {c:<namespace>:<entity_id>} (fields: 'v' value, 'ver' version,
--         'o:' .. partition = the last applied offset of that partition)
-- KEYS[2] the distinct member set {c:<namespace>:<entity_id>}:m
-- KEYS[3] the counter's recent event ids {c:<namespace>:<entity_id>}:e (a sorted set scored
--         by the time, in ms, the id was recorded; trimmed to the window at every call, and
--         without a TTL, so `maxmemory-policy volatile-ttl` never evicts it)
-- ARGV[1] now (unix ms), ARGV[2] the dedupe window (ms; 0 keeps no ids),
-- then 5 values per event, in the order the consumer read them:
--   partition, offset, operation (add | remove | incr), member or delta, event id ('' when
--   the producer never re-sends it)
-- An event at or below its partition's applied offset is a replay of the record itself and
-- changes nothing; an event whose id the window holds is a re-sent event and only advances
-- the offset; any other event is applied and its id recorded.
-- Returns {status, value, applied, replayed, duplicates}: status 0 = the counter is not
-- loaded (load it, then call again; nothing changed), 1 = done.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0, 0, 0}
end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if window > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - window))
end
local applied_offsets = {}
local change = 0
local applied, replayed, duplicates = 0, 0, 0
for i = 3, #ARGV, 5 do
  local offset_field = 'o:' .. ARGV[i]
  local offset = tonumber(ARGV[i + 1])
  local last = applied_offsets[offset_field]
  if last == nil then
    last = tonumber(redis.call('HGET', KEYS[1], offset_field) or '-1')
  end
  if offset <= last then
    replayed = replayed + 1
  else
    applied_offsets[offset_field] = offset
    local event_id = ARGV[i + 4]
    local keep_id = window > 0 and event_id ~= ''
    if keep_id and redis.call('ZSCORE', KEYS[3], event_id) then
      duplicates = duplicates + 1
    else
      if keep_id then
        redis.call('ZADD', KEYS[3], now, event_id)
      end
      -- `0 - n`, not `-n`: Lua's -0 would reach HINCRBY as "-0", which Redis refuses.
      local operation = ARGV[i + 2]
      if operation == 'add' then
        change = change + redis.call('SADD', KEYS[2], ARGV[i + 3])
      elseif operation == 'remove' then
        change = change - redis.call('SREM', KEYS[2], ARGV[i + 3])
      else
        change = change + tonumber(ARGV[i + 3])
      end
      applied = applied + 1
    end
  end
end
local value
if applied + duplicates > 0 then
  value = redis.call('HINCRBY', KEYS[1], 'v', change)
  redis.call('HINCRBY', KEYS[1], 'ver', applied + duplicates)
  for field, offset in pairs(applied_offsets) do
    redis.call('HSET', KEYS[1], field, offset)
  end
else
  value = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
end
return {1, value, applied, replayed, duplicates}
