-- The pool-wide token bucket behind throttling.messagesPerSecond, as reservations.
--
-- KEYS[1] throttle HASH {tokens, ts}
-- ARGV[1] rate (tokens per second), ARGV[2] burst (bucket size), ARGV[3] tokens wanted
--
-- Always grants `want` tokens; the bucket may go into debt. Returns the tokens there were
-- before this call: token j (0-based) of the grant becomes usable (j + 1 - before) / rate
-- seconds from now, or at once when that is negative. Callers wait for their token's turn,
-- so nobody polls, no call is wasted, and the use of tokens follows the bucket's release
-- schedule exactly: at most burst + rate x T in any window of T seconds.
-- Server time keeps every process on one clock.
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(stored[1]) or burst
local ts = tonumber(stored[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local before = tokens
tokens = tokens - want
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], 60000)
return string.format('%.6f', before)
