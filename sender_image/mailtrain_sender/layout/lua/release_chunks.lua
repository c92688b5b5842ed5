-- Give chunks back (the campaign moved to another worker, or shutdown), so that
-- another worker takes them at once instead of waiting for the leases to expire.
-- The caller releases only chunks with no transaction in flight.
--
-- KEYS[1] state, KEYS[2] todo, KEYS[3] leases, KEYS[4] owners
-- ARGV[1] worker, then pairs: chunk, token
--
-- Returns the number of chunks released: only those this claim still owns. A
-- deleted campaign is left alone (writing todo would bring its keys back).
if not redis.call('GET', KEYS[1]) then
  return 0
end
local released = 0
for i = 2, #ARGV, 2 do
  local chunk = ARGV[i]
  if redis.call('HGET', KEYS[4], chunk) == ARGV[1] .. '|' .. ARGV[i + 1] then
    redis.call('ZREM', KEYS[3], chunk)
    redis.call('HDEL', KEYS[4], chunk)
    redis.call('ZADD', KEYS[2], chunk, chunk)
    released = released + 1
  end
end
return released
