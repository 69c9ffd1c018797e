-- Admit one execution: check every limit, count it, and (take_lease = 1) hold a leased concurrency slot
-- with its token estimate. One atomic step for the whole fleet.
-- ARGV: 1 request id (= lease id), 2 limits "executions|tokens|time_ms|concurrency" ('' = unlimited),
--       3 lease_ms, 4 estimated tokens, 5 take_lease (0/1), 6 key ttl_ms, 7 reply ttl_ms
-- Reply: {code, executions, tokens, reserved, elapsed_ms, active[, pinned limits]}; code is 'ok',
-- 'executions', 'tokens', 'time', 'concurrency' (refused) or 'limits' (this process's limits differ).
local cached = redis.call('GET', KEYS[3])
if cached then return cjson.decode(cached) end

local lease_ms = int_arg(3, 'lease_ms')
local estimate = int_arg(4, 'estimated tokens')
local take_lease = int_arg(5, 'take_lease')
local ttl_ms = int_arg(6, 'ttl_ms')
local reply_ttl_ms = int_arg(7, 'reply_ttl_ms')
local limits = {}
local i = 0
for part in string.gmatch(ARGV[2] .. '|', '([^|]*)|') do
  i = i + 1
  if part ~= '' then
    local value = tonumber(part)
    if value == nil or value <= 0 or value ~= math.floor(value) then
      error('subagent_telemetry: limit ' .. i .. ' must be an integer > 0 or empty, got ' .. part)
    end
    limits[i] = value
  end
end
if i ~= 4 or lease_ms <= 0 or ttl_ms <= 0 or reply_ttl_ms <= 0 then
  error('subagent_telemetry: malformed reserve arguments')
end

local now = now_ms()
local m = redis.call('HMGET', KEYS[1], 'limits', 'executions', 'tokens', 'reserved', 'started_ms')
if m[1] and m[1] ~= ARGV[2] then
  return {'limits', 0, 0, 0, 0, 0, m[1]}
end
local executions, tokens, reserved = tonumber(m[2]) or 0, tonumber(m[3]) or 0, tonumber(m[4]) or 0
local started = tonumber(m[5]) or now
local given_back = expire_leases(now)
reserved = reserved - given_back
local active = redis.call('ZCARD', KEYS[2])

local code = 'ok'
if limits[1] and executions >= limits[1] then
  code = 'executions'
elseif limits[2] and (tokens + reserved >= limits[2] or (take_lease == 1 and tokens + reserved + estimate > limits[2])) then
  code = 'tokens'
elseif limits[3] and now - started >= limits[3] then
  code = 'time'
elseif take_lease == 1 and limits[4] and active >= limits[4] then
  code = 'concurrency'
end

local fields = {'limits', ARGV[2], 'started_ms', str(started), 'reserved', str(reserved)}
if code == 'ok' then
  executions = executions + 1
  fields[#fields + 1] = 'executions'
  fields[#fields + 1] = str(executions)
  if take_lease == 1 then
    reserved = reserved + estimate
    fields[6] = str(reserved)
    fields[#fields + 1] = 'est:' .. ARGV[1]
    fields[#fields + 1] = str(estimate)
    redis.call('ZADD', KEYS[2], now + lease_ms, ARGV[1])
    redis.call('PEXPIRE', KEYS[2], ttl_ms)
    active = active + 1
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return remember({code, executions, tokens, reserved, now - started, active}, reply_ttl_ms)
