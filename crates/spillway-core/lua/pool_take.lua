-- Hands one ready copy of a template to exactly one caller.
-- KEYS[1] the pool's list of copy ids (pushed left, taken right: oldest first)
-- KEYS[2] the pool's records (copy id -> JSON record); a copy is in the pool iff it has one
-- KEYS[3] copies handed out whose database row may still say ready
-- Returns the record, or false when the pool is empty. An id without a record (already
-- removed by the sweeper) is skipped.
while true do
  local id = redis.call('RPOP', KEYS[1])
  if not id then
    return false
  end
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('HDEL', KEYS[2], id)
    redis.call('SADD', KEYS[3], id)
    return record
  end
end
