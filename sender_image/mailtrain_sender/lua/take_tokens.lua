-- The pool-wide token bucket behind throttling.messagesPerSecond.
--
-- KEYS[1] throttle HASH {tokens, ts}
-- ARGV[1] rate (tokens per second), ARGV[2] burst (bucket size), ARGV[3] tokens wanted
--
-- Returns {tokens granted, milliseconds until the next token (when none granted)}.
-- Server time keeps every process on one clock.
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1]) or burst
local ts = tonumber(stored[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if granted == 0 then
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
return {granted, wait}
