-- The receiver's half of the call status: what its enqueue script runs for each event it
-- accepted. It is kept apart so that script carries only these lines, not the whole
-- library (callstatus.lua, which folds what is noted here; see "Deferred receipts" there).
--   in  HASH  member route:detail -> its receipts not yet folded into its record, oldest
--             first, one per line: '1' (a duplicate) or '0', then mcs_status_received's
--             argument (JSON, which never holds a raw newline)
-- A detail's first receipt, nearly every one, is one HSETNX.
local function mcs_status_defer(p, m, arg, duplicate)
  local v = (duplicate and '1' or '0') .. arg
  if redis.call('HSETNX', p .. 'in', m, v) == 0 then
    redis.call('HSET', p .. 'in', m, redis.call('HGET', p .. 'in', m) .. '\n' .. v)
  end
  return 1
end
