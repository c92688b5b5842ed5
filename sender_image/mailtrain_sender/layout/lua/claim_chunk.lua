-- Lease the next chunk of a campaign: an expired lease first (a takeover), else
-- the lowest chunk still to do. Every claim gets a new fencing token; renewals,
-- releases and completions must name it, so a holder whose lease was taken over
-- (even by a newer runner of the same process) can no longer touch the chunk.
--
-- KEYS[1] state  STRING active|paused|completed|failed (absent once deleted)
-- KEYS[2] todo   ZSET  chunk -> chunk (claimed lowest first)
-- KEYS[3] leases ZSET  chunk -> lease expiry (ms, server clock)
-- KEYS[4] owners HASH  chunk -> "worker|token"
-- KEYS[5] rcpt   HASH  chunk -> recipients (wire format)
-- KEYS[6] done   STRING bitmap, one bit per recipient
-- KEYS[7] counts HASH  (field "fence": the last token handed out)
-- KEYS[8] tick   STRING server time of the last script call (see campaign_clock)
-- KEYS[9] reason STRING why the campaign failed
-- ARGV[1] worker, ARGV[2] lease ttl (ms), ARGV[3] chunk size (a multiple of 8)
--
-- Returns {"ok", chunk, token, recipients, done bits of the chunk, previous owner or ""}
--      or {"empty", chunks leased by anyone} or {"inactive", state}.
-- The done bits let a worker that takes a chunk over skip whoever was already sent.
-- A chunk whose recipients are missing (evicted, or a broken publish) fails the
-- campaign with a reason: sending it to nobody would count it complete.
local state = redis.call('GET', KEYS[1])
if state ~= 'active' then
  return {'inactive', state or 'missing'}
end
local worker, ttl, size = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = campaign_clock(KEYS[8], KEYS[3], ttl)

local chunk, previous = nil, ''
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1)
if #expired > 0 then
  chunk = expired[1]
  previous = string.match(redis.call('HGET', KEYS[4], chunk) or '', '^[^|]*')
else
  local popped = redis.call('ZPOPMIN', KEYS[2])
  if #popped == 0 then
    return {'empty', redis.call('ZCARD', KEYS[3])}
  end
  chunk = popped[1]
end

local recipients = redis.call('HGET', KEYS[5], chunk)
if not recipients then
  redis.call('SET', KEYS[1], 'failed')
  redis.call('SET', KEYS[9], 'the recipients of chunk ' .. chunk ..
    ' are missing from Redis (evicted? Redis must run with maxmemory-policy noeviction)')
  return {'inactive', 'failed'}
end
local token = redis.call('HINCRBY', KEYS[7], 'fence', 1)
redis.call('ZADD', KEYS[3], now + ttl, chunk)
redis.call('HSET', KEYS[4], chunk, worker .. '|' .. token)
local first_byte = tonumber(chunk) * size / 8
local bits = redis.call('GETRANGE', KEYS[6], first_byte, first_byte + size / 8 - 1)
return {'ok', chunk, token, recipients, bits, previous}
