-- Shared prelude of every subagent-telemetry script (prepended by _redis_scripts.py; not run alone).
-- KEYS[1] meta hash, KEYS[2] lease zset (id -> expiry ms), KEYS[3] lease estimates hash (id -> tokens),
-- KEYS[4] the request's reply key (idempotency). All four share the session's hash tag.
local function int_arg(index, name)
  local value = tonumber(ARGV[index])
  if value == nil or value < 0 or value ~= math.floor(value) then
    error('subagent_telemetry: ' .. name .. ' must be an integer >= 0, got ' .. tostring(ARGV[index]))
  end
  return value
end

-- HINCRBY that skips zero: Lua formats -0 as "-0", which Redis rejects as an integer.
local function incr(field, by)
  if by ~= 0 then redis.call('HINCRBY', KEYS[1], field, by) end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Leases past their expiry give back their unused token estimate (and, by leaving the zset, their slot).
local function expire_leases(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  if #expired == 0 then return end
  local given_back = 0
  for _, id in ipairs(expired) do
    given_back = given_back + (tonumber(redis.call('HGET', KEYS[3], id)) or 0)
    redis.call('HDEL', KEYS[3], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  incr('reserved', -given_back)
  incr('expired_leases', #expired)
end

local function usage_reply(code, now)
  local m = redis.call('HMGET', KEYS[1], 'executions', 'tokens', 'reserved', 'started_ms')
  local started = tonumber(m[4])
  local elapsed = 0
  if started then elapsed = math.max(now - started, 0) end
  local active = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
  return {code, tonumber(m[1]) or 0, tonumber(m[2]) or 0, tonumber(m[3]) or 0, elapsed, active}
end

local function touch(ttl_ms)
  for i = 1, 3 do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ttl_ms) end
  end
end

local function remember(reply, reply_ttl_ms)
  redis.call('SET', KEYS[4], cjson.encode(reply), 'PX', reply_ttl_ms)
  return reply
end
