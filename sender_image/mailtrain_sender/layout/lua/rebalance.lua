-- Heartbeat, then recompute which live worker works on which campaigns of the pool.
--
-- KEYS[1] workers   ZSET  worker -> heartbeat expiry (ms, server clock)
-- KEYS[2] caps      HASH  worker -> maxParallelCampaigns (0 = unlimited)
-- KEYS[3] assign    HASH  worker -> comma-separated campaign ids
-- KEYS[4] registry  ZSET  campaign -> score (priority, then creation)
-- KEYS[5] clock     STRING server time of the last call (ms)
-- ARGV[1] worker id, ARGV[2] its cap, ARGV[3] heartbeat ttl (ms), ARGV[4] "1" = leaving
--
-- Returns {my campaigns (comma-separated), live workers, runnable campaigns, expired workers}.
--
-- The assignment is a pure function of (live workers, caps, registry, previous
-- assignment), so every worker computes the same one and it is a fixed point:
-- calling again changes nothing. It is sticky: a worker keeps what it has while
-- its quota allows, so a change moves as few campaigns as possible.
--   * N = campaigns that run: those running already (no preemption), then the
--     waiting ones by priority, up to the pool's capacity (sum of caps).
--   * N >= P workers: each campaign has one worker; loads are floor/ceil of N/P.
--   * N < P: every worker gets one campaign; campaigns share the spare workers
--     (higher priority first), each worker on its own chunks.
--   * Quotas are as equal as the caps allow (water-filling): a worker with a low
--     cap leaves its share to the others, so no campaign waits while a worker
--     has room, even when caps differ (during a rolling config change).
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local me, my_cap, ttl, leaving = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'

-- Every live worker calls this every rebalanceInterval. If nobody did for ttl/2,
-- Redis itself was paused or unreachable: heartbeats that were live when the
-- silence began get ttl/2 more, so that the first caller afterwards does not
-- declare everyone else dead (see campaign_clock.lua for the same rule on leases).
local last = tonumber(redis.call('GET', KEYS[5]))
if last and now - last > ttl / 2 then
  local floor = now + math.floor(ttl / 2)
  local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. last, '+inf', 'WITHSCORES')
  for i = 1, #live, 2 do
    if tonumber(live[i + 1]) < floor then
      redis.call('ZADD', KEYS[1], floor, live[i])
    end
  end
end
if not leaving then
  redis.call('SET', KEYS[5], now)
end

if leaving then
  redis.call('ZREM', KEYS[1], me)
  redis.call('HDEL', KEYS[2], me)
  redis.call('HDEL', KEYS[3], me)
else
  redis.call('ZADD', KEYS[1], now + ttl, me)
  redis.call('HSET', KEYS[2], me, my_cap)
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, w in ipairs(expired) do
  redis.call('ZREM', KEYS[1], w)
  redis.call('HDEL', KEYS[2], w)
  redis.call('HDEL', KEYS[3], w)
end

local workers = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(workers)
local campaigns = redis.call('ZRANGE', KEYS[4], 0, -1)
local P = #workers
if P == 0 then
  return {'', 0, #campaigns, #expired}
end

local rank = {}
for i, c in ipairs(campaigns) do rank[c] = i end

local INF = 1e18
local cap, current = {}, {}
local caps_flat = redis.call('HGETALL', KEYS[2])
for i = 1, #caps_flat, 2 do
  local n = tonumber(caps_flat[i + 1])
  cap[caps_flat[i]] = (n == 0) and INF or n
end
local assign_flat = redis.call('HGETALL', KEYS[3])
local stored = {}
for i = 1, #assign_flat, 2 do
  stored[assign_flat[i]] = assign_flat[i + 1]
  local list = {}
  for c in string.gmatch(assign_flat[i + 1], '[^,]+') do
    if rank[c] then list[#list + 1] = c end
  end
  table.sort(list, function(a, b) return rank[a] < rank[b] end)
  current[assign_flat[i]] = list
end

local total_cap = 0
for _, w in ipairs(workers) do
  cap[w] = cap[w] or INF
  current[w] = current[w] or {}
  total_cap = math.min(INF, total_cap + cap[w])
end

-- Which campaigns run: running ones first (in priority order), then waiting ones.
local N = math.min(#campaigns, total_cap)
local running = {}
for _, w in ipairs(workers) do
  for _, c in ipairs(current[w]) do running[c] = true end
end
local active, is_active = {}, {}
for pass = 1, 2 do
  for _, c in ipairs(campaigns) do
    if #active < N and not is_active[c] and (pass == 2 or running[c]) then
      active[#active + 1] = c
      is_active[c] = true
    end
  end
end
table.sort(active, function(a, b) return rank[a] < rank[b] end)

-- Slots per campaign, and the quota of slots per worker.
local slots, S = {}, 0
for i, c in ipairs(active) do
  if N >= P then
    slots[c] = 1
  else
    slots[c] = math.floor(P / N) + ((i <= P % N) and 1 or 0)
  end
  S = S + slots[c]
end
local held = {}
for _, w in ipairs(workers) do
  local n = 0
  for _, c in ipairs(current[w]) do if is_active[c] then n = n + 1 end end
  held[w] = n
end
local by_held = {}
for i, w in ipairs(workers) do by_held[i] = w end
table.sort(by_held, function(a, b)
  if held[a] ~= held[b] then return held[a] > held[b] end
  return a < b
end)
-- Water-filling: workers whose cap is below the equal share get their cap, and
-- the rest share what is left; the extra slots go to those holding most.
local quota, open, left = {}, by_held, S
while #open > 0 do
  local share = math.floor(left / #open)
  local rest = {}
  for _, w in ipairs(open) do
    if cap[w] <= share then
      quota[w] = cap[w]
      left = left - cap[w]
    else
      rest[#rest + 1] = w
    end
  end
  if #rest == #open then
    local extra = left - share * #open
    for i, w in ipairs(open) do
      quota[w] = share + ((i <= extra) and 1 or 0)
    end
    break
  end
  open = rest
end

-- Keep what each worker has, within quotas; then hand out the rest.
local remaining, new, holds = {}, {}, {}
for _, c in ipairs(active) do remaining[c] = slots[c] end
for _, w in ipairs(workers) do
  new[w], holds[w] = {}, {}
  for _, c in ipairs(current[w]) do
    if is_active[c] and remaining[c] > 0 and #new[w] < quota[w] and not holds[w][c] then
      new[w][#new[w] + 1] = c
      holds[w][c] = true
      remaining[c] = remaining[c] - 1
    end
  end
end
for _, c in ipairs(active) do
  while remaining[c] > 0 do
    local best = nil
    for _, w in ipairs(workers) do
      if #new[w] < quota[w] and not holds[w][c] and (best == nil or #new[w] < #new[best]) then
        best = w
      end
    end
    if best == nil then break end
    new[best][#new[best] + 1] = c
    holds[best][c] = true
    remaining[c] = remaining[c] - 1
  end
end

-- Write only what changed: in a steady state this script is read-only but for the heartbeat.
for _, w in ipairs(workers) do
  table.sort(new[w], function(a, b) return rank[a] < rank[b] end)
  local joined = table.concat(new[w], ',')
  if joined ~= (stored[w] or '') then
    if joined ~= '' then
      redis.call('HSET', KEYS[3], w, joined)
    else
      redis.call('HDEL', KEYS[3], w)
    end
  end
end

local mine = ''
if not leaving then mine = table.concat(new[me] or {}, ',') end
return {mine, P, #campaigns, #expired}
