-- Add tokens, renew or release a lease, or replay what was decided while the store was unreachable.
-- ARGV: 1 request id, 2 lease id ('' = none), 3 tokens, 4 executions to add (replay), 5 release (0/1),
--       6 uncount (1 = the lease's reserve was never used by the client: give its execution back),
--       7 lease_ms, 8 key ttl_ms, 9 reply ttl_ms
-- Reply: {'ok', executions, tokens, reserved, elapsed_ms, active}
local cached = redis.call('GET', KEYS[3])
if cached then return cjson.decode(cached) end

local tokens = int_arg(3, 'tokens')
local add_executions = int_arg(4, 'executions')
local release = int_arg(5, 'release')
local uncount = int_arg(6, 'uncount')
local lease_ms = int_arg(7, 'lease_ms')
local ttl_ms = int_arg(8, 'ttl_ms')
local reply_ttl_ms = int_arg(9, 'reply_ttl_ms')
if lease_ms <= 0 or ttl_ms <= 0 or reply_ttl_ms <= 0 then
  error('subagent_telemetry: malformed settle arguments')
end

local now = now_ms()
local lease = ARGV[2]
local field = 'est:' .. lease
local m = redis.call('HMGET', KEYS[1], 'executions', 'tokens', 'reserved', 'started_ms', field)
local executions, total, reserved = tonumber(m[1]) or 0, tonumber(m[2]) or 0, tonumber(m[3]) or 0
local started = tonumber(m[4]) or now
local estimate = tonumber(m[5])
local fields = {}
if lease ~= '' and estimate then
  local held = tonumber(redis.call('ZSCORE', KEYS[2], lease))
  if held and held > now then
    if release == 1 then
      reserved = reserved - estimate
      redis.call('HDEL', KEYS[1], field)
      redis.call('ZREM', KEYS[2], lease)
      if uncount == 1 then executions = executions - 1 end
    else
      local used = math.min(estimate, tokens)
      reserved = reserved - used
      fields = {field, str(estimate - used)}
      redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, lease)
      redis.call('PEXPIRE', KEYS[2], ttl_ms)
    end
  end
end
local given_back = expire_leases(now)
reserved = reserved - given_back
executions = executions + add_executions
total = total + tokens
fields[#fields + 1] = 'executions'
fields[#fields + 1] = str(executions)
fields[#fields + 1] = 'tokens'
fields[#fields + 1] = str(total)
fields[#fields + 1] = 'reserved'
fields[#fields + 1] = str(reserved)
fields[#fields + 1] = 'started_ms'
fields[#fields + 1] = str(started)
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
local active = redis.call('ZCARD', KEYS[2])
return remember({'ok', executions, total, reserved, now - started, active}, reply_ttl_ms)
