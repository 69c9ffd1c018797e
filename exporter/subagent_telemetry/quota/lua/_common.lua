-- Shared prelude of every subagent-telemetry script (prepended by _redis_store.py; not run alone).
-- KEYS[1] meta hash (counters, pinned limits, bookkeeping, one `est:<lease id>` field per open lease and
-- one `seq:<client id>` field per process that replayed a backlog), KEYS[2] lease zset (lease id ->
-- expiry ms), KEYS[3] / KEYS[4] the replies hashes (current and previous generation: request id ->
-- reply, for idempotent retries), KEYS[5] expired zset (lease id -> expiry ms of leases that expired
-- unreleased: a lost admission is still found after its lease ran out). All keys share the session's
-- hash tag. Written for few redis.call()s, each one costs server CPU: the hot path is HGET x2, TIME,
-- HMGET, ZCARD, ZADD (leases only), HSET meta, HSET reply. Bookkeeping fields of the meta hash:
--   next_expiry_ms  a lower bound of the earliest lease expiry (-1: no lease; absent: unknown), so the
--                   expired-lease scan runs only when a lease can have expired;
--   expires_ms      when the keys' TTL runs out, so PEXPIRE runs only when it is due;
--   replies_ms      when the current replies generation started (rotated every reply_ttl_ms);
--   ttl_ms          the keys' TTL, set by reserve from the pinned limits (settle and replay use it).
local META = {'next_expiry_ms', 'expires_ms', 'replies_ms', 'ttl_ms'}

local function cached_reply()
  return redis.call('HGET', KEYS[3], ARGV[1]) or redis.call('HGET', KEYS[4], ARGV[1])
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as strings: Lua prints large or negative-zero numbers in forms Redis does not parse.
local function str(n)
  return string.format('%d', n)
end

local function put(fields, name, value)
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end

-- Leases past their expiry leave the zset (their slot comes back) when one can have expired; returns
-- the sum of their unused estimates (the caller gives it back), the new lower bound of expiries and the
-- sum of their unused money estimates (`cest:<lease id>` fields, nano-units). Their ids move to the
-- expired zset (kept ttl_ms), so a replayed lost admission still finds them.
local function expire_leases(now, raw_next, fields, ttl_ms)
  local next_expiry = tonumber(raw_next)
  if next_expiry and (next_expiry < 0 or now < next_expiry) then return 0, next_expiry, 0 end
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES')
  local given_back, given_back_cost = 0, 0
  local n = #expired / 2
  if n > 0 then
    local est, moved = {}, {}
    for i = 1, n do
      local id = expired[2 * i - 1]
      est[i] = 'est:' .. id
      est[n + i] = 'cest:' .. id
      moved[2 * i - 1] = expired[2 * i]
      moved[2 * i] = id
    end
    for i, value in ipairs(redis.call('HMGET', KEYS[1], unpack(est))) do
      if i <= n then
        given_back = given_back + (tonumber(value) or 0)
      else
        given_back_cost = given_back_cost + (tonumber(value) or 0)
      end
    end
    redis.call('HDEL', KEYS[1], unpack(est))
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    redis.call('HINCRBY', KEYS[1], 'expired_leases', n)
    redis.call('ZADD', KEYS[5], unpack(moved))
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - ttl_ms)
    redis.call('PEXPIRE', KEYS[5], ttl_ms)
  end
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  next_expiry = tonumber(first[2]) or -1
  put(fields, 'next_expiry_ms', str(next_expiry))
  return given_back, next_expiry, given_back_cost
end

-- Money (nano-units of the currency) lives beside the counters: `cost` spent, `cost_reserved` held by
-- open leases' estimates, `cost_limit` pinned on first use ('' = no money budget).
local function read_cost(extra)
  local c = redis.call('HMGET', KEYS[1], 'cost', 'cost_reserved', 'cost_limit', extra)
  return tonumber(c[1]) or 0, tonumber(c[2]) or 0, c[3], c[4]
end

-- The keys' TTL: the one reserve stored from the pinned limits, else this caller's.
local function session_ttl(m_ttl, ttl_ms)
  return tonumber(m_ttl) or ttl_ms
end

-- Writes the meta fields, keeps the keys' TTL between ttl_ms / 2 and ttl_ms (refreshed to ttl_ms when
-- less than half is left, or when more than ttl_ms is: the TTL follows the pinned limits), and stores
-- the reply under the request id (rotating the replies generation when it is due).
-- new_zset: the lease zset was just created (it has no TTL yet).
local function finish(reply, fields, now, m_expires, m_replies, ttl_ms, reply_ttl_ms, new_zset)
  local expires = tonumber(m_expires)
  local refresh = not expires or expires - now < ttl_ms / 2 or expires - now > ttl_ms
  if refresh then put(fields, 'expires_ms', str(now + ttl_ms)) end
  local since = tonumber(m_replies)
  local rotate = not since or now - since >= reply_ttl_ms
  if rotate then
    -- Every reply stays at least reply_ttl_ms: a generation lives reply_ttl_ms as the current one, then
    -- reply_ttl_ms as the previous one.
    if redis.call('EXISTS', KEYS[3]) == 1 then
      redis.call('RENAME', KEYS[3], KEYS[4])
      redis.call('PEXPIRE', KEYS[4], reply_ttl_ms)
    end
    put(fields, 'replies_ms', str(now))
  end
  if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
  if refresh then  -- After the HSET: it may have created the meta hash.
    redis.call('PEXPIRE', KEYS[1], ttl_ms)
    redis.call('PEXPIRE', KEYS[2], ttl_ms)
    redis.call('PEXPIRE', KEYS[5], ttl_ms)
  elseif new_zset then
    redis.call('PEXPIRE', KEYS[2], expires - now)
  end
  redis.call('HSET', KEYS[3], ARGV[1], reply)
  if rotate then redis.call('PEXPIRE', KEYS[3], 2 * reply_ttl_ms) end
  return reply
end
