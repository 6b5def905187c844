-- Shared helpers, part 2 (after lib.lua): stopping things (cancel, requeue, the end of an
-- attempt).

-- === cancel and requeue ======================================================================
-- opts: qmsg (queued), rmsg (running), force, grace, explicit, graceful, finish (HPC Pack's
-- Finish: stopped the same way, but what had not started and what is stopped end Finished with
-- the message); revokes appended to out.

-- Cancel one task or instance by HPC Pack's table (graceful: a running one is left to finish).
-- A cancel overrides a requeue still waiting on a stop (cancel_requeue).
local function cancel_unit(id, ts, o, out)
  local tk = K.task(id)
  local st = redis.call('HGET', tk, F.state)
  if TASK_END[st] then return end
  redis.call('HDEL', tk, 'cancel_requeue')
  if o.graceful and (st == S.Running or st == S.Canceling) then return end
  if o.finish then redis.call('HSET', tk, F.finish, '1') end
  if st == S.Running then
    redis.call('HSET', tk, 'cancel_error', o.rmsg, 'cancel_force', o.force and '1' or '0',
               'cancel_grace', o.grace or '', 'cancel_time', ts)
    enter('task', id, S.Canceling, {ts = ts, from = st})
    table.insert(out, redis.call('HGET', tk, F.celery_id) or '')
    table.insert(out, 'terminate')
  elseif st == S.Canceling then
    if o.force then
      redis.call('HSET', tk, 'cancel_force', '1')
      table.insert(out, redis.call('HGET', tk, F.celery_id) or '')
      table.insert(out, 'terminate')
    end
  elseif st == S.Dispatching or TASK_PENDING[st] then
    if st == S.Dispatching then
      table.insert(out, redis.call('HGET', tk, F.celery_id) or '')
      table.insert(out, 'discard')
    end
    if o.qmsg ~= '' or not o.finish then redis.call('HSET', tk, 'error', o.qmsg) end
    if o.explicit then redis.call('HSET', tk, F.explicit, '1') end
    enter('task', id, o.finish and S.Finished or S.Canceled, {ts = ts})
  end
end

-- Cancel a sweep master: the master ends Canceled, each instance by the table, and instances
-- never materialized are cut off (counted Canceled, never dispatched), whatever the master's
-- state (before submit too: implicit_state then says Canceled, not Queued).
local function cancel_master(m, ts, o, out)
  local mk = K.task(m)
  local st = redis.call('HGET', mk, F.state)
  if TASK_END[st] then return end
  if st ~= S.Canceling then
    if o.qmsg ~= '' or not o.finish then redis.call('HSET', mk, 'error', o.qmsg) end
    if o.explicit then redis.call('HSET', mk, F.explicit, '1') end
    if o.finish then redis.call('HSET', mk, F.finish, '1') end
    local v = redis.call('HMGET', mk, F.total, F.next, F.pre)
    if num(v[1]) > num(v[2]) then
      -- the tail never handed out: Canceled (Finished when the sweep is finished)
      local rest = num(v[1]) - num(v[2]) - num(v[3])
      redis.call('HSET', mk, F.cut, int(num(v[2])), F.next, v[1])
      if o.finish then redis.call('HSET', mk, F.cut_as, S.Finished) end
      if rest ~= 0 then
        redis.call('HINCRBY', mk, 'i:' .. (o.finish and S.Finished or S.Canceled), int(rest))
      end
    end
    if TASK_PENDING[st] and st ~= S.Queued then
      enter('task', m, S.Canceled, {ts = ts})   -- not submitted: nothing was dispatched
      return
    end
    enter('task', m, S.Canceling, {ts = ts})    -- out of the queue (or the waiting set)
    for _, i in ipairs(redis.call('LRANGE', K.sweep_redo(m), 0, -1)) do
      cancel_unit(m .. '.' .. i, ts, o, out)
    end
    -- instances waiting out a --retry-delay (DELAYED holds only failing units, so it is short)
    for _, x in ipairs(redis.call('ZRANGE', K.DELAYED, 0, -1)) do
      if master_of(x) == m then cancel_unit(x, ts, o, out) end
    end
  end
  for _, i in ipairs(redis.call('SMEMBERS', K.sweep_active(m))) do
    cancel_unit(m .. '.' .. i, ts, o, out)
  end
  master_refresh(m, ts)
end

-- Cancel every unfinished task of job j except `skip` (job cancel, job runtime,
-- fail_on_task_failure).
local function cancel_all(j, ts, o, skip, out)
  for t = 1, num(redis.call('HGET', K.job(j), 'ntasks')) do
    local id = j .. '.' .. t
    if id ~= skip then
      if is_master(id) then
        cancel_master(id, ts, o, out)
      else
        cancel_unit(id, ts, o, out)
      end
    end
  end
end

-- A sweep master queues its Failed and Canceled instances (and the tail a cancel cut off), and
-- is placed like any task (the queue, or the waiting set while its dependencies have not ended).
-- Returns how many instances went back to the queue.
local function requeue_master(m, ts)
  local mk = K.task(m)
  local n = 0
  local v = redis.call('HMGET', mk, F.total, F.cut, F.pre, F.cut_as)
  if v[2] then
    local rest = num(v[1]) - num(v[2]) - num(v[3])
    redis.call('HSET', mk, F.next, v[2])
    redis.call('HDEL', mk, F.cut, F.cut_as)
    if rest ~= 0 then redis.call('HINCRBY', mk, 'i:' .. (v[4] or S.Canceled), int(-rest)) end
    n = n + rest
  end
  for _, i in ipairs(redis.call('SMEMBERS', K.sweep_ended(m))) do
    local iid = m .. '.' .. i
    local ist = redis.call('HGET', K.task(iid), F.state)
    if ist == S.Failed or ist == S.Canceled then
      enter('task', iid, S.Queued, {ts = ts, count = 'requeue_count'})
      n = n + 1
    end
  end
  redis.call('DEL', K.sweep_ended(m))
  if n > 0 then
    -- an instance's place already placed it (an ended master entered Queued); the cut tail alone
    -- did not
    if TASK_END[redis.call('HGET', mk, F.state)] then
      enter('task', m, S.Queued, {ts = ts})
    else
      place_in_job(m)
    end
    redis.call('HINCRBY', mk, 'requeue_count', 1)
  end
  return n
end

-- HPC Pack's requeue of a running task: canceled now, queued again once its processes are gone
-- (end_attempt sees the mark).
local function requeue_running(id, ts, rmsg, out)
  cancel_unit(id, ts, {qmsg = '', rmsg = rmsg}, out)
  redis.call('HSET', K.task(id), 'cancel_requeue', '1')
end

-- The reply of a cancel or requeue: the state after, then the revokes to publish.
local function reply(key, out)
  local res = {redis.call('HGET', key, F.state)}
  for _, x in ipairs(out) do table.insert(res, x) end
  return res
end

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
  local stopping = jv[1] == S.Canceling or JOB_END[jv[1]] or jv[4] == '1'
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
      local stop = string.format(MSG.stopped_by_job_failure, id)
      local o = {qmsg = stop, rmsg = stop}
      local revokes = {}
      local mid = i and (j .. '.' .. t) or id
      cancel_all(j, ts, o, mid, revokes)
      if i then cancel_master(mid, ts, o, revokes) end
      for _, x in ipairs(revokes) do table.insert(out, x) end
    end
  end
  if #out > 3 then wakeup() else wakeup(v[5]) end
  return out
end
