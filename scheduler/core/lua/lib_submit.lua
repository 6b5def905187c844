-- Helpers of the scripts that make jobs (create_job, add_task, submit, new_job) only, after the
-- shared ones: creation, tasks, submission.  Apart so that the scripts of the hot path (dispatch,
-- start, finish) do not define them on every call.

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
  -- a parent that already failed: its tasks are canceled below, in this same step
  local failed, fstate = wait_for_parents(j)
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
