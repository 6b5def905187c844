-- Shared helpers, prepended (after the generated state tables) to every hpcq script.
-- Rule for every script: check everything first, raise with fail() before the first write, so
-- a refused step changes nothing.

local function fail(code, msg) error('HPCQ-' .. code .. ' ' .. msg) end
local function k_job(j) return PREFIX .. ':job:' .. j end
local function k_waiting(j) return PREFIX .. ':job:' .. j .. ':waiting' end
local function k_task(t) return PREFIX .. ':task:' .. t end
local function k_active(m) return PREFIX .. ':task:' .. m .. ':active' end
local function k_redo(m) return PREFIX .. ':task:' .. m .. ':redo' end
local function k_ended(m) return PREFIX .. ':task:' .. m .. ':ended' end
local function k_rdeps(t) return PREFIX .. ':task:' .. t .. ':rdeps' end
local function k_wtasks(w) return PREFIX .. ':worker:' .. w .. ':tasks' end
local function k_worker(w) return PREFIX .. ':worker:' .. w end
local K_WORKERS = PREFIX .. ':workers'
local K_QUEUE = PREFIX .. ':queue'
local K_DEADLINES = PREFIX .. ':deadlines'
local K_WAKEUP = PREFIX .. ':wakeup'
local K_EVENTS = PREFIX .. ':events'

local function num(v) return tonumber(v) or 0 end

-- The state of job j; refuses (before any write) if there is no such job.
local function job_state(j)
  local st = redis.call('HGET', k_job(j), 'state')
  if not st then fail('NOTFOUND', string.format(MSG.job_not_found, j)) end
  return st
end

local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end

-- Split 'J.T' / 'J.T.I' into parts (strings); master id of an instance.
local function split_id(id)
  local j, t, i = string.match(id, '^(%d+)%.(%d+)%.?(%d*)$')
  if i == '' then i = nil end
  return j, t, i
end

local function emit(kind, id, state, extra)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', 100000, '*', 'kind', kind, 'id', id, 'state', state,
             'info', extra or '')
end

-- Nudge the dispatcher: with a worker name when only that worker's slot came free (it then
-- dispatches to that worker alone), '*' when the queue changed.
local function wakeup(worker)
  redis.call('LPUSH', K_WAKEUP, worker or '*')
  redis.call('LTRIM', K_WAKEUP, 0, 999)
end

-- Move a task (or instance) from -> to through the table, keeping the per-state counts of its
-- job (tasks and sweep masters) or of its master (instances) in step.
local function task_move(id, from, to, ts)
  if not TASK_T[from] or not TASK_T[from][to] then
    fail('ILLEGAL', 'task ' .. id .. ' cannot go from ' .. tostring(from) .. ' to ' .. to)
  end
  local j, t, i = split_id(id)
  redis.call('HSET', k_task(id), 'state', to, 'changed', ts)
  local ck = i and k_task(j .. '.' .. t) or k_job(j)
  local prefix = i and 'i:' or 'c:'
  redis.call('HINCRBY', ck, prefix .. from, -1)
  redis.call('HINCRBY', ck, prefix .. to, 1)
  emit('task', id, to)
end

local function job_move(j, from, to, ts)
  if not JOB_T[from] or not JOB_T[from][to] then
    fail('ILLEGAL', 'job ' .. j .. ' cannot go from ' .. tostring(from) .. ' to ' .. to)
  end
  local jk = k_job(j)
  redis.call('HSET', jk, 'state', to, 'changed', ts)
  if JOB_END[to] then
    redis.call('HSET', jk, 'end_time', ts)
    redis.call('ZREM', K_DEADLINES, j)
  end
  emit('job', j, to)
end

local PENDING = {'Configuring', 'Submitted', 'Validating', 'Queued'}
local ONWORKER = {'Dispatching', 'Running', 'Finishing', 'Canceling'}

local function count_of(key, prefix, names)
  local fields = {}
  for n, s in ipairs(names) do fields[n] = prefix .. s end
  local vals = redis.call('HMGET', key, unpack(fields))
  local total = 0
  for _, v in ipairs(vals) do total = total + num(v) end
  return total
end

-- The job's state follows its tasks: Running once one runs; once none is left to run, Canceled
-- if it was being canceled, else Failed if any task Failed, else Finished.
local function job_refresh(j, ts)
  local jk = k_job(j)
  local st = redis.call('HGET', jk, 'state')
  if st == 'Configuring' or st == false then return end
  local busy = count_of(jk, 'c:', ONWORKER)
  local pending = count_of(jk, 'c:', PENDING)
  if busy + pending == 0 then
    if st == 'Canceling' then
      job_move(j, st, 'Canceled', ts)
    elseif st == 'Queued' or st == 'Running' then
      if num(redis.call('HGET', jk, 'c:Failed')) > 0 then
        local nf = redis.call('HGET', jk, 'c:Failed')
        redis.call('HSET', jk, 'error', nf .. ' task(s) failed.')
        job_move(j, st, 'Failed', ts)
      else
        job_move(j, st, 'Finished', ts)
      end
    end
  elseif st == 'Queued' and num(redis.call('HGET', jk, 'c:Running')) > 0 then
    job_move(j, st, 'Running', ts)
  end
end

-- A job starts its clock when its first task runs (HPC Pack's job Runtime).
local function job_started(j, ts)
  local jk = k_job(j)
  if redis.call('HSETNX', jk, 'start_time', ts) == 1 then
    local rt = num(redis.call('HGET', jk, 'runtime'))
    if rt > 0 then redis.call('ZADD', K_DEADLINES, tonumber(ts) + rt, j) end
  end
  local st = redis.call('HGET', jk, 'state')
  if st == 'Queued' then job_move(j, st, 'Running', ts) end
end

local function enqueue(id)
  local score = redis.call('HGET', k_task(id), 'score')
  redis.call('ZADD', K_QUEUE, score, id)
end

-- A task or sweep master reached an end state: release the tasks that waited for it.
local function release_dependents(j, t)
  local rk = k_rdeps(j .. '.' .. t)
  local waiting = redis.call('SMEMBERS', rk)
  redis.call('DEL', rk)
  for _, d in ipairs(waiting) do
    local did = j .. '.' .. d
    local left = redis.call('HINCRBY', k_task(did), 'nwait', -1)
    if left <= 0 and redis.call('SREM', k_waiting(j), d) == 1 then
      if redis.call('HGET', k_task(did), 'state') == 'Queued' then enqueue(did) end
    end
  end
end

-- Clear what an attempt left behind so a requeued task starts clean.
local RESULT_FIELDS = {'exit_code', 'error', 'output', 'end_time', 'start_time', 'pid',
  'cpu_user', 'cpu_sys', 'max_rss', 'cancel_error', 'cancel_force', 'cancel_grace',
  'cancel_requeue', 'cancel_time', 'explicit', 'token', 'celery_id', 'unlisted', 'worker_pid'}
local function clear_results(id)
  redis.call('HDEL', k_task(id), unpack(RESULT_FIELDS))
end

local function is_master(id) return redis.call('HEXISTS', k_task(id), 'total') == 1 end

-- A sweep master's state follows its instances, as a job's follows its tasks.
local function master_refresh(m, ts)
  local mk = k_task(m)
  local st = redis.call('HGET', mk, 'state')
  local j, t = split_id(m)
  local active = redis.call('SCARD', k_active(m))
  local ended = false
  if st == 'Canceling' and active == 0 and redis.call('LLEN', k_redo(m)) == 0 then
    task_move(m, st, 'Canceled', ts)
    ended = true
  elseif st == 'Queued' or st == 'Running' then
    local v = redis.call('HMGET', mk, 'total', 'i:Finished', 'i:Failed', 'i:Canceled')
    if num(v[2]) + num(v[3]) + num(v[4]) >= num(v[1]) then
      if num(v[3]) > 0 then
        redis.call('HSET', mk, 'error', v[3] .. ' instance(s) failed.')
        task_move(m, st, 'Failed', ts)
      else
        task_move(m, st, 'Finished', ts)
      end
      ended = true
    end
  end
  if ended then
    redis.call('HSET', mk, 'end_time', ts)
    release_dependents(j, t)
  end
  job_refresh(j, ts)
end

-- A task or an instance reached an end state.
local function unit_ended(id, to, ts)
  local j, t, i = split_id(id)
  redis.call('HSET', k_task(id), 'end_time', ts)
  if i then
    local m = j .. '.' .. t
    redis.call('SREM', k_active(m), i)
    if to ~= 'Finished' then redis.call('SADD', k_ended(m), i) end
    master_refresh(m, ts)
  else
    release_dependents(j, t)
    job_refresh(j, ts)
  end
end

-- Put a task or instance that is now Queued where the dispatcher will find it.
local function place_queued(id, ts)
  local j, t, i = split_id(id)
  if i then
    local m = j .. '.' .. t
    redis.call('SREM', k_active(m), i)
    redis.call('SREM', k_ended(m), i)
    redis.call('LPUSH', k_redo(m), i)
    local mst = redis.call('HGET', k_task(m), 'state')
    if TASK_END[mst] then
      task_move(m, mst, 'Queued', ts)
      redis.call('HDEL', k_task(m), 'end_time', 'error', 'explicit')
    end
    enqueue(m)
  elseif num(redis.call('HGET', k_task(id), 'nwait')) > 0 then
    redis.call('SADD', k_waiting(j), t)
  else
    enqueue(id)
  end
end

-- Cancel one task or instance by HPC Pack's table; revokes to publish are appended to out.
local function cancel_unit(id, ts, qmsg, rmsg, force, grace, explicit, out)
  local tk = k_task(id)
  local st = redis.call('HGET', tk, 'state')
  if st == 'Running' then
    task_move(id, st, 'Canceling', ts)
    redis.call('HSET', tk, 'cancel_error', rmsg, 'cancel_force', force, 'cancel_grace', grace,
               'cancel_time', ts)
    table.insert(out, redis.call('HGET', tk, 'celery_id') or '')
    table.insert(out, 'terminate')
  elseif st == 'Canceling' then
    if force == '1' then
      redis.call('HSET', tk, 'cancel_force', '1')
      table.insert(out, redis.call('HGET', tk, 'celery_id') or '')
      table.insert(out, 'terminate')
    end
  elseif st == 'Dispatching' or st == 'Configuring' or st == 'Submitted' or st == 'Validating'
      or st == 'Queued' then
    local j, t, i = split_id(id)
    if st == 'Dispatching' then
      redis.call('SREM', k_wtasks(redis.call('HGET', tk, 'node')), id)
      table.insert(out, redis.call('HGET', tk, 'celery_id') or '')
      table.insert(out, 'discard')
    elseif i then
      redis.call('LREM', k_redo(j .. '.' .. t), 0, i)
    else
      redis.call('ZREM', K_QUEUE, id)
      redis.call('SREM', k_waiting(j), t)
    end
    task_move(id, st, 'Canceled', ts)
    redis.call('HSET', tk, 'error', qmsg)
    if explicit == '1' then redis.call('HSET', tk, 'explicit', '1') end
    unit_ended(id, 'Canceled', ts)
  end
end

-- Cancel a sweep master: the master ends Canceled, each instance by the table, and instances
-- never materialized are cut off (counted Canceled, never dispatched).
local function cancel_master(m, ts, qmsg, rmsg, force, grace, explicit, graceful, out)
  local mk = k_task(m)
  local st = redis.call('HGET', mk, 'state')
  if TASK_END[st] then return end
  if st == 'Configuring' or st == 'Submitted' or st == 'Validating' then
    task_move(m, st, 'Canceled', ts)
    redis.call('HSET', mk, 'error', qmsg, 'end_time', ts)
    if explicit == '1' then redis.call('HSET', mk, 'explicit', '1') end
    return
  end
  if st ~= 'Canceling' then
    task_move(m, st, 'Canceling', ts)
    redis.call('HSET', mk, 'error', qmsg)
    if explicit == '1' then redis.call('HSET', mk, 'explicit', '1') end
    local v = redis.call('HMGET', mk, 'total', 'next', 'pre')
    local rest = num(v[1]) - num(v[2]) - num(v[3])
    if num(v[1]) > num(v[2]) then
      redis.call('HSET', mk, 'cut', num(v[2]), 'next', v[1])
      redis.call('HINCRBY', mk, 'i:Canceled', rest)
    end
    redis.call('ZREM', K_QUEUE, m)
    for _, i in ipairs(redis.call('LRANGE', k_redo(m), 0, -1)) do
      cancel_unit(m .. '.' .. i, ts, qmsg, rmsg, force, grace, explicit, out)
    end
  end
  for _, i in ipairs(redis.call('SMEMBERS', k_active(m))) do
    local iid = m .. '.' .. i
    local ist = redis.call('HGET', k_task(iid), 'state')
    if not (graceful == '1' and (ist == 'Running' or ist == 'Canceling')) then
      cancel_unit(iid, ts, qmsg, rmsg, force, grace, explicit, out)
    end
  end
  master_refresh(m, ts)
end

-- Cancel every unfinished task of job j (job cancel, job runtime, fail_on_task_failure).
local function cancel_all(j, ts, qmsg, rmsg, force, grace, graceful, skip, out)
  local n = num(redis.call('HGET', k_job(j), 'ntasks'))
  for t = 1, n do
    local id = j .. '.' .. t
    if id ~= skip then
      if is_master(id) then
        cancel_master(id, ts, qmsg, rmsg, force, grace, '0', graceful, out)
      else
        local st = redis.call('HGET', k_task(id), 'state')
        if not TASK_END[st] and not (graceful == '1' and (st == 'Running' or st == 'Canceling')) then
          cancel_unit(id, ts, qmsg, rmsg, force, grace, '0', out)
        end
      end
    end
  end
end

-- Failed/Canceled -> Queued for a task or instance: requeue_count + 1, results cleared.
local function requeue_unit(id, st, ts)
  task_move(id, st, 'Queued', ts)
  redis.call('HINCRBY', k_task(id), 'requeue_count', 1)
  clear_results(id)
  place_queued(id, ts)
end

-- A sweep master queues its Failed and Canceled instances (and the tail a cancel cut off).
-- Returns how many instances went back to the queue.
local function requeue_master(m, st, ts)
  local mk = k_task(m)
  local n = 0
  local v = redis.call('HMGET', mk, 'total', 'cut', 'pre')
  if v[2] then
    local rest = num(v[1]) - num(v[2]) - num(v[3])
    redis.call('HSET', mk, 'next', v[2])
    redis.call('HDEL', mk, 'cut')
    redis.call('HINCRBY', mk, 'i:Canceled', -rest)
    n = n + rest
  end
  for _, i in ipairs(redis.call('SMEMBERS', k_ended(m))) do
    local iid = m .. '.' .. i
    local ist = redis.call('HGET', k_task(iid), 'state')
    if ist == 'Failed' or ist == 'Canceled' then
      task_move(iid, ist, 'Queued', ts)
      redis.call('HINCRBY', k_task(iid), 'requeue_count', 1)
      clear_results(iid)
      redis.call('LPUSH', k_redo(m), i)
      n = n + 1
    end
  end
  redis.call('DEL', k_ended(m))
  if n > 0 then
    if TASK_END[st] then
      task_move(m, st, 'Queued', ts)
      redis.call('HDEL', mk, 'end_time', 'error', 'explicit')
    end
    redis.call('HINCRBY', mk, 'requeue_count', 1)
    enqueue(m)
  end
  return n
end

-- A requeued task brings its ended job back to Queued.
local function job_reopen(j, ts)
  local jk = k_job(j)
  local st = redis.call('HGET', jk, 'state')
  if JOB_END[st] then
    job_move(j, st, 'Queued', ts)
    -- a new run: its clock (and runtime limit) starts again when a task next runs
    redis.call('HDEL', jk, 'end_time', 'error', 'start_time')
  end
end

-- Dispatching -> Running for a task or instance (its sweep master and job start too).
local function start_unit(id, ts)
  task_move(id, 'Dispatching', 'Running', ts)
  local j, t, i = split_id(id)
  if i then
    local m = j .. '.' .. t
    if redis.call('HGET', k_task(m), 'state') == 'Queued' then
      task_move(m, 'Queued', 'Running', ts)
      redis.call('HSETNX', k_task(m), 'start_time', ts)
    end
  end
  job_started(j, ts)
end

-- The end of one attempt, token-checked: the worker's result ('exit'), or the attempt was lost
-- ('lost': its worker, its supervising process or its record is gone, or it was stopped by a
-- shutdown).  A task stopped while Canceling ends Failed with its cancel message; a requeue
-- waiting on the stop puts it back in the queue; a lost attempt is queued again if it never
-- started, or if the task is rerunnable and has been rerun fewer than `cap` times.
-- Returns {'ok', end state, message, celery id, mode, ...} or {'stale', state}.
local function end_attempt(id, token, outcome, exit_code, err, output, cpu_user, cpu_sys, max_rss, cap)
  local tk = k_task(id)
  local v = redis.call('HMGET', tk, 'state', 'token', 'cancel_error', 'cancel_requeue', 'node',
                       'auto_requeue_count')
  local st = v[1]
  if not st then return {'stale', 'gone'} end
  if v[2] ~= token or not TASK_ON_WORKER[st] then return {'stale', st} end
  local j, t, i = split_id(id)
  local spec = i and k_task(j .. '.' .. t) or tk
  local rerunnable = redis.call('HGET', spec, 'rerunnable') == '1'
  local jcap = redis.call('HGET', k_job(j), 'task_retry_count')
  if jcap then cap = jcap end
  local ts = now()
  if st == 'Dispatching' and outcome == 'exit' then
    -- it ran, but its start was lost with Redis' last writes: record the start first
    start_unit(id, ts)
    st = 'Running'
  end
  local to, msg, requeue = 'Failed', err, v[4] == '1'
  if st == 'Canceling' then
    msg = v[3]
  elseif outcome == 'lost' then
    local reruns = num(v[6])
    if st == 'Dispatching' then
      to = 'Queued'              -- it never started: always safe to queue again
    elseif rerunnable then
      if reruns < num(cap) then
        to = 'Queued'
      else
        msg = string.format(MSG.retry_limit, err, reruns, cap)
      end
    end
  elseif exit_code == '0' and err == '' then
    to, msg = 'Finished', ''
  end
  redis.call('SREM', k_wtasks(v[5]), id)
  local fields = {'end_time', ts, 'cpu_user', cpu_user, 'cpu_sys', cpu_sys, 'max_rss', max_rss,
                  'output', output}
  if exit_code ~= '' then table.insert(fields, 'exit_code'); table.insert(fields, exit_code) end
  redis.call('HSET', tk, unpack(fields))
  redis.call('HDEL', tk, 'unlisted')
  -- a lost attempt's processes may live on somewhere: with no token, its worker sees it is stale
  if outcome == 'lost' then redis.call('HDEL', tk, 'token') end
  local out = {'ok', to, msg or ''}
  if to == 'Queued' then
    task_move(id, st, 'Queued', ts)
    -- a rerun counts; an attempt that never started was not run, so it does not
    if st ~= 'Dispatching' then redis.call('HINCRBY', tk, 'auto_requeue_count', 1) end
    redis.call('HSET', tk, 'last_error', msg)
    clear_results(id)
    place_queued(id, ts)
    job_refresh(j, ts)
  elseif to == 'Failed' and requeue then
    task_move(id, st, 'Failed', ts)
    task_move(id, 'Failed', 'Queued', ts)
    redis.call('HINCRBY', tk, 'requeue_count', 1)
    clear_results(id)
    place_queued(id, ts)
    out[2] = 'Queued'
    job_refresh(j, ts)
  else
    task_move(id, st, to, ts)
    if msg ~= '' then redis.call('HSET', tk, 'error', msg) else redis.call('HDEL', tk, 'error') end
    -- fail_on_task_failure: the first real failure fails the job at once and stops the rest.
    local jv = redis.call('HMGET', k_job(j), 'state', 'fail_on_task_failure')
    if to == 'Failed' and st ~= 'Canceling' and jv[2] == '1' and not JOB_END[jv[1]]
        and jv[1] ~= 'Canceling' then
      redis.call('HSET', k_job(j), 'error', string.format(MSG.job_failed_on_task, id))
      job_move(j, jv[1], 'Failed', ts)
      local stop = string.format(MSG.stopped_by_job_failure, id)
      local revokes = {}
      local mid = i and (j .. '.' .. t) or id
      cancel_all(j, ts, stop, stop, '0', '', '0', mid, revokes)
      if i then cancel_master(mid, ts, stop, stop, '0', '', '0', '0', revokes) end
      for _, x in ipairs(revokes) do table.insert(out, x) end
    end
    unit_ended(id, to, ts)
  end
  if #out > 3 then wakeup() else wakeup(v[5]) end
  return out
end
