-- Admit one execution: check every limit, count it, and (take_lease = 1) hold a leased concurrency slot
-- with its token estimate. One atomic step for the whole fleet.
-- ARGV: 1 request id (= lease id),
--       2 'executions|tokens|time_ms|concurrency lease_ms estimated_tokens take_lease ttl_ms reply_ttl_ms'
--         (the limits as pinned, '' = unlimited, then integers; one argument: cheaper to send and parse)
--       3 'cost_limit estimated_cost' (nano-units, '' = no money budget; optional: absent = neither)
-- Reply: 'code|executions|tokens|reserved|elapsed_ms|active[|pinned limits]|cost|cost_reserved'; code is
-- 'ok', 'executions', 'tokens', 'time', 'concurrency', 'cost' (refused) or 'limits' / 'cost_limits'
-- (this process's limits differ; then the pinned limits follow, and no cost fields).
local cached = cached_reply()
if cached then return cached end

local pinned, l1, l2, l3, l4, lease_ms, estimate, take_lease, ttl_ms, reply_ttl_ms = string.match(
  ARGV[2], '^((%d*)|(%d*)|(%d*)|(%d*)) (%d+) (%d+) ([01]) (%d+) (%d+)$')
if not pinned or ARGV[1] == '' then
  error('subagent_telemetry: reserve arguments must be a request id and "executions|tokens|time_ms|'
    .. 'concurrency lease_ms estimated_tokens take_lease ttl_ms reply_ttl_ms" (integers >= 0, estimated '
    .. 'tokens included), got ' .. tostring(ARGV[2]))
end
local limits = {tonumber(l1), tonumber(l2), tonumber(l3), tonumber(l4)}
lease_ms, estimate, ttl_ms, reply_ttl_ms = tonumber(lease_ms), tonumber(estimate), tonumber(ttl_ms), tonumber(reply_ttl_ms)
if limits[1] == 0 or limits[2] == 0 or limits[3] == 0 or limits[4] == 0
    or lease_ms <= 0 or ttl_ms <= 0 or reply_ttl_ms <= 0 then
  error('subagent_telemetry: limits and durations must be > 0, got ' .. ARGV[2])
end
take_lease = take_lease == '1'

local now = now_ms()
local fields = {}
local m = redis.call('HMGET', KEYS[1], 'limits', 'executions', 'tokens', 'reserved', 'started_ms', unpack(META))
if m[1] and m[1] ~= pinned then
  return 'limits|0|0|0|0|0|' .. m[1]
end
local climit_raw, cestimate = string.match(ARGV[3] or ' 0', '^(%d*) (%d+)$')
if not climit_raw or climit_raw == '0' then
  error('subagent_telemetry: reserve money argument must be "cost_limit estimated_cost" (nano-units, '
    .. 'limit > 0 or empty), got ' .. tostring(ARGV[3]))
end
cestimate = tonumber(cestimate)
local cpin = climit_raw == '' and '0' or climit_raw  -- Pinned as '0' when there is no money budget.
local cost, creserved, cpinned = read_cost('limits')
if cpinned and cpinned ~= cpin then
  return 'cost_limits|0|0|0|0|0|' .. cpinned
end
local climit = tonumber(climit_raw)
-- The first admission fixes the keys' TTL with the limits; later ones (and settle, replay) keep it.
if not m[9] then put(fields, 'ttl_ms', str(ttl_ms)) end
ttl_ms = session_ttl(m[9], ttl_ms)
local executions, tokens, reserved = tonumber(m[2]) or 0, tonumber(m[3]) or 0, tonumber(m[4]) or 0
local started = tonumber(m[5])
if not m[1] then put(fields, 'limits', pinned) end
if not cpinned then put(fields, 'cost_limit', cpin) end
if not started then
  started = now
  put(fields, 'started_ms', str(now))
end
local given_back, next_expiry, given_back_cost = expire_leases(now, m[6], fields, ttl_ms)
reserved = reserved - given_back
creserved = creserved - given_back_cost
local active = redis.call('ZCARD', KEYS[2])

local code = 'ok'
if limits[1] and executions >= limits[1] then
  code = 'executions'
elseif limits[2] and (tokens + reserved >= limits[2] or (take_lease and tokens + reserved + estimate > limits[2])) then
  code = 'tokens'
elseif limits[3] and now - started >= limits[3] then
  code = 'time'
elseif take_lease and limits[4] and active >= limits[4] then
  code = 'concurrency'
elseif climit and (cost + creserved >= climit or (take_lease and cost + creserved + cestimate > climit)) then
  code = 'cost'
end

local new_zset = false
if code == 'ok' then
  executions = executions + 1
  put(fields, 'executions', str(executions))
  if take_lease then
    reserved = reserved + estimate
    put(fields, 'est:' .. ARGV[1], str(estimate))
    if cestimate > 0 then
      creserved = creserved + cestimate
      put(fields, 'cest:' .. ARGV[1], str(cestimate))
    end
    local expiry = now + lease_ms
    redis.call('ZADD', KEYS[2], expiry, ARGV[1])
    new_zset = active == 0
    if next_expiry == nil or next_expiry < 0 or expiry < next_expiry then
      put(fields, 'next_expiry_ms', str(expiry))
    end
    active = active + 1
  end
end
if given_back ~= 0 or (code == 'ok' and take_lease) then put(fields, 'reserved', str(reserved)) end
if given_back_cost ~= 0 or (code == 'ok' and take_lease and cestimate > 0) then
  put(fields, 'cost_reserved', str(creserved))
end
local reply = table.concat({code, str(executions), str(tokens), str(reserved), str(now - started), str(active)}, '|')
reply = reply .. '|' .. str(cost) .. '|' .. str(creserved)
return finish(reply, fields, now, m[7], m[8], ttl_ms, reply_ttl_ms, new_zset)
