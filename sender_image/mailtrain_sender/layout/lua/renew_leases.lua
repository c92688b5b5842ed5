-- Extend this worker's leases, each named by the fencing token of its claim.
--
-- KEYS[1] state, KEYS[2] leases, KEYS[3] owners, KEYS[4] tick
-- ARGV[1] worker, ARGV[2] lease ttl (ms), then pairs: chunk, token
--
-- Returns {state, lost chunk, lost chunk, ...}: a chunk is lost when its owner is
-- no longer this claim (taken over, completed, released), or {"missing"} when the
-- campaign is gone (then every chunk is lost). A lease that expired but was not
-- taken over is still this claim's, and is extended like any other.
local state = redis.call('GET', KEYS[1])
if not state then
  return {'missing'}
end
local ttl = tonumber(ARGV[2])
local now = campaign_clock(KEYS[4], KEYS[2], ttl)
local result = {state}
for i = 3, #ARGV, 2 do
  local chunk = ARGV[i]
  if redis.call('HGET', KEYS[3], chunk) == ARGV[1] .. '|' .. ARGV[i + 1] then
    redis.call('ZADD', KEYS[2], now + ttl, chunk)
  else
    result[#result + 1] = chunk
  end
end
return result
