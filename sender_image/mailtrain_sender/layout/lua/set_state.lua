-- Compare and set a campaign's state: pause is active -> paused, resume is
-- paused -> active. A GET then a SET could overwrite a completion that landed in
-- between; this cannot.
--
-- KEYS[1] state
-- ARGV[1] the state expected, ARGV[2] the new state
--
-- Returns the state found: the swap happened when it equals ARGV[1].
local state = redis.call('GET', KEYS[1])
if state == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
end
return state or 'missing'
