-- Puts a finished copy into its template's pool, unless it is there already or was handed out
-- (so a repeated or late push never hands one copy to two callers).
-- KEYS[1] list of copy ids, KEYS[2] records, KEYS[3] handed-out ids
-- ARGV[1] copy id, ARGV[2] the JSON record
-- Returns 1 when pushed, 0 when not.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
