-- A campaign-level error (a template that does not compile, a sender address that
-- cannot be sent from, corrupt data): the campaign fails once, with the reason.
--
-- KEYS[1] state, KEYS[2] reason
-- ARGV[1] reason
--
-- Returns the state found. Only an active or paused campaign fails; a finished or
-- deleted one is left as it is.
local state = redis.call('GET', KEYS[1])
if state == 'active' or state == 'paused' then
  redis.call('SET', KEYS[1], 'failed')
  redis.call('SET', KEYS[2], ARGV[1])
end
return state or 'missing'
