-- Lease the next chunk of a campaign: an expired lease first (a takeover), else
-- the lowest chunk still to do.
--
-- KEYS[1] state  STRING active|paused|completed (absent once deleted)
-- KEYS[2] todo   ZSET  chunk -> chunk (claimed lowest first)
-- KEYS[3] leases ZSET  chunk -> lease expiry (ms, server clock)
-- KEYS[4] owners HASH  chunk -> worker
-- KEYS[5] rcpt   HASH  chunk -> recipients (wire format)
-- KEYS[6] done   STRING bitmap, one bit per recipient
-- ARGV[1] worker, ARGV[2] lease ttl (ms), ARGV[3] chunk size (a multiple of 8)
--
-- Returns {"ok", chunk, recipients, done bits of the chunk, previous owner or ""}
--      or {"empty", chunks leased by anyone} or {"inactive", state}.
-- The done bits let a worker that takes a chunk over skip whoever was already sent.
local state = redis.call('GET', KEYS[1])
if state ~= 'active' then
  return {'inactive', state or 'missing'}
end
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local worker, ttl, size = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])

local chunk, previous = nil, ''
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1)
if #expired > 0 then
  chunk = expired[1]
  previous = redis.call('HGET', KEYS[4], chunk) or ''
else
  local popped = redis.call('ZPOPMIN', KEYS[2])
  if #popped == 0 then
    return {'empty', redis.call('ZCARD', KEYS[3])}
  end
  chunk = popped[1]
end

redis.call('ZADD', KEYS[3], now + ttl, chunk)
redis.call('HSET', KEYS[4], chunk, worker)
local first_byte = tonumber(chunk) * size / 8
local bits = redis.call('GETRANGE', KEYS[6], first_byte, first_byte + size / 8 - 1)
return {'ok', chunk, redis.call('HGET', KEYS[5], chunk) or '', bits, previous}
