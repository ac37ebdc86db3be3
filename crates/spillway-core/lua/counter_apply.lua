-- Applies one consumer batch's events of some counters, each event exactly once, in one call:
-- the store packs many counters into a call (on a Redis Cluster only counters of one slot),
-- so a batch costs a few calls, not one per counter.
-- KEYS, three per counter: the counter hash {c:<namespace>:<entity_id>} (fields: 'v' value,
--   'ver' version, 'o:' .. partition = the last applied offset of that partition), the
--   distinct member set {c:<namespace>:<entity_id>}:m, and the counter's recent event ids
--   {c:<namespace>:<entity_id>}:e (a sorted set scored by the time, in ms, the id was
--   recorded; trimmed to the window whenever ids are checked, and without a TTL, so
--   `maxmemory-policy volatile-ttl` never evicts it)
-- ARGV[1] now (unix ms), then per counter, in the order of KEYS: its dedupe window (ms; 0 keeps
-- no ids), its number of entries, and 7 values per entry
-- (crates/spillway-core/src/counters/combine.rs): partition, first offset, last offset,
-- operation (add | remove | incr), member or delta, event id ('' when none is recorded), how
-- many events the entry stands for.
-- Per counter: an entry at or below its partition's applied offset (as it was before this
-- call) is a replay of records applied before and changes nothing; an entry with an id the
-- window holds (or an earlier entry of this call recorded) is a re-sent event and only moves
-- the offset; any other entry is applied and its id recorded. A combined sum that straddles
-- the applied offset cannot be split here: then nothing of that counter changes and the
-- caller sends its events one by one.
-- Returns 5 values per counter, in order: status, value, applied, replayed, duplicates;
-- status 0 = the counter is not loaded (load it, then call again), 1 = done, 2 = send the
-- events one by one; nothing of a counter changed unless its status is 1.
local now = tonumber(ARGV[1])
-- Members per ZMSCORE / ZADD, well under Lua's limit on unpacked values.
local CHUNK = 500

-- The ids of `ids` that the sorted set holds, as a set.
local function held_ids(ids_key, ids)
  local held = {}
  for start = 1, #ids, CHUNK do
    local stop = math.min(start + CHUNK - 1, #ids)
    local scores = redis.call('ZMSCORE', ids_key, unpack(ids, start, stop))
    for j = start, stop do
      if scores[j - start + 1] then
        held[ids[j]] = true
      end
    end
  end
  return held
end

-- Records `ids` at `now`.
local function record_ids(ids_key, ids)
  for start = 1, #ids, CHUNK do
    local args = {}
    for j = start, math.min(start + CHUNK - 1, #ids) do
      args[#args + 1] = now
      args[#args + 1] = ids[j]
    end
    redis.call('ZADD', ids_key, unpack(args))
  end
end

-- Applies the entries ARGV[first .. last] (7 values each) to one counter.
local function apply_counter(hash, members, ids_key, window, first, last)
  local fields = { 'v', 'ver' }
  local position = {}
  for i = first, last, 7 do
    local field = 'o:' .. ARGV[i]
    if position[field] == nil then
      fields[#fields + 1] = field
      position[field] = #fields
    end
  end
  local stored = redis.call('HMGET', hash, unpack(fields))
  if not stored[1] then
    return 0, 0, 0, 0, 0
  end
  local applied_before = {}
  for field, index in pairs(position) do
    applied_before[field] = tonumber(stored[index] or '-1')
  end
  local to_check = {}
  for i = first, last, 7 do
    local before = applied_before['o:' .. ARGV[i]]
    local last_offset = tonumber(ARGV[i + 2])
    if tonumber(ARGV[i + 1]) <= before and last_offset > before then
      return 2, 0, 0, 0, 0
    end
    if window > 0 and last_offset > before and ARGV[i + 5] ~= '' then
      to_check[#to_check + 1] = ARGV[i + 5]
    end
  end
  local held = {}
  if #to_check > 0 then
    redis.call('ZREMRANGEBYSCORE', ids_key, '-inf', '(' .. (now - window))
    held = held_ids(ids_key, to_check)
  end
  local new_ids = {}
  local newest = {}
  local change = 0
  local applied, replayed, duplicates, advanced = 0, 0, 0, 0
  for i = first, last, 7 do
    local field = 'o:' .. ARGV[i]
    local last_offset = tonumber(ARGV[i + 2])
    local count = tonumber(ARGV[i + 6])
    if last_offset <= applied_before[field] then
      replayed = replayed + count
    else
      if last_offset > (newest[field] or -1) then
        newest[field] = last_offset
      end
      advanced = advanced + count
      local event_id = ARGV[i + 5]
      local keep_id = window > 0 and event_id ~= ''
      if keep_id and held[event_id] then
        duplicates = duplicates + count
      else
        if keep_id then
          held[event_id] = true
          new_ids[#new_ids + 1] = event_id
        end
        -- `0 - n`, not `-n`: Lua's -0 would reach HINCRBY as "-0", which Redis refuses.
        local operation = ARGV[i + 3]
        if operation == 'add' then
          change = change + redis.call('SADD', members, ARGV[i + 4])
        elseif operation == 'remove' then
          change = change - redis.call('SREM', members, ARGV[i + 4])
        else
          change = change + tonumber(ARGV[i + 4])
        end
        applied = applied + count
      end
    end
  end
  record_ids(ids_key, new_ids)
  if advanced == 0 then
    return 1, tonumber(stored[1]), applied, replayed, duplicates
  end
  local value = redis.call('HINCRBY', hash, 'v', change)
  local update = { 'ver', tonumber(stored[2] or '0') + advanced }
  for field, offset in pairs(newest) do
    update[#update + 1] = field
    update[#update + 1] = offset
  end
  redis.call('HSET', hash, unpack(update))
  return 1, value, applied, replayed, duplicates
end

local replies = {}
local arg = 2
for k = 1, #KEYS, 3 do
  local window = tonumber(ARGV[arg])
  local first = arg + 2
  local last = first + 7 * tonumber(ARGV[arg + 1]) - 1
  local status, value, applied, replayed, duplicates =
    apply_counter(KEYS[k], KEYS[k + 1], KEYS[k + 2], window, first, last)
  replies[#replies + 1] = status
  replies[#replies + 1] = value
  replies[#replies + 1] = applied
  replies[#replies + 1] = replayed
  replies[#replies + 1] = duplicates
  arg = last + 1
end
return replies
