-- Apply what one process decided while the store was unreachable, in one step (its backlog).
-- ARGV: 1 request id of this batch,
--       2 'client seq executions tokens cost lease_ms ttl_ms reply_ttl_ms': the process's id, the batch's
--         sequence number (a process replays its batches in order: a batch whose seq is not above the
--         last one applied for that client was applied already, however late it comes back), then the
--         executions, tokens and money (nano-units) decided locally (certainly never sent), and settings,
--       3.. items, each one of
--         'r <lease>'                  release a lease (idempotent),
--         'v <lease>'                  void an admission whose reply was lost: if the store counted it
--                                      (lease live or expired, or its reply says ok), give the execution,
--                                      slot and estimate back; a late copy of it is answered 'void',
--         't <request> <lease> <n> <c>' n tokens and c nano-units sent under <request> whose reply
--                                      was lost: added unless that request id is still remembered.
-- Reply: 'ok|executions|tokens|reserved|elapsed_ms|active|cost|cost_reserved'
local cached = cached_reply()
if cached then return cached end

local client, seq, add_executions, add_tokens, add_cost, lease_ms, ttl_ms, reply_ttl_ms = string.match(
  ARGV[2], '^(%x+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)$')
if not client or ARGV[1] == '' then
  error('subagent_telemetry: replay arguments must be a request id, "client seq executions tokens '
    .. 'cost lease_ms ttl_ms reply_ttl_ms" and items, got ' .. tostring(ARGV[2]))
end
seq, add_executions, add_tokens, add_cost = tonumber(seq), tonumber(add_executions), tonumber(add_tokens), tonumber(add_cost)
lease_ms, ttl_ms, reply_ttl_ms = tonumber(lease_ms), tonumber(ttl_ms), tonumber(reply_ttl_ms)
for i = 3, #ARGV do
  local kind = string.sub(ARGV[i], 1, 2)
  if not (kind == 'r ' or kind == 'v ' or (kind == 't ' and string.match(ARGV[i], '^t %x+ %S* %d+ %d+$'))) then
    error('subagent_telemetry: replay item ' .. (i - 2) .. ' is malformed: ' .. ARGV[i])
  end
end

local now = now_ms()
local seq_field = 'seq:' .. client
local m = redis.call('HMGET', KEYS[1], 'executions', 'tokens', 'reserved', 'started_ms', seq_field, unpack(META))
local executions, total, reserved = tonumber(m[1]) or 0, tonumber(m[2]) or 0, tonumber(m[3]) or 0
local cost, creserved = read_cost('cost_limit')
local started = tonumber(m[4])
ttl_ms = session_ttl(m[9], ttl_ms)
local fields = {}
if not started then
  started = now
  put(fields, 'started_ms', str(now))
end

local function remembered(id)
  return redis.call('HGET', KEYS[3], id) or redis.call('HGET', KEYS[4], id)
end

-- Gives a live lease back (slot and unused estimate); true when it was live.
local function drop_lease(lease)
  if not redis.call('ZSCORE', KEYS[2], lease) then return false end
  local field = 'est:' .. lease
  local held = redis.call('HMGET', KEYS[1], field, 'c' .. field)
  reserved = reserved - (tonumber(held[1]) or 0)
  creserved = creserved - (tonumber(held[2]) or 0)
  redis.call('HDEL', KEYS[1], field, 'c' .. field)
  redis.call('ZREM', KEYS[2], lease)
  return true
end

if seq > (tonumber(m[5]) or 0) then
  put(fields, seq_field, str(seq))
  for i = 3, #ARGV do
    local item = ARGV[i]
    local kind = string.sub(item, 1, 1)
    if kind == 'r' then
      drop_lease(string.sub(item, 3))
    elseif kind == 'v' then
      local lease = string.sub(item, 3)
      local counted = drop_lease(lease)
      if not counted and redis.call('ZREM', KEYS[5], lease) == 1 then counted = true end
      if not counted then
        local reply = remembered(lease)
        counted = reply ~= false and string.sub(reply, 1, 3) == 'ok|'
      end
      if counted then executions = executions - 1 end
      redis.call('HSET', KEYS[3], lease, 'void|0|0|0|0|0')
    else
      local request, lease, n, c = string.match(item, '^t (%x+) (%S*) (%d+) (%d+)$')
      if not remembered(request) then
        n, c = tonumber(n), tonumber(c)
        total = total + n
        cost = cost + c
        local field = 'est:' .. lease
        local held = redis.call('HMGET', KEYS[1], field, 'c' .. field)
        local estimate, cestimate = tonumber(held[1]), tonumber(held[2])
        if lease ~= '' and estimate and redis.call('ZSCORE', KEYS[2], lease) then
          local used = math.min(estimate, n)
          reserved = reserved - used
          redis.call('HSET', KEYS[1], field, str(estimate - used))
          if cestimate then
            local cused = math.min(cestimate, c)
            creserved = creserved - cused
            redis.call('HSET', KEYS[1], 'c' .. field, str(cestimate - cused))
          end
        end
        redis.call('HSET', KEYS[3], request, 'ok|0|0|0|0|0')
      end
    end
  end
  executions = executions + add_executions
  total = total + add_tokens
  cost = cost + add_cost
  put(fields, 'cost', str(cost))
  put(fields, 'cost_reserved', str(creserved))
  put(fields, 'executions', str(executions))
  put(fields, 'tokens', str(total))
  put(fields, 'reserved', str(reserved))
end
local given_back, _, given_back_cost = expire_leases(now, m[6], fields, ttl_ms)
if given_back ~= 0 or given_back_cost ~= 0 then
  reserved = reserved - given_back
  creserved = creserved - given_back_cost
  put(fields, 'reserved', str(reserved))
  put(fields, 'cost_reserved', str(creserved))
end
local active = redis.call('ZCARD', KEYS[2])
local reply = table.concat({'ok', str(executions), str(total), str(reserved), str(now - started), str(active)}, '|')
reply = reply .. '|' .. str(cost) .. '|' .. str(creserved)
return finish(reply, fields, now, m[7], m[8], ttl_ms, reply_ttl_ms, false)
