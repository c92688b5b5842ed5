-- Write one campaign's outcomes, then the chunk completions that depend on them.
--
-- KEYS[1] state, [2] done, [3] failed, [4] invalid, [5] replies, [6] counts,
--      [7] leases, [8] owners, [9] completed
-- ARGV[1] JSON {"sent": [index, ...], "failed": {"index": reply}, "invalid": {"index": reason},
--               "deferred": n, "ambiguous": n, "complete": [["chunk", "worker|token"], ...],
--               "chunks": chunks in the campaign}
--
-- Returns {state after, completed chunks (0 when nothing was completed), then 1/0 per completion:
-- whether the claim still owned it}.
-- This is the hot path (every few milliseconds per busy campaign), so it does only what it
-- must: it neither reads the clock nor counts completed chunks unless it completes one.
-- Every outcome sets the done bit; failed and invalid also set their own.
-- A deleted campaign is left alone: writing its bits would bring its keys back,
-- with no expiry. Completion does not depend on pause: a campaign whose last
-- chunk completes while it is paused is completed.
local state = redis.call('GET', KEYS[1])
if not state then
  return {'missing', 0}
end
local a = cjson.decode(ARGV[1])

local function set_bits(key, indexes)
  local args = {}
  for _, i in ipairs(indexes) do
    args[#args + 1] = 'SET'
    args[#args + 1] = 'u1'
    args[#args + 1] = '#' .. i
    args[#args + 1] = 1
    if #args >= 2000 then
      redis.call('BITFIELD', key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then
    redis.call('BITFIELD', key, unpack(args))
  end
end

local done = {}
for _, i in ipairs(a.sent) do done[#done + 1] = i end
for _, spec in ipairs({{KEYS[3], a.failed}, {KEYS[4], a.invalid}}) do
  local indexes, replies = {}, {}
  for i, reply in pairs(spec[2]) do
    indexes[#indexes + 1] = i
    done[#done + 1] = i
    replies[#replies + 1] = i
    replies[#replies + 1] = reply
  end
  set_bits(spec[1], indexes)
  for j = 1, #replies, 1000 do
    redis.call('HSET', KEYS[5], unpack(replies, j, math.min(j + 999, #replies)))
  end
end
set_bits(KEYS[2], done)
for _, name in ipairs({'deferred', 'ambiguous'}) do
  if (tonumber(a[name]) or 0) > 0 then
    redis.call('HINCRBY', KEYS[6], name, a[name])
  end
end

local result = {state, 0}
for _, c in ipairs(a.complete) do
  local chunk, owner = c[1], c[2]
  if redis.call('HGET', KEYS[8], chunk) == owner then
    redis.call('ZREM', KEYS[7], chunk)
    redis.call('HDEL', KEYS[8], chunk)
    redis.call('ZADD', KEYS[9], chunk, chunk)
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
end
if #a.complete > 0 then
  local completed = redis.call('ZCARD', KEYS[9])
  if completed >= tonumber(a.chunks) and (state == 'active' or state == 'paused') then
    redis.call('SET', KEYS[1], 'completed')
    result[1] = 'completed'
  end
  result[2] = completed
end
return result
