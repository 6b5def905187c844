-- Shared helpers, part 3 (after lib_stop.lua): what is done to every task of a job - submit,
-- cancel, finish, fail (fail_on_task_failure, a parent that failed), requeue - as the job's op,
-- a step of STEP_TASKS tasks at a time.  One step for a 100,000-task job would block Redis for
-- seconds; steps block it for milliseconds, and the promise holds between them: the job is
-- marked first (Canceling, Failed, finishing: dispatch.lua and start.lua refuse its tasks from
-- then on) and the op's first step stops what runs on a worker (job_active) before any queued
-- task, so those get their signal from the call that started it.  A client that stops midway
-- leaves the op in JOB_OPS, and the leading scheduler finishes it (job_step.lua).  While an op
-- is in progress the job's state does not follow its tasks (job_refresh waits for its end).

-- Task t of job j submitted: Submitted -> Validating -> Queued, waiting for its dependencies
-- (task numbers, comma-separated; nil: those the record holds) that have not ended.
local function submit_task(j, t, deps, score, ts)
  local id = j .. '.' .. t
  local tk = K.task(id)
  deps = deps or redis.call('HGET', tk, 'deps') or ''
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
  enter('task', id, S.Queued, {ts = ts, via = {S.Submitted, S.Validating}})
  -- a sweep whose instances were all canceled one by one before submit ends now
  if is_master(id) then master_refresh(id, ts) end
end

-- HPC Pack's job requeue of one task (docs/hpc-pack.md 2.4): Finished tasks stay Finished, tasks
-- explicitly canceled before they ran stay Canceled, every other task is queued again (a
-- running one once it is stopped).
local function requeue_one(id, ts, rmsg, out)
  local v = redis.call('HMGET', K.task(id), F.state, F.explicit, F.finish)
  local tst, explicit = v[1], v[2] == '1'
  if (tst == S.Canceled and explicit) or (tst == S.Finished and v[3] == '1') then
    return     -- canceled on purpose: stays Canceled; finished by the user: stays Finished
  elseif is_master(id) then
    if tst ~= S.Canceling then requeue_master(id, ts) end
  elseif tst == S.Failed or tst == S.Canceled then
    enter('task', id, S.Queued, {ts = ts, count = 'requeue_count'})
  elseif tst == S.Running or tst == S.Canceling then
    requeue_running(id, ts, rmsg, out)
  end
end

-- Start op `kind` on job j (replacing any op in progress: a cancel overrides a submit or a
-- requeue not yet done); o: the cancel options (lib_stop.lua), or rmsg for a requeue.
local function begin_op(j, kind, o)
  redis.call('HSET', K.job(j), F.op, kind, F.op_at, 0, 'op_end',
             redis.call('HGET', K.job(j), 'ntasks'), 'op_args', cjson.encode(o))
  redis.call('SADD', K.JOB_OPS, j)
end

-- One step of job j's op: up to `budget` tasks, revokes appended to out.  A task the op finds
-- still Configuring in a submitted job (a submit op it replaced had not reached it) is submitted
-- first, so every task of a submitted job has its queue score.  Returns true once the op is
-- done (the job's state then follows its tasks again); else out gets ('', 'more:<j>'), which
-- the caller's Store follows with job_step calls.
local function step_op(j, budget, out)
  local jk = K.job(j)
  local v = redis.call('HMGET', jk, F.op, F.op_at, 'op_end', 'op_args', F.state, 'band', F.seq0)
  if not v[1] or not v[5] then
    redis.call('SREM', K.JOB_OPS, j)            -- done already, or the job was purged
    return true
  end
  local kind, t, last = v[1], num(v[2]), num(v[3])
  local o = cjson.decode(v[4])
  local base = v[7] and num(v[6]) + num(v[7])
  local ts = now()
  if t == 0 then
    if kind ~= 'submit' and kind ~= 'requeue' then
      for _, id in ipairs(redis.call('SMEMBERS', K.job_active(j))) do cancel_unit(id, ts, o, out) end
    end
    t = 1
  end
  local stop = budget + t
  while t <= last and t < stop do
    local id = j .. '.' .. t
    local tv = redis.call('HMGET', K.task(id), F.state, 'submit_time')
    if base and not tv[2] then submit_task(j, t, nil, base + t, ts) end
    if kind == 'requeue' then
      requeue_one(id, ts, o.rmsg, out)
    elseif kind ~= 'submit' and not TASK_END[tv[1]] then
      if is_master(id) then cancel_master(id, ts, o, out) else cancel_unit(id, ts, o, out) end
    end
    t = t + 1
  end
  if t <= last then
    redis.call('HSET', jk, F.op_at, t)
    table.insert(out, '')
    table.insert(out, 'more:' .. j)
    return false
  end
  redis.call('HDEL', jk, F.op, F.op_at, 'op_end', 'op_args')
  redis.call('SREM', K.JOB_OPS, j)
  job_refresh(j, ts)
  wakeup()
  return true
end

-- Configuring -> Submitted -> Validating -> Queued for job j (checked by the caller), then its
-- tasks by its submit op; its parents and hold are taken into account first, so its tasks wait
-- in its waiting set while it is blocked.  A parent that already failed fails it at once (its
-- tasks are submitted and canceled by the fail op instead).
local function submit_job(j, band, ts, out)
  local jk = K.job(j)
  local n = num(redis.call('HGET', jk, 'ntasks'))
  local seq = redis.call('INCRBY', K.SEQ, n) - n
  local failed, fstate = wait_for_parents(j)
  redis.call('HSET', jk, 'band', int(band), F.seq0, int(seq), 'submit_time', ts)
  local hold = redis.call('HGET', jk, 'hold_until')
  if hold and tonumber(hold) > tonumber(ts) then
    redis.call('HSET', jk, F.held, '1')
    redis.call('ZADD', K.HELD, hold, j)
  end
  enter('job', j, S.Queued, {ts = ts, via = {S.Submitted, S.Validating}})
  if failed then
    JOBS.parent_failed(j, failed, fstate, ts, out)
  else
    begin_op(j, 'submit', {})
    step_op(j, STEP_TASKS, out)
  end
  wakeup()
end
