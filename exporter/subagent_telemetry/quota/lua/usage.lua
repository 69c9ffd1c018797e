-- A consistent read of the session's usage on the server's clock. Writes nothing.
-- Reply: 'ok|executions|tokens|reserved|elapsed_ms|active|cost|cost_reserved'
local now = now_ms()
local m = redis.call('HMGET', KEYS[1], 'executions', 'tokens', 'reserved', 'started_ms')
local started = tonumber(m[4])
local elapsed = 0
if started then elapsed = math.max(now - started, 0) end
local active = redis.call('ZCOUNT', KEYS[2], '(' .. str(now), '+inf')
local c = redis.call('HMGET', KEYS[1], 'cost', 'cost_reserved')
return table.concat({'ok', m[1] or '0', m[2] or '0', m[3] or '0', str(elapsed), str(active), c[1] or '0',
  c[2] or '0'}, '|')
