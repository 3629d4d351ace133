-- Call status scripts. Every key is under one prefix carrying the queue's hash tag
-- (mcs:{queue}:status:), the slot of asynq's own queue keys, so these functions can run
-- inside another script of that queue (the receiver's enqueue) on Redis Cluster.
--   r:<route>:<detail>  STRING one record, JSON, every value a string (cjson would print
--                       large numbers in exponent form)
--   idx                 ZSET   member route:detail, score = when it first reached us (ms)
--   id:<call id>        SET    the members of a call (a call has several details)
--   rep:<sha of e-mail> ZSET   the members of a rep's calls, score as idx
--   ph:<hmac of number> SET    the members of a phone number (phone_search only)
--   in, in:<member>     HASH, LIST receipts noted, not yet folded in (see note.lua)
--
-- A record holds the call's facts, its events by dedupe key, the detail's state and the last
-- error and CRM result. Each call takes one JSON argument (see the Go side for the fields).

local function mcs_status_load(key)
  local v = redis.call('GET', key)
  if v then
    local r = cjson.decode(v)
    if type(r.ev) ~= 'table' then r.ev = {} end
    return r
  end
  return {ev = {}, ne = '0'}
end

-- mcs_status_facts copies the call-level facts the argument carries; an absent or empty
-- fact never blanks one a richer event brought (the minutes event has no participants).
local function mcs_status_facts(r, f)
  for _, k in ipairs({'route', 'detail', 'call', 'call_at', 'type', 'dir', 'rep', 'from', 'to', 'cust'}) do
    local v = f[k]
    if type(v) == 'string' and v ~= '' then r[k] = v end
  end
  -- The kind stays the call's outcome once one is known, as the worker's merge keeps it.
  if type(f.kind) == 'string' and f.kind ~= '' and (r.kind == nil or r.kind == 'minutes' or f.kind ~= 'minutes') then
    r.kind = f.kind
  end
end

-- mcs_status_event returns the record's entry of an event, created on first sight (at most
-- maxev per record: what is beyond is only counted).
local function mcs_status_event(r, k, kind, at, maxev)
  local e = r.ev[k]
  if e == nil then
    if (tonumber(r.ne) or 0) >= maxev then
      r.ndrop = tostring((tonumber(r.ndrop) or 0) + 1)
      return nil
    end
    e = {kind = kind, at = at}
    r.ev[k] = e
    r.ne = tostring((tonumber(r.ne) or 0) + 1)
  end
  return e
end

-- mcs_status_trim trims the status to max records (the oldest calls first) and the index to
-- the retention, as of a (its now, ttl and max), removing up to atleast records over max.
local function mcs_status_trim(p, a, atleast)
  redis.call('ZREMRANGEBYSCORE', p .. 'idx', '-inf', '(' .. (tonumber(a.now) - tonumber(a.ttl)))
  local over = redis.call('ZCARD', p .. 'idx') - tonumber(a.max)
  if over > 0 then
    if over > atleast then over = atleast end
    for _, m in ipairs(redis.call('ZRANGE', p .. 'idx', 0, over - 1)) do
      if m ~= a.m then redis.call('DEL', p .. 'r:' .. m) end
      redis.call('ZREM', p .. 'idx', m)
    end
  end
end

-- mcs_status_index adds member a.m to the indexes: the list by first receipt, its call's
-- set, its rep's list and its numbers' sets.
local function mcs_status_index(p, a, r)
  local score = r.seen
  redis.call('ZADD', p .. 'idx', score, a.m)
  if r.call and r.call ~= '' then
    redis.call('SADD', p .. 'id:' .. r.call, a.m)
    redis.call('PEXPIRE', p .. 'id:' .. r.call, a.ttl)
  end
  if type(a.repk) == 'string' and a.repk ~= '' then
    local rk = p .. 'rep:' .. a.repk
    redis.call('ZADD', rk, score, a.m)
    redis.call('PEXPIRE', rk, a.ttl)
    redis.call('ZREMRANGEBYSCORE', rk, '-inf', '(' .. (tonumber(a.now) - tonumber(a.ttl)))
  end
  if type(a.ph) == 'table' then
    for _, h in ipairs(a.ph) do
      redis.call('SADD', p .. 'ph:' .. h, a.m)
      redis.call('PEXPIRE', p .. 'ph:' .. h, a.ttl)
    end
  end
end

-- mcs_status_store writes the record and its indexes, then trims (mcs_status_trim), unless
-- batch is given: a fold of many receipts trims once at its end (batch.a, the last argument).
local function mcs_status_store(p, a, r, batch)
  local key = p .. 'r:' .. a.m
  -- Lists are by when a call first reached us: retention then ages index and records alike,
  -- and a backfilled old call is listed with what came in today.
  if r.seen == nil then r.seen = a.at or a.now end
  redis.call('SET', key, cjson.encode(r), 'PX', a.ttl)
  mcs_status_index(p, a, r)
  if batch then
    batch.a, batch.n = a, batch.n + 1
  else
    mcs_status_trim(p, a, 100)
  end
end

-- mcs_status_apply_received applies one received event to record r: queued (pending until
-- a worker takes it) or, with duplicate true, a duplicate (counted on the event it repeats).
local function mcs_status_apply_received(r, a, duplicate)
  mcs_status_facts(r, a.f)
  local e = mcs_status_event(r, a.k, a.f.kind, a.at, tonumber(a.maxev))
  if e then
    if duplicate then
      e.dups = tostring((tonumber(e.dups) or 0) + 1)
      e.dup_at = a.at
    else
      e.state, e.t = 'pending', a.at
      r.state, r.state_at, r.cur, r.next_at = 'pending', a.at, a.k, nil
      r.attempt = e.attempts or '0'
    end
  end
end

-- mcs_status_received records one event the receiver accepted (mcs_status_apply_received).
-- The receiver's script passes what it decided itself (ledger hit, TaskID conflict).
local function mcs_status_received(p, arg, duplicate)
  local a = cjson.decode(arg)
  local r = mcs_status_load(p .. 'r:' .. a.m)
  mcs_status_apply_received(r, a, duplicate)
  mcs_status_store(p, a, r, nil)
  return 1
end

-- Deferred receipts. Recording a receipt in the record (above) takes a JSON decode and
-- encode and about ten commands; the receiver's enqueue script, on every webhook request's
-- path, only notes it (mcs_status_defer, in note.lua: one HSETNX into the in hash). A
-- detail's noted receipts are folded into its record, in the order received, before any
-- worker transition of that detail (mcs_status_transition), so a transition never lands
-- before the receipt it follows; and all of them by mcs_status_fold: the worker's folder in
-- the background, and every read first, so a read sees every call received.

-- mcs_status_sig names the rep and numbers argument a indexes the record under.
local function mcs_status_sig(a)
  return (a.repk or '') .. '|' .. (type(a.ph) == 'table' and table.concat(a.ph, ',') or '')
end

-- mcs_status_apply_notes takes member m's noted receipts and applies them to its record, in
-- the order received (the first in the in hash, the later ones in the member's list:
-- note.lua), with one load however many there are, so a flood of re-sends folds in one
-- pass. It returns nil when none is noted; else the record, not yet stored, the notes'
-- arguments with distinct indexes (rep and numbers), for mcs_status_index_notes, and the
-- last note's argument.
local function mcs_status_apply_notes(p, m)
  local first = redis.call('HGET', p .. 'in', m)
  if not first then return nil end -- the list only fills while the hash holds the first
  redis.call('HDEL', p .. 'in', m)
  local lk = p .. 'in:' .. m
  local notes = redis.call('LRANGE', lk, 0, -1)
  if #notes > 0 then redis.call('DEL', lk) end
  table.insert(notes, 1, first)
  local r, sigs, distinct, a = nil, {}, {}, nil
  for _, it in ipairs(notes) do
    a = cjson.decode(string.sub(it, 2))
    if r == nil then r = mcs_status_load(p .. 'r:' .. a.m) end
    if r.seen == nil then r.seen = a.at or a.now end
    mcs_status_apply_received(r, a, string.sub(it, 1, 1) == '1')
    local sig = mcs_status_sig(a)
    if sigs[sig] == nil then
      sigs[sig] = true
      table.insert(distinct, a)
    end
  end
  return r, distinct, a
end

-- mcs_status_index_notes adds record r to the indexes of the notes' arguments whose rep or
-- numbers differ from a's, the argument r is then stored with (mcs_status_store indexes
-- that one), so every note's indexes are kept, as one store per note kept them.
local function mcs_status_index_notes(p, distinct, a, r)
  local sig = mcs_status_sig(a)
  for _, o in ipairs(distinct) do
    if mcs_status_sig(o) ~= sig then mcs_status_index(p, o, r) end
  end
end

-- mcs_status_fold_member folds member m's noted receipts into its record: one load, one
-- store.
local function mcs_status_fold_member(p, m, batch)
  local r, distinct, a = mcs_status_apply_notes(p, m)
  if not r then return end
  mcs_status_index_notes(p, distinct, a, r)
  mcs_status_store(p, a, r, batch)
end

-- mcs_status_fold folds the receipts of up to limit noted members (any: a record's place
-- in the lists is when it was first received, not when it is folded), trimming once at the
-- end, and returns how many members are still noted.
local function mcs_status_fold(p, limit)
  local ms = redis.call('HRANDFIELD', p .. 'in', limit)
  if #ms == 0 then return 0 end
  local batch = {n = 0}
  for _, m in ipairs(ms) do mcs_status_fold_member(p, m, batch) end
  if batch.a then mcs_status_trim(p, batch.a, math.max(100, batch.n)) end
  return redis.call('HLEN', p .. 'in')
end

-- mcs_status_transition records what a worker did with an event: started (active), failed
-- (retry, parked, dead), delivered (done) or skipped by the mapping.
local function mcs_status_transition(p, arg)
  local a = cjson.decode(arg)
  -- The receipts of this detail first, in the same load and store: the transition follows
  -- them.
  local r, distinct = mcs_status_apply_notes(p, a.m)
  if r then
    mcs_status_index_notes(p, distinct, a, r)
  else
    r = mcs_status_load(p .. 'r:' .. a.m)
  end
  mcs_status_facts(r, a.f)
  local e = mcs_status_event(r, a.k, a.f.kind, a.rat, tonumber(a.maxev)) or {}
  local t = a.t
  if t.state == 'active' then
    e.attempts = tostring((tonumber(e.attempts) or 0) + 1)
  end
  e.state, e.t = t.state, t.at
  r.state, r.state_at, r.cur = t.state, t.at, a.k
  r.attempt = e.attempts or '0'
  r.next_at = t.next
  if type(t.err) == 'table' then r.err = t.err end
  if type(t.crm) == 'table' then
    r.crm = t.crm
    r.contact, r.owner = t.contact, t.owner
  end
  if t.state == 'skipped' then r.skip = t.skip end
  mcs_status_store(p, a, r)
  return 1
end
