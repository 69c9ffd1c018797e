-- Add tokens, renew or release a lease, or replay what was decided while the store was unreachable.
-- ARGV: 1 request id, 2 lease id ('' = none), 3 tokens, 4 executions to add (replay), 5 release (0/1),
--       6 uncount (1 = the lease's reserve was never used by the client: give its execution back),
--       7 lease_ms, 8 key ttl_ms, 9 reply ttl_ms
-- Reply: {'ok', executions, tokens, reserved, elapsed_ms, active}
local cached = redis.call('GET', KEYS[4])
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
if lease ~= '' then
  local held = redis.call('ZSCORE', KEYS[2], lease)
  local estimate = tonumber(redis.call('HGET', KEYS[3], lease))
  if held and tonumber(held) > now and estimate then
    local used = math.min(estimate, tokens)
    if release == 1 then
      incr('reserved', -estimate)
      redis.call('HDEL', KEYS[3], lease)
      redis.call('ZREM', KEYS[2], lease)
      if uncount == 1 then incr('executions', -1) end
    else
      incr('reserved', -used)
      redis.call('HSET', KEYS[3], lease, estimate - used)
      redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, lease)
    end
  end
end
expire_leases(now)
incr('tokens', tokens)
incr('executions', add_executions)
if tokens > 0 or add_executions > 0 then redis.call('HSETNX', KEYS[1], 'started_ms', now) end
touch(ttl_ms)
return remember(usage_reply('ok', now), reply_ttl_ms)
