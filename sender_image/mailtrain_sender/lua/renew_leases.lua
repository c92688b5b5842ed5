-- Extend this worker's leases on the chunks it holds.
--
-- KEYS[1] state, KEYS[2] leases, KEYS[3] owners
-- ARGV[1] worker, ARGV[2] lease ttl (ms), ARGV[3..] chunks
--
-- Returns {state, lost chunk, lost chunk, ...}: a chunk is lost when another
-- worker took it over (our lease had expired), or the campaign's keys are gone.
local state = redis.call('GET', KEYS[1]) or 'missing'
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local result = {state}
for i = 3, #ARGV do
  local chunk = ARGV[i]
  if redis.call('HGET', KEYS[3], chunk) == ARGV[1] then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), chunk)
  else
    result[#result + 1] = chunk
  end
end
return result
