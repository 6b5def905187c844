-- Shared helpers, part 3 (after lib_stop.lua): jobs as a whole (parents, creation, tasks,
-- submission).

-- === jobs: parents, creation, tasks, submission ==============================================
-- Job j fails without starting because its parent p ended `pst` (Failed or Canceled) and it
-- did not ask to run anyway (run_on_parent_failure): its tasks are canceled with the reason.
function JOBS.parent_failed(j, p, pst, ts)
  local jk = K.job(j)
  local st = redis.call('HGET', jk, F.state)
  if st ~= S.Queued and st ~= S.Running then return end
  local msg = string.format(MSG.parent_failed, p, pst)
  redis.call('HSET', jk, 'error', msg, F.parent_failed, p)
  enter('job', j, S.Failed, {ts = ts})     -- (its end stops it waiting for its other parents)
  local revokes = {}
  cancel_all(j, ts, {qmsg = msg, rmsg = msg}, '', revokes)
end

-- Job j ended `to`: each job waiting for it has one parent fewer to wait for; it starts once
-- none is left (and its hold passed), or fails at once if `to` is not Finished.
function JOBS.release_children(j, to, ts)
  local ck = K.job_children(j)
  for _, c in ipairs(redis.call('SMEMBERS', ck)) do
    local v = redis.call('HMGET', K.job(c), F.state, 'run_on_parent_failure')
    if v[1] and not JOB_END[v[1]] then
      redis.call('HINCRBY', K.job(c), F.pwait, -1)
      if to ~= S.Finished and v[2] ~= '1' then
        JOBS.parent_failed(c, j, to, ts)
      else
        job_unblock(c)
      end
    end
  end
  redis.call('DEL', ck)
  wakeup()
end

-- Refuses (before any write) parents that do not exist.
local function check_parents(parents)
  for p in string.gmatch(parents or '', '%d+') do
    if redis.call('EXISTS', K.job(p)) == 0 then fail('NOTFOUND', string.format(MSG.parent_not_found, p)) end
  end
end

local function create_job(fields, ts)
  local j = redis.call('INCR', K.JOB_SEQ)
  local jk = K.job(j)
  if #fields > 0 then redis.call('HSET', jk, unpack(fields)) end
  redis.call('HSET', jk, F.state, S.Configuring, 'create_time', ts, F.changed, ts, 'ntasks', 0)
  redis.call('ZADD', K.JOBS, j, j)
  emit('job', j, '', S.Configuring, '', '', ts)
  return j
end

-- The job's defaults for what a task does not ask itself (schema.RESOURCES).
local JOB_DEFAULTS = {'cores', 'memory', 'gpus', 'group'}

local function add_task_record(j, fields, ts)
  local jk = K.job(j)
  local t = redis.call('HINCRBY', jk, 'ntasks', 1)
  local id = j .. '.' .. t
  local tk = K.task(id)
  redis.call('HSET', tk, unpack(fields))
  local dv = redis.call('HMGET', jk, unpack(JOB_DEFAULTS))
  for k, f in ipairs(JOB_DEFAULTS) do
    if dv[k] and redis.call('HEXISTS', tk, f) == 0 then redis.call('HSET', tk, f, dv[k]) end
  end
  redis.call('HSET', tk, F.state, S.Configuring, 'create_time', ts, F.changed, ts, 'requeue_count', 0)
  if redis.call('HEXISTS', tk, F.total) == 1 then redis.call('HSET', tk, F.next, 0) end
  redis.call('HINCRBY', jk, 'c:' .. S.Configuring, 1)
  emit('task', id, '', S.Configuring, '', '', ts)
  history_add(id, ts, S.Configuring, '', '')
  return t
end

-- Task t of job j submitted: Submitted -> Validating -> Queued, waiting for its dependencies
-- (task numbers, comma-separated) that have not ended.
local function submit_task(j, t, deps, score, ts)
  local id = j .. '.' .. t
  local tk = K.task(id)
  redis.call('HSET', tk, 'submit_time', ts, F.score, int(score), 'deps', deps)
  if redis.call('HGET', tk, F.state) ~= S.Configuring then return end
  local nwait = 0
  for d in string.gmatch(deps, '%d+') do
    if not TASK_END[redis.call('HGET', K.task(j .. '.' .. d), F.state)] then
      redis.call('SADD', K.task_rdeps(j .. '.' .. d), t)
      nwait = nwait + 1
    end
  end
  redis.call('HSET', tk, F.nwait, nwait)
  -- entering Queued places it: the queue, or the job's waiting set while it waits
  for _, s in ipairs({S.Submitted, S.Validating, S.Queued}) do enter('task', id, s, {ts = ts}) end
  -- a sweep whose instances were all canceled one by one before submit ends now
  if is_master(id) then master_refresh(id, ts) end
end

-- Configuring -> Submitted -> Validating -> Queued for job j and every task (checked by the
-- caller); its parents and hold are taken into account first, so its tasks wait in its waiting
-- set while it is blocked.
local function submit_job(j, band, deps, ts)
  local jk = K.job(j)
  local n = #deps
  local seq = redis.call('INCRBY', K.SEQ, n) - n
  local failed, fstate = wait_for_parents(j)
  -- a failed parent: its tasks wait (blocked) until parent_failed cancels them below
  if failed then redis.call('HSET', jk, F.held, '1') end
  redis.call('HSET', jk, 'band', int(band), 'submit_time', ts)
  local hold = redis.call('HGET', jk, 'hold_until')
  if hold and tonumber(hold) > tonumber(ts) then
    redis.call('HSET', jk, F.held, '1')
    redis.call('ZADD', K.HELD, hold, j)
  end
  for _, s in ipairs({S.Submitted, S.Validating, S.Queued}) do enter('job', j, s, {ts = ts}) end
  for t = 1, n do submit_task(j, t, deps[t], band + seq + t, ts) end
  job_refresh(j, ts)
  if failed then JOBS.parent_failed(j, failed, fstate, ts) end
  wakeup()
end
