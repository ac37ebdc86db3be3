-- Applies one consumer batch's events of one counter, each exactly once, in one call.
-- KEYS[1] the counter hash {c:<namespace>:<entity_id>} (fields: 'v' value, 'ver' version,
--         'o:' .. partition = the last applied offset of that partition)
-- KEYS[2] the distinct member set {c:<namespace>:<entity_id>}:m
-- KEYS[3] the counter's recent event ids {c:<namespace>:<entity_id>}:e (a sorted set scored
--         by the time, in ms, the id was recorded; trimmed to the window at every call, and
--         without a TTL, so `maxmemory-policy volatile-ttl` never evicts it)
-- ARGV[1] now (unix ms), ARGV[2] the dedupe window (ms; 0 keeps no ids),
-- then 7 values per entry (crates/spillway-core/src/counters/combine.rs): partition, first
-- offset, last offset, operation (add | remove | incr), member or delta, event id ('' when
-- none is recorded), how many events the entry stands for.
-- An entry at or below its partition's applied offset (as it was before this call) is a
-- replay of records applied before and changes nothing; an entry with an id the window
-- holds is a re-sent event and only moves the offset; any other entry is applied and its id
-- recorded. A combined sum that straddles the applied offset cannot be split here: then
-- nothing changes and the caller sends the events one by one.
-- Returns {status, value, applied, replayed, duplicates}: status 0 = the counter is not
-- loaded (load it, then call again), 1 = done, 2 = send the events one by one; nothing
-- changed unless 1.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, 0, 0, 0, 0}
end
local applied_before = {}
local function applied_offset(field)
  local offset = applied_before[field]
  if offset == nil then
    offset = tonumber(redis.call('HGET', KEYS[1], field) or '-1')
    applied_before[field] = offset
  end
  return offset
end
for i = 3, #ARGV, 7 do
  local before = applied_offset('o:' .. ARGV[i])
  if tonumber(ARGV[i + 1]) <= before and tonumber(ARGV[i + 2]) > before then
    return {2, 0, 0, 0, 0}
  end
end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if window > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - window))
end
local newest = {}
local change = 0
local applied, replayed, duplicates, advanced = 0, 0, 0, 0
for i = 3, #ARGV, 7 do
  local field = 'o:' .. ARGV[i]
  local last = tonumber(ARGV[i + 2])
  local count = tonumber(ARGV[i + 6])
  if last <= applied_offset(field) then
    replayed = replayed + count
  else
    if last > (newest[field] or -1) then
      newest[field] = last
    end
    advanced = advanced + count
    local event_id = ARGV[i + 5]
    local keep_id = window > 0 and event_id ~= ''
    if keep_id and redis.call('ZSCORE', KEYS[3], event_id) then
      duplicates = duplicates + count
    else
      if keep_id then
        redis.call('ZADD', KEYS[3], now, event_id)
      end
      -- `0 - n`, not `-n`: Lua's -0 would reach HINCRBY as "-0", which Redis refuses.
      local operation = ARGV[i + 3]
      if operation == 'add' then
        change = change + redis.call('SADD', KEYS[2], ARGV[i + 4])
      elseif operation == 'remove' then
        change = change - redis.call('SREM', KEYS[2], ARGV[i + 4])
      else
        change = change + tonumber(ARGV[i + 4])
      end
      applied = applied + count
    end
  end
end
local value
if advanced > 0 then
  value = redis.call('HINCRBY', KEYS[1], 'v', change)
  redis.call('HINCRBY', KEYS[1], 'ver', advanced)
  for field, offset in pairs(newest) do
    redis.call('HSET', KEYS[1], field, offset)
  end
else
  value = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
end
return {1, value, applied, replayed, duplicates}
