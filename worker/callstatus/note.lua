-- The receiver's half of the call status: what its enqueue script runs for each event it
-- accepted (see callstatus.lua, mcs_status_defer's comment there, for the keys and the fold).
-- It is kept apart so that script carries only these lines, not the whole library.
local function mcs_status_defer(p, m, arg, duplicate)
  redis.call('RPUSH', p .. 'in:' .. m, (duplicate and '1' or '0') .. arg)
  redis.call('RPUSH', p .. 'in', m)
  return 1
end
