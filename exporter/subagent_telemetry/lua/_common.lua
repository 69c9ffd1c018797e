-- Shared prelude of every subagent-telemetry script (prepended by _redis_store.py; not run alone).
-- KEYS[1] meta hash (counters, pinned limits, and one `est:<lease id>` field per open lease),
-- KEYS[2] lease zset (lease id -> expiry ms), KEYS[3] the request's reply key (idempotency).
-- All keys share the session's hash tag. Written for few redis.call()s: each one costs server CPU.
local function int_arg(index, name)
  local value = tonumber(ARGV[index])
  if value == nil or value < 0 or value ~= math.floor(value) then
    error('subagent_telemetry: ' .. name .. ' must be an integer >= 0, got ' .. tostring(ARGV[index]))
  end
  return value
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Leases past their expiry leave the zset (their slot comes back); returns the sum of their unused
-- estimates (the caller gives it back) and how many expired.
local function expire_leases(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  local n = #expired
  if n == 0 then return 0, 0 end
  local fields = {}
  for i, id in ipairs(expired) do fields[i] = 'est:' .. id end
  local estimates = redis.call('HMGET', KEYS[1], unpack(fields))
  local given_back = 0
  for _, est in ipairs(estimates) do given_back = given_back + (tonumber(est) or 0) end
  redis.call('HDEL', KEYS[1], unpack(fields))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[1], 'expired_leases', n)
  return given_back, n
end

-- Integers as strings: Lua prints large or negative-zero numbers in forms Redis does not parse.
local function str(n)
  return string.format('%d', n)
end

local function remember(reply, reply_ttl_ms)
  redis.call('SET', KEYS[3], cjson.encode(reply), 'PX', reply_ttl_ms)
  return reply
end
