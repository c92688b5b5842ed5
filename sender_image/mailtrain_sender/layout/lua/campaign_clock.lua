-- Prelude of every campaign script that reads or writes leases (store.py prepends it).
--
-- Leases expire on Redis's clock, which goes on while Redis is paused (SIGSTOP, a
-- slow fork, a failover) or unreachable. Then nobody can renew, every lease would
-- expire at once, and a takeover would race its holder's acknowledgements that
-- are still unwritten, sending those recipients twice. So when no script has
-- touched the campaign for longer than ttl/2 (holders renew every ttl/3 and
-- acknowledge far more often), every lease that was live when the silence began
-- gets at least ttl/2 from now: time for its holder to renew, or to be found
-- dead. The price: a process that died alone on a campaign is taken over up to
-- ttl/2 later than its lease alone would say.
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function campaign_clock(tick_key, leases_key, ttl)
  local now = server_now()
  local last = tonumber(redis.call('GET', tick_key))
  if last and now - last > ttl / 2 then
    local floor = now + math.floor(ttl / 2)
    local live = redis.call('ZRANGEBYSCORE', leases_key, '(' .. last, '+inf', 'WITHSCORES')
    for i = 1, #live, 2 do
      if tonumber(live[i + 1]) < floor then
        redis.call('ZADD', leases_key, floor, live[i])
      end
    end
  end
  redis.call('SET', tick_key, now)
  return now
end

