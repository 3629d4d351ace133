-- The dead letter's scripts. Every key is under one prefix carrying the queue's hash tag
-- (mcs:{queue}:dl:), so the keys an entry's trimming touches, though computed here, are in
-- the slot of the declared ones (asynq's scripts do the same).
--   idx        ZSET  member route:detail, score = last death (ms)
--   bytes      STRING the stored size of every entry
--   e:<member> HASH  meta (JSON), event (compressed), size, task_id, call_id, detail_id,
--                    attempts, deaths, first_dead_at
--   id:<id>    SET   the members of a call id or detail id

local function drop(prefix, m)
  local k = prefix .. 'e:' .. m
  local f = redis.call('HMGET', k, 'size', 'call_id', 'detail_id')
  if f[1] then redis.call('DECRBY', prefix .. 'bytes', f[1]) end
  if f[2] then redis.call('SREM', prefix .. 'id:' .. f[2], m) end
  if f[3] then redis.call('SREM', prefix .. 'id:' .. f[3], m) end
  redis.call('DEL', k)
  return redis.call('ZREM', prefix .. 'idx', m)
end

-- trim removes entries older than cutoff, then the oldest over max_entries, then the oldest
-- while the size is over max_bytes (never keep, the entry just recorded), at most limit of
-- each. It returns how many went for each reason.
local function trim(prefix, maxn, maxb, cutoff, limit, keep)
  local idx = prefix .. 'idx'
  local age, n, b = 0, 0, 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', idx, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)) do
    if m ~= keep then
      drop(prefix, m)
      age = age + 1
    end
  end
  local over = redis.call('ZCARD', idx) - maxn
  if over > limit then over = limit end
  if over > 0 then
    for _, m in ipairs(redis.call('ZRANGE', idx, 0, over - 1)) do
      drop(prefix, m)
      n = n + 1
    end
  end
  while b < limit and tonumber(redis.call('GET', prefix .. 'bytes') or '0') > maxb do
    local m = redis.call('ZRANGE', idx, 0, 0)[1]
    if m == nil or m == keep then break end
    drop(prefix, m)
    b = b + 1
  end
  return {age, n, b}
end

-- KEYS: idx, bytes, entry, id:<call id>, id:<detail id>
-- ARGV: member, score, meta, event, size, task_id, call_id, detail_id, attempts,
--       max_entries, max_bytes, cutoff, prefix, limit
local function record(KEYS, ARGV)
  local m, entry = ARGV[1], KEYS[3]
  local old = redis.call('HGET', entry, 'size')
  if old then redis.call('DECRBY', KEYS[2], old) end
  redis.call('HSET', entry, 'meta', ARGV[3], 'event', ARGV[4], 'size', ARGV[5],
    'task_id', ARGV[6], 'call_id', ARGV[7], 'detail_id', ARGV[8])
  redis.call('HINCRBY', entry, 'attempts', ARGV[9])
  redis.call('HINCRBY', entry, 'deaths', 1)
  redis.call('HSETNX', entry, 'first_dead_at', ARGV[2])
  redis.call('INCRBY', KEYS[2], ARGV[5])
  redis.call('ZADD', KEYS[1], ARGV[2], m)
  redis.call('SADD', KEYS[4], m)
  redis.call('SADD', KEYS[5], m)
  return trim(ARGV[13], tonumber(ARGV[10]), tonumber(ARGV[11]), ARGV[12], tonumber(ARGV[14]), m)
end

-- KEYS: idx, entry; ARGV: member, task_id, any ('1': whatever event), prefix
local function resolve(KEYS, ARGV)
  if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
  if ARGV[3] ~= '1' and redis.call('HGET', KEYS[2], 'task_id') ~= ARGV[2] then return 0 end
  return drop(ARGV[4], ARGV[1])
end

-- KEYS: idx, bytes; ARGV: max_entries, max_bytes, cutoff, prefix, limit
local function sweep(KEYS, ARGV)
  return trim(ARGV[4], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[5]), '')
end
