-- Give chunks back (shutdown, or the campaign moved to another worker), so
-- another worker can take them at once instead of waiting for the lease to expire.
--
-- KEYS[1] todo, KEYS[2] leases, KEYS[3] owners
-- ARGV[1] worker, ARGV[2..] chunks
-- Returns the number of chunks released.
local released = 0
for i = 2, #ARGV do
  local chunk = ARGV[i]
  if redis.call('HGET', KEYS[3], chunk) == ARGV[1] then
    redis.call('ZREM', KEYS[2], chunk)
    redis.call('HDEL', KEYS[3], chunk)
    redis.call('ZADD', KEYS[1], chunk, chunk)
    released = released + 1
  end
end
return released
