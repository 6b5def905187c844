-- ARGV: worker name, slots, queue, info (JSON), reconcile grace (s), retry cap, state (online,
-- or draining: shutting down, no new work), what it advertises (cores, memory MB or '', GPU
-- ids and node groups comma-separated), then n and n pairs (task id, token) of the attempts
-- the worker really holds (its local record).
-- Registers the worker in full on every beat (a forgotten or restarted worker comes back with
-- its slots and queue), then reconciles Redis with the worker's reality, as slurmd reports its
-- jobs: an attempt the worker holds that Redis no longer assigns to it is stale (returned: the
-- worker kills its processes); an attempt Redis holds as started there that the worker does not
-- list is lost once it has been missing for the grace period.
-- Returns {{stale id, token, ...}, {celery id, mode, ...}}.
local w, slots, queue, info, grace, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local wstate = ARGV[7]
local cores, memory, gpus, groups = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local n = tonumber(ARGV[12])
local wk = K.worker(w)
local ts = now()
local was, wasinfo, drain_at = unpack(redis.call('HMGET', wk, F.state, 'info', 'drain_at'))
-- A task stopped by the worker's shutdown marked it draining; a beat sent before the worker
-- knew must not undo that (a new life has a new pid in info; a stray signal is forgotten).
if was == WS.draining and wasinfo == info and tonumber(ts) - num(drain_at) < 10 then
  wstate = WS.draining
end
redis.call('HSET', wk, 'slots', slots, 'queue', queue, 'info', info, 'beat', ts, 'cores', cores,
           'gpus', gpus, 'groups', groups)
if memory ~= '' then redis.call('HSET', wk, 'memory', memory) else redis.call('HDEL', wk, 'memory') end
if was ~= wstate and was ~= WS.online and was ~= WS.draining then
  redis.call('HSET', wk, 'started', ts)
end
worker_enter(w, was or '', wstate, '', ts)
redis.call('ZADD', K.WORKERS, ts, w)
redis.call('SETNX', K.CLUSTER, ts)      -- this Redis holds an hpcq cluster (commands check)
local listed, stale = {}, {}
for k = 0, n - 1 do
  local id, tok = ARGV[13 + 2 * k], ARGV[14 + 2 * k]
  listed[id] = tok
  local v = redis.call('HMGET', K.task(id), F.token, F.node)
  if v[1] ~= tok or v[2] ~= w then
    table.insert(stale, id)
    table.insert(stale, tok)
  end
end
-- stale attempts still hold pool processes until they are killed: no new work for those slots
redis.call('HSET', wk, 'stale', #stale / 2)
local revokes = {}
for _, id in ipairs(redis.call('SMEMBERS', K.worker_tasks(w))) do
  local tk = K.task(id)
  local v = redis.call('HMGET', tk, F.state, F.token, F.unlisted)
  if listed[id] and listed[id] == v[2] then
    if v[3] then redis.call('HDEL', tk, F.unlisted) end
  elseif v[1] == S.Running or v[1] == S.Canceling then
    if not v[3] then
      redis.call('HSET', tk, F.unlisted, ts)
    elseif tonumber(ts) - tonumber(v[3]) >= tonumber(grace) then
      local out = end_attempt(id, v[2] or '', O.lost, '', string.format(MSG.worker_unlisted, w),
                              '', 0, 0, 0, cap)
      for k = 4, #out do table.insert(revokes, out[k]) end
    end
  end
end
worker_recount(w)
return {stale, revokes}
