-- ARGV: most units to hand out, most queue entries to look at, bytes of each command's head to
-- return (0: none; lib_heads.lua), then the workers to fill.
-- Walks the queue in priority order and gives each unit (a task, or a sweep's next instance) to
-- a worker where all it asks for is free (schema.RESOURCES: cores, memory, GPUs, node group,
-- exclusive; a job's exclusive flag keeps other jobs off its workers), the one with the most
-- free cores.  The first unit that fits nowhere now but would fit on an idle worker reserves
-- the worker nearest to fitting it: later (lower-priority) units go there only if they fit
-- beside it, so a large task is never starved by a stream of small ones (EASY backfill without
-- run time estimates).  Each handed-out unit goes Dispatching with a fresh attempt token and
-- its allocation (a_*).  Returns {worker, id, token, celery id for each; the command heads}.
local want, scan, heads = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ws = {}
for k = 4, #ARGV do
  local w = ARGV[k]
  local v = redis.call('HMGET', K.worker(w), 'slots', F.state, 'stale', 'cores', 'memory', 'gpus',
                       'groups', F.u_cores, F.u_memory)
  local ntasks = redis.call('SCARD', K.worker_tasks(w))
  -- a lost, draining or stopped worker gets nothing; slots held by stale attempts being killed
  -- are not free; a full worker is passed over before anything more of it is read
  if v[2] ~= WS.lost and v[2] ~= WS.stopped and v[2] ~= WS.draining and v[1]
      and num(v[1]) - num(v[3]) > ntasks then
    local slots = num(v[1]) - num(v[3])
    local W = {name = w, free = slots - ntasks, cores = num(v[4] or v[1]),
               memory = tonumber(v[5]) or math.huge, gpus = {}, groups = {}, jobs = {},
               njobs = redis.call('HLEN', K.worker_jobs(w)), ntasks = ntasks}
    W.cap = {cores = W.cores, memory = W.memory, gpus = 0, slots = slots}
    -- what its tasks hold: the sums kept with its task set (worker_hold in lib.lua), and the
    -- few tasks with GPUs or an exclusive flag read one by one
    W.cores = W.cores - num(v[8])
    W.memory = W.memory - num(v[9])
    local used = {}
    for _, id in ipairs(redis.call('SMEMBERS', K.worker_special(w))) do
      local a = redis.call('HMGET', K.task(id), 'a_gpus', 'a_excl')
      for g in string.gmatch(a[1] or '', '[^,]+') do used[g] = true end
      if a[2] == 'task' then W.closed = true elseif a[2] == 'job' then W.owner = split_id(id) end
    end
    for g in string.gmatch(v[6] or '', '[^,]+') do
      W.cap.gpus = W.cap.gpus + 1
      if not used[g] then table.insert(W.gpus, g) end
    end
    for g in string.gmatch(v[7] or '', '[^,]+') do W.groups[g] = true end
    table.insert(ws, W)
  end
end
local out = {}
if want <= 0 or #ws == 0 then return {out, {}} end

-- what a unit of queue entry `id` asks for (an instance asks what its master asks)
-- (stop: its job is being canceled, finished or has failed - lib_ops.lua - so nothing of it
-- starts; its op takes the entry out)
local asks, jobs = {}, {}
local function ask(id)
  if asks[id] then return asks[id] end
  local v = redis.call('HMGET', K.task(id), 'cores', 'memory', 'gpus', 'group', 'exclusive')
  local j = split_id(id)
  local J = jobs[j]
  if not J then
    local jv = redis.call('HMGET', K.job(j), 'exclusive', F.state, F.finish)
    J = {excl = jv[1] == '1', stop = job_stopping(jv[2], jv[3])}
    jobs[j] = J
  end
  local R = {cores = tonumber(v[1]) or 1, memory = num(v[2]), gpus = num(v[3]), group = v[4] or '',
             exclusive = v[5] == '1', job = j, job_excl = J.excl, stop = J.stop}
  asks[id] = R
  return R
end

local function group_ok(W, R) return R.group == '' or W.groups[R.group] end

-- Has worker W a task of job j?  (worker_jobs, read once per worker and job)
local function has_job(W, j)
  if W.jobs[j] == nil then W.jobs[j] = redis.call('HEXISTS', K.worker_jobs(W.name), j) == 1 end
  return W.jobs[j]
end

local function fits(W, R)
  return W.free >= 1 and not W.closed and group_ok(W, R) and W.cores >= R.cores
      and W.memory >= R.memory and #W.gpus >= R.gpus
      and (not R.exclusive or W.ntasks == 0)
      and (W.owner == nil or W.owner == R.job)
      and (not R.job_excl or W.njobs == 0 or (W.njobs == 1 and has_job(W, R.job)))
end

-- would fit if the worker were idle
local function could_fit(W, R)
  return W.cap.slots >= 1 and group_ok(W, R) and W.cap.cores >= R.cores
      and W.cap.memory >= R.memory and W.cap.gpus >= R.gpus
end

-- The workers by free cores (buckets[c]: those with c free, in the order given, a worker that
-- took something moving to the end of its new bucket): the best worker for a unit is the first
-- that fits, scanning from the most free cores down, so a unit costs the workers it does not fit
-- (none, usually), not all of them.  nfree: the free slots on workers open to more.
local buckets, top, nfree = {}, 0, 0
local function key(W) return math.max(0, math.floor(W.cores)) end
local function avail(W) return (not W.closed and W.free > 0) and W.free or 0 end
for _, W in ipairs(ws) do
  local c = key(W)
  buckets[c] = buckets[c] or {}
  table.insert(buckets[c], W)
  if c > top then top = c end
  nfree = nfree + avail(W)
end

local function best(R, test, least)
  for c = top, least, -1 do
    local b = buckets[c]
    if b then
      for _, W in ipairs(b) do
        if test(W, R) then return W end
      end
    end
  end
end

-- what the worker has left once it takes a unit asking R; returns the GPU ids given
local function charge(W, R)
  W.free = W.free - 1
  W.cores = W.cores - R.cores
  W.memory = W.memory - R.memory
  W.ntasks = W.ntasks + 1
  if not has_job(W, R.job) then W.jobs[R.job] = true; W.njobs = W.njobs + 1 end
  if R.exclusive then W.closed = true end
  if R.job_excl then W.owner = R.job end
  local given = {}
  -- (a reservation may ask more GPUs than are free now: it takes what there is)
  for _ = 1, math.min(R.gpus, #W.gpus) do table.insert(given, table.remove(W.gpus, 1)) end
  return table.concat(given, ',')
end

-- the worker takes (or is reserved for) a unit asking R, and moves to its new bucket
local function take(W, R)
  local c, before = key(W), avail(W)
  local gpus = charge(W, R)
  local b = buckets[c]
  for k = 1, #b do
    if b[k] == W then table.remove(b, k); break end
  end
  c = key(W)
  buckets[c] = buckets[c] or {}
  table.insert(buckets[c], W)
  nfree = nfree + avail(W) - before
  return gpus
end

local reserved = false
local function reserve(R)
  if reserved then return end
  local W = best(R, could_fit, 0)
  if W then
    reserved = true
    take(W, R)
  end
end

local function anyone_free() return nfree >= 1 end

local ts = now()
local function hand_out(unit, W, R)
  local gpus = take(W, R)
  -- unique even if Redis lost its last writes and counts again: the sequence, then microseconds
  local token = string.format('%d%06d', redis.call('INCR', K.ATTEMPT), tonumber(redis.call('TIME')[2]))
  local cid = celery_id(unit, token)
  redis.call('HSET', K.task(unit), F.token, token, F.celery_id, cid, F.node, W.name,
             'dispatch_time', ts, 'a_cores', R.cores, 'a_memory', R.memory, 'a_gpus', gpus,
             'a_excl', R.exclusive and 'task' or (R.job_excl and 'job' or ''))
  enter('task', unit, S.Dispatching, {ts = ts, node = W.name, from = S.Queued})
  for _, x in ipairs({W.name, unit, token, cid}) do table.insert(out, x) end
end

-- the next instance of sweep `id` to hand out (requeued ones first), or nil; takes the master
-- out of the queue once it has none left
local function next_instance(id)
  local tk = K.task(id)
  local i = redis.call('RPOP', K.sweep_redo(id))
  if not i then
    local v = redis.call('HMGET', tk, F.next, F.total)
    local nxt, total = num(v[1]), num(v[2])
    while not i and nxt < total do
      nxt = redis.call('HINCRBY', tk, F.next, 1)
      if redis.call('EXISTS', K.task(id .. '.' .. nxt)) == 1 then
        redis.call('HINCRBY', tk, F.pre, -1)   -- canceled (or requeued) before its turn
      else
        i = nxt
        materialize(id .. '.' .. i, S.Queued, ts, true)
      end
    end
  end
  local v = redis.call('HMGET', tk, F.next, F.total)
  if num(v[1]) >= num(v[2]) and redis.call('LLEN', K.sweep_redo(id)) == 0 then
    redis.call('ZREM', K.QUEUE, id)
  end
  return i
end

-- read the queue in chunks about the size of what can be handed out (one free slot: a few)
local slots = 0
for _, W in ipairs(ws) do if W.free > 0 then slots = slots + W.free end end
local size = math.min(64, 2 * slots + 2)
local after, seen = '-inf', 0
while #out / 4 < want and seen < scan and anyone_free() do
  local chunk = redis.call('ZRANGEBYSCORE', K.QUEUE, after, '+inf', 'WITHSCORES', 'LIMIT', 0, size)
  size = 64
  if #chunk == 0 then break end
  for k = 1, #chunk, 2 do
    if not anyone_free() then break end
    local id = chunk[k]
    after = '(' .. chunk[k + 1]
    seen = seen + 1
    if ask(id).stop then
      -- left for its job's op (a sweep master's entry, or a task's still Queued)
    elseif is_master(id) then
      local R = ask(id)
      local W = best(R, fits, math.max(0, math.ceil(R.cores)))
      while W and #out / 4 < want do
        local i = next_instance(id)
        if not i then break end
        hand_out(id .. '.' .. i, W, R)
        W = best(R, fits, math.max(0, math.ceil(R.cores)))
      end
      if not W and redis.call('ZSCORE', K.QUEUE, id) then reserve(R) end
    elseif redis.call('HGET', K.task(id), F.state) ~= S.Queued then
      redis.call('ZREM', K.QUEUE, id)              -- an entry left behind: drop it
    else
      local R = ask(id)
      local W = best(R, fits, math.max(0, math.ceil(R.cores)))
      if W then
        redis.call('ZREM', K.QUEUE, id)
        hand_out(id, W, R)
      else
        reserve(R)
      end
    end
    if #out / 4 >= want or seen >= scan then break end
  end
end
local units = {}
for k = 2, #out, 4 do table.insert(units, out[k]) end
return {out, heads > 0 and command_heads(units, heads) or {}}
