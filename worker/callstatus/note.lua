-- The receiver's half of the call status: what its enqueue script runs for each event it
-- accepted. It is kept apart so that script carries only these lines, not the whole
-- library (callstatus.lua, which folds what is noted here; see "Deferred receipts" there).
--   in            HASH  member route:detail -> its oldest receipt not yet folded into its
--                       record: '1' (a duplicate) or '0', then mcs_status_received's argument
--   in:<member>   LIST  the member's later receipts not yet folded, oldest first, as above
-- A detail's first receipt, nearly every one, is one HSETNX. A later one while the first
-- still waits is appended to the member's list: rewriting the hash value would copy it
-- whole on every receipt, quadratic in a flood of re-sends.
local function mcs_status_defer(p, m, arg, duplicate)
  local v = (duplicate and '1' or '0') .. arg
  if redis.call('HSETNX', p .. 'in', m, v) == 0 then
    redis.call('RPUSH', p .. 'in:' .. m, v)
  end
  return 1
end
