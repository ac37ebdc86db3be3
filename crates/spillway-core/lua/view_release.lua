-- Releases a view key's reload lock if the caller still holds it (a reload that failed).
-- KEYS[1] the lock; ARGV[1] the caller's token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
