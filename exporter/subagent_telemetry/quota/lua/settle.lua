-- Add tokens (and money), renew or release a lease.
-- ARGV: 1 request id, 2 lease id ('' = none),
--       3 'tokens release lease_ms ttl_ms reply_ttl_ms' (integers >= 0; ttl_ms is used until a reserve
--         has fixed the session's)
--       4 money spent, nano-units (optional: absent = 0); settled against the lease's `cest:` estimate
-- Reply: 'ok|executions|tokens|reserved|elapsed_ms|active|cost|cost_reserved'
local cached = cached_reply()
if cached then return cached end

local tokens, release, lease_ms, ttl_ms, reply_ttl_ms = string.match(
  ARGV[3], '^(%d+) ([01]) (%d+) (%d+) (%d+)$')
if not tokens or ARGV[1] == '' then
  error('subagent_telemetry: settle arguments must be a request id, a lease id and "tokens release '
    .. 'lease_ms ttl_ms reply_ttl_ms" (integers >= 0), got ' .. tostring(ARGV[3]))
end
tokens = tonumber(tokens)
lease_ms, ttl_ms, reply_ttl_ms = tonumber(lease_ms), tonumber(ttl_ms), tonumber(reply_ttl_ms)
if lease_ms <= 0 or ttl_ms <= 0 or reply_ttl_ms <= 0 then
  error('subagent_telemetry: durations must be > 0, got ' .. ARGV[3])
end
local spent = string.match(ARGV[4] or '0', '^(%d+)$')
if not spent then
  error('subagent_telemetry: settle money argument must be nano-units (an integer >= 0), got '
    .. tostring(ARGV[4]))
end
spent = tonumber(spent)

local now = now_ms()
local lease = ARGV[2]
local field = 'est:' .. lease
local m = redis.call('HMGET', KEYS[1], 'executions', 'tokens', 'reserved', 'started_ms', field, unpack(META))
local cost, creserved, _, cestimate = read_cost('c' .. field)
cestimate = tonumber(cestimate)
local cost_before, creserved_before = cost, creserved
local executions, total, reserved = tonumber(m[1]) or 0, tonumber(m[2]) or 0, tonumber(m[3]) or 0
local started = tonumber(m[4])
local estimate = tonumber(m[5])
ttl_ms = session_ttl(m[9], ttl_ms)
local fields = {}
if not started then
  started = now
  put(fields, 'started_ms', str(now))
end
local changed = false
if lease ~= '' and estimate then
  local held = tonumber(redis.call('ZSCORE', KEYS[2], lease))
  if held and held > now then
    changed = true
    if release == '1' then
      reserved = reserved - estimate
      redis.call('HDEL', KEYS[1], field)
      redis.call('ZREM', KEYS[2], lease)
      if cestimate then
        creserved = creserved - cestimate
        redis.call('HDEL', KEYS[1], 'c' .. field)
      end
    else
      local used = math.min(estimate, tokens)
      reserved = reserved - used
      put(fields, field, str(estimate - used))
      if cestimate then
        local cused = math.min(cestimate, spent)
        creserved = creserved - cused
        put(fields, 'c' .. field, str(cestimate - cused))
      end
      -- A later expiry: next_expiry_ms stays a valid lower bound.
      redis.call('ZADD', KEYS[2], 'XX', now + lease_ms, lease)
    end
  end
end
local given_back, _, given_back_cost = expire_leases(now, m[6], fields, ttl_ms)
reserved = reserved - given_back
creserved = creserved - given_back_cost
cost = cost + spent
if cost ~= cost_before then put(fields, 'cost', str(cost)) end
if creserved ~= creserved_before then put(fields, 'cost_reserved', str(creserved)) end
total = total + tokens
if tokens ~= 0 then put(fields, 'tokens', str(total)) end
if changed or given_back ~= 0 then put(fields, 'reserved', str(reserved)) end
local active = redis.call('ZCARD', KEYS[2])
local reply = table.concat({'ok', str(executions), str(total), str(reserved), str(now - started), str(active)}, '|')
reply = reply .. '|' .. str(cost) .. '|' .. str(creserved)
return finish(reply, fields, now, m[7], m[8], ttl_ms, reply_ttl_ms, false)
