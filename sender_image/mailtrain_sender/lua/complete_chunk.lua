-- Mark a chunk complete once every recipient in it is acknowledged (the caller
-- has written the done bits in the same pipeline, before this script).
--
-- KEYS[1] leases, KEYS[2] owners, KEYS[3] completed ZSET chunk -> chunk, KEYS[4] state
-- ARGV[1] worker, ARGV[2] chunk, ARGV[3] number of chunks in the campaign
--
-- Returns {owned (1/0), completed chunks}. When the last chunk completes the
-- campaign's state becomes "completed".
local owned = redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1]
if owned then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
end
local completed = redis.call('ZCARD', KEYS[3])
if completed >= tonumber(ARGV[3]) and redis.call('GET', KEYS[4]) == 'active' then
  redis.call('SET', KEYS[4], 'completed')
end
return {owned and 1 or 0, completed}
