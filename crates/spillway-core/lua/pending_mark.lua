-- Marks a write as pending once the broker acknowledged it, unless the marker holds a newer
-- write of the same id (a later offset of the same partition): the marker always shows the
-- newest acknowledged write, whatever order the gateways get here in.
-- KEYS[1] the marker {w:<sink>:<id>}, a hash: p partition, o offset, e event id, r the row
-- ARGV[1] partition, ARGV[2] offset, ARGV[3] event id, ARGV[4] the row (JSON),
-- ARGV[5] how long the marker may live (ms): then reads fall back to the database,
-- ARGV[6] '1' when the sink keeps the first write of an id (`on_conflict = "ignore"`): then
-- a marker already there is never replaced
-- Returns 1 when set, 0 when a newer (or, first-wins, an earlier) write holds the marker.
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  redis.call('DEL', KEYS[1]) -- a marker of spillway before markers were hashes
end
if ARGV[6] == '1' and redis.call('HEXISTS', KEYS[1], 'r') == 1 then
  return 0
end
if redis.call('HGET', KEYS[1], 'p') == ARGV[1] then
  -- A newer write holds the marker, or a commit holding this write (or a newer one) came
  -- first and left its tombstone (`c`).
  local newest = math.max(tonumber(redis.call('HGET', KEYS[1], 'o') or '-1'),
    tonumber(redis.call('HGET', KEYS[1], 'c') or '-1'))
  if newest >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'p', ARGV[1], 'o', ARGV[2], 'e', ARGV[3], 'r', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
