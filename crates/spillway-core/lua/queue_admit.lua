-- A waiting room's one step: drop expired sessions and silent waiters, apply the caller's
-- operation, admit from the head of the line up to the capacity and the admission rate,
-- and describe the caller's token. Run lazily on every join, poll and leave: no ticker, no
-- lock. All keys share the queue's hash tag {q:<queue>}.
-- KEYS[1] meta (hash: epoch, hold_until, seq)
-- KEYS[2] waiting (zset token -> arrival sequence)
-- KEYS[3] active (zset token -> session expiry, ms)
-- KEYS[4] heartbeats (zset token -> last poll of a waiter, ms)
-- KEYS[5] owners (hash token -> member)
-- KEYS[6] tokens (hash member -> token)
-- KEYS[7] admissions (zset token -> admission time, ms; the last minute)
-- ARGV[1] now (ms), ARGV[2] capacity, ARGV[3] admit per minute, ARGV[4] session ttl (ms),
-- ARGV[5] heartbeat timeout (ms), ARGV[6] the epoch the caller knows ('' if none),
-- ARGV[7] new epoch (used when the queue's state has to be created),
-- ARGV[8] operation (join | poll | leave), ARGV[9] member, ARGV[10] token (join: a new one)
-- Returns {{outcome, epoch, status, position, expiry, admitted_last_minute, hold_until, token},
-- {waiting, active}} (the token is the member's existing one when it joins twice; the second
-- part is the room's counts after the step, for the gateway's gauges):
-- outcome 'ok', 'unknown' (no such token), 'forbidden' (another member's), 'left',
-- 'holding' (the state was lost; nobody is admitted until hold_until).
local now = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local per_minute = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local heartbeat_timeout = tonumber(ARGV[5])
local operation, member, token = ARGV[8], ARGV[9], ARGV[10]

-- Every answer comes with the room's waiting and active counts.
local function reply(answer)
  return {answer, {redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3])}}
end

-- The epoch: a queue whose state vanished (Redis restarted empty) while a gateway knew it
-- holds everyone back until every session it may have admitted has expired.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[7]
  local hold_until = 0
  if ARGV[6] ~= '' then
    hold_until = now + ttl
  end
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'hold_until', hold_until, 'seq', 0)
end
local hold_until = tonumber(redis.call('HGET', KEYS[1], 'hold_until') or '0')
if hold_until > now then
  return reply({'holding', epoch, '', 0, 0, 0, hold_until, token})
end

local function forget(id)
  local owner = redis.call('HGET', KEYS[5], id)
  if owner then
    redis.call('HDEL', KEYS[6], owner)
  end
  redis.call('HDEL', KEYS[5], id)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end

-- Expired sessions and silent waiters leave (a bounded number per step).
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)) do
  forget(id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - heartbeat_timeout, 'LIMIT', 0, 1000)) do
  forget(id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - 60000)

-- The caller's operation.
if operation == 'join' then
  local existing = redis.call('HGET', KEYS[6], member)
  if existing then
    token = existing
  else
    local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    redis.call('ZADD', KEYS[2], seq, token)
    redis.call('ZADD', KEYS[4], now, token)
    redis.call('HSET', KEYS[5], token, member)
    redis.call('HSET', KEYS[6], member, token)
  end
else
  local owner = redis.call('HGET', KEYS[5], token)
  if not owner then
    return reply({'unknown', epoch, '', 0, 0, 0, 0, token})
  end
  if owner ~= member then
    return reply({'forbidden', epoch, '', 0, 0, 0, 0, token})
  end
  if operation == 'leave' then
    forget(token)
  end
end
if redis.call('ZSCORE', KEYS[2], token) then
  redis.call('ZADD', KEYS[4], now, token)
end

-- Admit from the head, up to the free capacity and what the rate leaves this minute.
local free = capacity - redis.call('ZCARD', KEYS[3])
local rate_room = per_minute - redis.call('ZCARD', KEYS[7])
local admit = math.min(free, rate_room)
if admit > 0 then
  local head = redis.call('ZPOPMIN', KEYS[2], admit)
  for i = 1, #head, 2 do
    local id = head[i]
    redis.call('ZADD', KEYS[3], now + ttl, id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZADD', KEYS[7], now, id)
  end
end

local admitted = redis.call('ZCARD', KEYS[7])
if operation == 'leave' then
  return reply({'left', epoch, '', 0, 0, admitted, 0, token})
end
local expiry = redis.call('ZSCORE', KEYS[3], token)
if expiry then
  return reply({'ok', epoch, 'active', 0, tonumber(expiry), admitted, 0, token})
end
local rank = redis.call('ZRANK', KEYS[2], token)
if rank then
  return reply({'ok', epoch, 'waiting', rank + 1, 0, admitted, 0, token})
end
return reply({'unknown', epoch, '', 0, 0, admitted, 0, token})
