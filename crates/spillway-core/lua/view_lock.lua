-- Takes the reload lock of one view key, so one caller (of any gateway) reloads it, unless
-- the key is fresh already (someone stored it since the caller looked): checked and taken
-- at once, so two callers never both reload one expiry.
-- KEYS[1] the lock, KEYS[2] the key's generation (bumped by every commit that changes it),
-- KEYS[3] the value ('<fresh until, unix ms>:<JSON>')
-- ARGV[1] the caller's token, ARGV[2] the lock's lifetime in ms (the reload timeout),
-- ARGV[3] now (unix ms)
-- Returns {'fresh', '', value}, {'taken', generation, ''} or {'held', '', ''}. A reload
-- stores its result only if the generation is still the one it read here, so a reload that
-- raced a commit never writes its older result over the refreshed one.
local value = redis.call('GET', KEYS[3])
if value then
  local separator = string.find(value, ':', 1, true)
  if separator and tonumber(string.sub(value, 1, separator - 1)) > tonumber(ARGV[3]) then
    return {'fresh', '', value}
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'taken', redis.call('GET', KEYS[2]) or '', ''}
end
return {'held', '', ''}
