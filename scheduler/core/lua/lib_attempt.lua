-- Shared helpers, part 4 (after lib_ops.lua): the end of an attempt.

-- === attempts ================================================================================
-- The end of one attempt, token-checked: the worker's result ('exit'), or the attempt was lost
-- ('lost': its worker, its supervising process or its record is gone, or it was stopped by a
-- shutdown).  A task stopped while Canceling ends Failed with its cancel message; a requeue
-- waiting on the stop puts it back in the queue (reopening an ended job, as requeue_task does);
-- a lost attempt is queued again if it never started, or if the task is rerunnable and has been
-- rerun fewer than `cap` times - unless its job or sweep is being canceled (a graceful cancel
-- lets running tasks finish, it starts nothing again): then it ends, Failed if it ran.
-- Returns {'ok', end state, message, celery id, mode, ...} or {'stale', state}.
-- Whether exit code `code` (text) is success under `codes` (resources.parse_exit_codes' text:
-- "0,10..20"; '' means only 0).
local function exit_code_ok(code, codes)
  local c = tonumber(code)
  if not c then return false end
  if not codes or codes == '' then return c == 0 end
  for part in string.gmatch(codes, '[^,]+') do
    local lo, hi = string.match(part, '^(-?%d+)%.%.(-?%d+)$')
    lo, hi = tonumber(lo or part), tonumber(hi or part)
    if lo and c >= lo and c <= hi then return true end
  end
  return false
end

local function end_attempt(id, token, outcome, exit_code, err, output, cpu_user, cpu_sys, max_rss, cap)
  local tk = K.task(id)
  local v = redis.call('HMGET', tk, F.state, F.token, 'cancel_error', 'cancel_requeue', F.node,
                       'auto_requeue_count', F.finish, F.retry_count)
  local st = v[1]
  if not st then return {'stale', 'gone'} end
  if v[2] ~= token or not TASK_ON_WORKER[st] then return {'stale', st} end
  local j, t, i = split_id(id)
  local spec = i and K.task(j .. '.' .. t) or tk
  local sv = redis.call('HMGET', spec, F.rerunnable, 'valid_exit_codes', 'retry', 'retry_delay',
                        F.state, 'max_failed_instances')
  local rerunnable = sv[1] == '1'
  local jv = redis.call('HMGET', K.job(j), F.state, 'fail_on_task_failure', 'task_retry_count', F.finish)
  if jv[3] then cap = jv[3] end
  -- nothing of a job or sweep being canceled, finished (or ended) goes back to the queue by itself
  local stopping = job_stopping(jv[1], jv[4])
      or (i and sv[5] == S.Canceling)
  local ts = now()
  if st == S.Dispatching and outcome == O.exit then
    -- it ran, but its start was lost with Redis' last writes: record the start first
    enter('task', id, S.Running, {ts = ts, from = S.Dispatching})
    st = S.Running
  end
  local to, msg, requeue = S.Failed, err, v[4] == '1'
  local delay, count = 0, 'auto_requeue_count'
  if st == S.Canceling then
    msg = v[3]
    if v[7] == '1' then to = S.Finished end     -- finished by the user: with its message
  elseif outcome == O.lost then
    if stopping then
      if st == S.Dispatching then to = S.Canceled end   -- it never started
    elseif st == S.Dispatching then
      to = S.Queued              -- it never started: always safe to queue again
    elseif rerunnable then
      if num(v[6]) < num(cap) then
        to = S.Queued
      else
        msg = string.format(MSG.retry_limit, err, num(v[6]), cap)
      end
    end
  elseif exit_code_ok(exit_code, sv[2]) and (err == '' or err == string.format(MSG.exit_code, exit_code)) then
    to, msg = S.Finished, ''                    -- 0, or one of its valid exit codes
  elseif exit_code ~= '' and not stopping and num(v[8]) < num(sv[3]) then
    -- --retry N: the command failed; it runs again (after --retry-delay), N times at most
    to, count, delay = S.Queued, F.retry_count, num(sv[4])
    msg = string.format(MSG.retrying, int(num(v[8]) + 1), err, int(num(v[8]) + 1), sv[3], sv[4])
  elseif exit_code ~= '' and num(sv[3]) > 0 then
    msg = string.format(MSG.retries_spent, int(num(v[8]) + 1), err, sv[3])
  end
  local fields = {'end_time', ts, 'cpu_user', cpu_user, 'cpu_sys', cpu_sys, 'max_rss', max_rss,
                  'output', output}
  if exit_code ~= '' then table.insert(fields, 'exit_code'); table.insert(fields, exit_code) end
  redis.call('HSET', tk, unpack(fields))
  redis.call('HDEL', tk, F.unlisted)
  -- a lost attempt's processes may live on somewhere: with no token, its worker sees it is stale
  if outcome == O.lost then redis.call('HDEL', tk, F.token) end
  local out = {'ok', to, msg or ''}
  if outcome == O.lost then redis.call('HINCRBY', K.STATS, ST.attempts_lost, 1) end
  if to == S.Queued then
    redis.call('HSET', tk, 'last_error', msg)
    -- a rerun counts; an attempt that never started was not run, so it does not
    local rerun = st ~= S.Dispatching
    if rerun and count == 'auto_requeue_count' then
      redis.call('HINCRBY', K.STATS, ST.attempts_rerun, 1)
    end
    enter('task', id, S.Queued, {ts = ts, from = st, msg = msg, delay = delay,
                                 count = rerun and count or nil})
    job_refresh(j, ts)
  elseif to == S.Failed and requeue then
    -- a requeue waited on this stop: straight back to the queue (a job cancel drops the wait)
    job_reopen(j, ts)
    enter('task', id, S.Queued, {ts = ts, msg = msg or '', count = 'requeue_count'})
    out[2] = S.Queued
    job_refresh(j, ts)
  else
    if msg ~= '' then redis.call('HSET', tk, 'error', msg) else redis.call('HDEL', tk, 'error') end
    -- fail_on_task_failure: the first real failure fails the job at once and stops the rest.
    -- (an instance of a sweep that allows some failures fails the job only past them)
    local fails_job = to == S.Failed and st ~= S.Canceling and jv[2] == '1' and not JOB_END[jv[1]]
        and jv[1] ~= S.Canceling and jv[4] ~= '1'
        and not (i and num(redis.call('HGET', spec, 'i:' .. S.Failed)) + 1 <= num(sv[6]))
    if fails_job then
      redis.call('HSET', K.job(j), 'error', string.format(MSG.job_failed_on_task, id))
      enter('job', j, S.Failed, {ts = ts})
    end
    enter('task', id, to, {ts = ts, from = st})
    if fails_job then
      -- the job is Failed already (nothing of it starts from here); what runs is stopped in
      -- this step, the rest by the job's op (lib_ops.lua)
      local stop = string.format(MSG.stopped_by_job_failure, id)
      begin_op(j, 'fail', {qmsg = stop, rmsg = stop})
      step_op(j, STEP_TASKS, out)
    end
  end
  if #out > 3 then wakeup() else wakeup(v[5]) end
  return out
end
