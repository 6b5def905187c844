-- Shared helpers, prepended (after the generated schema: S, WS, F, K, the tables and MSG) to
-- every hpcq script.
-- Rule for every script: check everything first, raise with fail() before the first write, so
-- a refused step changes nothing.  enter() re-checks each move; if that ever fails, a script
-- skipped a check: a bug, reported as such.

local function fail(code, msg) error('HPCQ-' .. code .. ' ' .. msg) end
local function num(v) return tonumber(v) or 0 end
-- An integer argument for Redis: Lua numbers are floats, and Redis refuses "-0" or "1e+20".
local function int(v) return string.format('%d', v) end

local function now()
  local t = redis.call('TIME')
  return string.format('%d.%06d', t[1], t[2])
end

-- Split 'J.T' / 'J.T.I' into parts (strings).
local function split_id(id)
  local j, t, i = string.match(id, '^(%d+)%.(%d+)%.?(%d*)$')
  if i == '' then i = nil end
  return j, t, i
end

local function master_of(id)
  local j, t, i = split_id(id)
  if i then return j .. '.' .. t, i end
end

-- The state of job j; refuses (before any write) if there is no such job.
local function job_state(j)
  local st = redis.call('HGET', K.job(j), F.state)
  if not st then fail('NOTFOUND', string.format(MSG.job_not_found, j)) end
  return st
end

-- Who may change job j (scheduler/api/permissions.py): its owner or an administrator (ADMINS,
-- as the scheduler publishes it); user '' is hpcq's own (a worker, the scheduler), not checked.
-- Every user operation (cancel, requeue, modify, finish) checks it first, in its own step.
local function check_permitted(j, user, action, what)
  if user == '' then return end
  local v = redis.call('HMGET', K.job(j), 'owner', F.state)
  if not v[2] then fail('NOTFOUND', string.format(MSG.job_not_found, j)) end
  if v[1] == user then return end
  for name in string.gmatch(redis.call('GET', K.ADMINS) or '', '[^,]+') do
    if string.match(name, '^%s*(.-)%s*$') == user then return end
  end
  fail('PERM', string.format(MSG.not_permitted, action, what,
                             (v[1] and v[1] ~= '') and v[1] or 'nobody', user))
end

-- A job being stopped - Canceling, ended (a fail op may still be going over its tasks) or
-- being finished by the user (its finish flag): nothing of it starts any more (dispatch.lua,
-- start.lua) and nothing of it goes back to the queue by itself (end_attempt).
local function job_stopping(state, finish)
  return state == S.Canceling or JOB_END[state] or finish == '1'
end

local function is_master(id) return redis.call('HEXISTS', K.task(id), F.total) == 1 end

-- The one rule for a sweep instance that has no record yet: before the sweep is submitted it is
-- in its master's state; after, Queued, unless a cancel of the master cut it off (Canceled).
-- Returns nil for an id that is no instance of a sweep.
local function implicit_state(id)
  local m, i = master_of(id)
  if not m then return nil end
  local v = redis.call('HMGET', K.task(m), F.total, F.cut, F.state, F.cut_as)
  if not v[1] or tonumber(i) < 1 or tonumber(i) > num(v[1]) then return nil end
  if v[2] and tonumber(i) > num(v[2]) then return v[4] or S.Canceled end
  if TASK_PENDING[v[3]] and v[3] ~= S.Queued then return v[3] end
  return S.Queued
end

-- A unit's state, its record's or the implicit one.
local function unit_state(id)
  return redis.call('HGET', K.task(id), F.state) or implicit_state(id)
end

-- One entry of the event stream (schema.EVENT_FIELDS): every field always present, so Redis
-- keeps the names once per stream node; trimmed to about EV.KEEP entries.
local function emit(kind, id, from, to, node, msg, ts)
  redis.call('XADD', K.EVENTS, 'MAXLEN', '~', EV.KEEP, '*', E.ts, ts or now(), E.kind, kind,
             E.id, id, E.from, from or '', E.state, to, E.node, node or '', E.msg, msg or '')
end

-- A worker's state, with its event (a move to the state it is in is none).
local function worker_enter(w, from, to, msg, ts)
  if from == to then return end
  redis.call('HSET', K.worker(w), F.state, to)
  emit('worker', w, from, to, w, msg, ts)
end

-- One more line of a task's history (time, state, node, message), the oldest lines dropped
-- once it passes EV.HISTORY_BYTES.  APPEND leaves the string room to grow (up to its size
-- again): at an end it is written once more at its exact size (measured 392 -> 312 bytes).
local function history_add(id, ts, to, node, msg)
  local hk, sep = K.task_history(id), EV.HISTORY_SEP
  local n = redis.call('APPEND', hk, ts .. sep .. to .. sep .. node .. sep
                       .. string.gsub(msg, '[\t\n]', ' ') .. '\n')
  if n > EV.HISTORY_BYTES or TASK_END[to] then
    local h = redis.call('GET', hk)
    local cut = n > EV.HISTORY_BYTES and string.find(h, '\n', n - EV.HISTORY_BYTES, true)
    redis.call('SET', hk, cut and string.sub(h, cut + 1) or h)
  end
end

-- Nudge the dispatcher: with a worker name when only that worker's slot came free (it then
-- dispatches to that worker alone), '*' when the queue changed.
local function wakeup(worker)
  redis.call('LPUSH', K.WAKEUP, worker or '*')
  redis.call('LTRIM', K.WAKEUP, 0, 999)
end

-- What this step gave the dispatcher: work (a unit into the queue) or a slot (a unit off its
-- worker).  A step that often gives neither (a cancel of a queued task) nudges it only if so.
local GAVE = {}

local function enqueue(id)
  GAVE.work = true
  redis.call('ZADD', K.QUEUE, redis.call('HGET', K.task(id), F.score), id)
end

local function counts_of(key, prefix, set)
  local fields, n = {}, 0
  for s in pairs(set) do n = n + 1; fields[n] = prefix .. s end
  local total = 0
  for _, v in ipairs(redis.call('HMGET', key, unpack(fields))) do total = total + num(v) end
  return total
end

-- What a previous attempt left behind, cleared so a requeued task starts clean.
local RESULT_FIELDS = {'exit_code', 'error', 'output', 'end_time', 'start_time', 'pid',
  'cpu_user', 'cpu_sys', 'max_rss', 'cancel_error', 'cancel_force', 'cancel_grace',
  'cancel_requeue', 'cancel_time', F.explicit, F.token, F.celery_id, F.unlisted, 'worker_pid',
  F.finish}

-- === the one way into a state ================================================================
local EFFECT = {}
-- Job-level steps used by effects but defined further down (lib_jobs.lua): parents.
local JOBS = {}

-- Move job j or task/instance id to state `to`: the state, the per-state counts of its parent,
-- an event (and a task's history line), then what entering `to` does (schema.TASK_ON_ENTER /
-- JOB_ON_ENTER).
-- ctx: ts (required), msg (the event's message; else EVENT_MESSAGE's fields), via (states
-- passed through on the way, as submit passes Submitted and Validating: each move is checked,
-- recorded in the history and the events and has its effects, but the record and the counts
-- are written once), and what an effect needs (node, count).
local function enter(kind, id, to, ctx)
  local task = kind ~= 'job'
  local key = task and K.task(id) or K.job(id)
  -- one read: the state, a task's node, the fields holding the message
  local want = {F.state, F.node}
  local mfields = ctx.msg == nil and EVENT_MESSAGE[to] or {}
  for _, f in ipairs(mfields) do table.insert(want, f) end
  local v = redis.call('HMGET', key, unpack(want))
  local from = ctx.from or v[1]
  local path = {}
  for _, s in ipairs(ctx.via or {}) do table.insert(path, s) end
  table.insert(path, to)
  local table_ = task and TASK_T or JOB_T
  local at = from
  for _, s in ipairs(path) do
    if not table_[at] or not table_[at][s] then
      error('HPCQ-BUG ' .. kind .. ' ' .. id .. ' cannot go from ' .. tostring(at) .. ' to ' .. s
            .. ' (a script skipped its check)')
    end
    at = s
  end
  local msg = ctx.msg or ''
  for k = 3, #want do
    if v[k] and v[k] ~= '' then msg = v[k]; break end
  end
  local node = ''
  redis.call('HSET', key, F.state, to, F.changed, ctx.ts)
  if task then
    if TASK_ON_WORKER[to] or TASK_ON_WORKER[from] then node = ctx.node or v[2] or '' end
    for _, s in ipairs(path) do history_add(id, ctx.ts, s, node, s == to and msg or '') end
    local m = master_of(id)
    local ck, prefix = m and K.task(m) or K.job(split_id(id)), m and 'i:' or 'c:'
    redis.call('HINCRBY', ck, prefix .. from, -1)
    redis.call('HINCRBY', ck, prefix .. to, 1)
  end
  at = from
  for _, s in ipairs(path) do
    emit(kind, id, at, s, node, s == to and msg or '', ctx.ts)
    for _, name in ipairs((kind == 'job' and JOB_ON_ENTER or TASK_ON_ENTER)[s]) do
      EFFECT[name](id, at, s, ctx)
    end
    at = s
  end
end

-- The job's state follows its tasks: Running once one runs; once none is left to run, Canceled
-- if it was being canceled, else Failed if any task Failed, else Finished.  Not while an op goes
-- over its tasks (lib_ops.lua): its last step refreshes it.
--
-- Why a job failed: HPC Pack's "N task(s) failed." when only tasks failed; a sweep canceled with
-- failed instances counts as a failure too, and its job's error names it, else the job would
-- show Failed with only a Canceled task and no failed one.
local function job_failure_text(jk, failed, sweeps)
  if sweeps == 0 then return string.format(MSG.tasks_failed, int(failed)) end
  local m = redis.call('HGET', jk, F.failed_sweep)
  local n = m and int(num(redis.call('HGET', K.task(m), 'i:' .. S.Failed))) or 0
  if failed == 0 and sweeps == 1 and m then
    return string.format(MSG.sweep_canceled_failed, m, n, n == 1 and '' or 's')
  end
  return string.format(MSG.sweeps_canceled_failed, int(failed), int(sweeps), m or '?', n)
end

local function job_refresh(j, ts)
  local jk = K.job(j)
  local jv = redis.call('HMGET', jk, F.state, F.op)
  local st = jv[1]
  if st == S.Configuring or not st or jv[2] then return end
  local left = counts_of(jk, 'c:', TASK_ON_WORKER) + counts_of(jk, 'c:', TASK_PENDING)
  if left == 0 then
    if st == S.Canceling then
      enter('job', j, S.Canceled, {ts = ts})
    elseif st == S.Queued or st == S.Running then
      -- a sweep canceled while instances ran counts as a failure, as a task killed running does
      local v = redis.call('HMGET', jk, 'c:' .. S.Failed, F.failed_sweeps, F.finish)
      local nf = num(v[1]) + num(v[2])
      if v[3] == '1' then
        enter('job', j, S.Finished, {ts = ts})     -- finished by the user, with its message
      elseif nf > 0 then
        redis.call('HSET', jk, 'error', job_failure_text(jk, num(v[1]), num(v[2])))
        enter('job', j, S.Failed, {ts = ts})
      else
        enter('job', j, S.Finished, {ts = ts})
      end
    end
  elseif st == S.Queued and num(redis.call('HGET', jk, 'c:' .. S.Running)) > 0 then
    enter('job', j, S.Running, {ts = ts})
  end
end

-- A sweep master's state follows its instances, as a job's follows its tasks.
local function master_refresh(m, ts)
  local mk = K.task(m)
  local st = redis.call('HGET', mk, F.state)
  if st == S.Canceling and redis.call('SCARD', K.sweep_active(m)) == 0
      and redis.call('LLEN', K.sweep_redo(m)) == 0 then
    enter('task', m, redis.call('HGET', mk, F.finish) == '1' and S.Finished or S.Canceled, {ts = ts})
  elseif st == S.Queued or st == S.Running then
    local v = redis.call('HMGET', mk, F.total, 'i:' .. S.Finished, 'i:' .. S.Failed, 'i:' .. S.Canceled,
                         'max_failed_instances')
    if num(v[2]) + num(v[3]) + num(v[4]) >= num(v[1]) then
      -- every instance ended before one started (canceled one by one): the master passes
      -- through Running, as a task never goes Queued -> Finished/Failed
      if st == S.Queued then enter('task', m, S.Running, {ts = ts}) end
      if num(v[3]) > 0 then
        redis.call('HSET', mk, 'error', string.format(MSG.instances_failed, v[3]))
      end
      -- it fails once more of its instances failed than it allows (max_failed_instances)
      if num(v[3]) > num(v[5]) then
        enter('task', m, S.Failed, {ts = ts})
      else
        enter('task', m, S.Finished, {ts = ts})
      end
      return            -- ended: the job was refreshed by the master's end
    end
  end
  job_refresh(split_id(m), ts)
end

-- A job starts its clock when its first task runs (HPC Pack's job Runtime).
local function job_started(j, ts)
  local jk = K.job(j)
  if redis.call('HSETNX', jk, 'start_time', ts) == 1 then
    local rt = num(redis.call('HGET', jk, 'runtime'))
    if rt > 0 then redis.call('ZADD', K.DEADLINES, tonumber(ts) + rt, j) end
  end
  if redis.call('HGET', jk, F.state) == S.Queued then enter('job', j, S.Running, {ts = ts}) end
end

-- A job whose tasks may not start yet: parent jobs not ended (pwait) or a hold in the future
-- (held).  Its tasks wait in its waiting set, as tasks with dependencies do.
local function job_blocked(j)
  local v = redis.call('HMGET', K.job(j), F.pwait, F.held)
  return num(v[1]) > 0 or v[2] == '1'
end

-- Job j waits for its parents that have not ended (each parent's children set holds it; pwait
-- counts them).  Returns the first parent that ended other than Finished (nil if none or if the
-- job runs on parent failure) and its state.  A parent purged since counts as ended well.
local function wait_for_parents(j)
  local jk = K.job(j)
  local jv = redis.call('HMGET', jk, 'parents', 'run_on_parent_failure')
  local pwait, failed, fstate = 0, nil, nil
  for p in string.gmatch(jv[1] or '', '%d+') do
    local pst = redis.call('HGET', K.job(p), F.state)
    if pst and not JOB_END[pst] then
      redis.call('SADD', K.job_children(p), j)
      pwait = pwait + 1
    elseif pst and pst ~= S.Finished and jv[2] ~= '1' and not failed then
      failed, fstate = p, pst
    end
  end
  redis.call('HSET', jk, F.pwait, pwait)
  return failed, fstate
end

-- Job j ended: it waits for no parent any more.
local function stop_waiting_for_parents(j)
  for p in string.gmatch(redis.call('HGET', K.job(j), 'parents') or '', '%d+') do
    redis.call('SREM', K.job_children(p), j)
  end
  redis.call('HSET', K.job(j), F.pwait, 0)
end

-- A task or sweep master reached an end state: release the tasks that waited for it.
local function release_dependents(j, t)
  local rk = K.task_rdeps(j .. '.' .. t)
  local waiting = redis.call('SMEMBERS', rk)
  redis.call('DEL', rk)
  local blocked = job_blocked(j)
  for _, d in ipairs(waiting) do
    local did = j .. '.' .. d
    local left = redis.call('HINCRBY', K.task(did), F.nwait, -1)
    if left <= 0 and not blocked and redis.call('SREM', K.job_waiting(j), d) == 1 then
      if redis.call('HGET', K.task(did), F.state) == S.Queued then enqueue(did) end
    end
  end
end

-- Job j may start its tasks (its parents ended, its hold passed): those of its waiting set
-- whose own dependencies have ended go to the queue.
local function job_unblock(j)
  if job_blocked(j) then return end
  for _, t in ipairs(redis.call('SMEMBERS', K.job_waiting(j))) do
    local id = j .. '.' .. t
    local v = redis.call('HMGET', K.task(id), F.nwait, F.state)
    if num(v[1]) <= 0 and (v[2] == S.Queued or v[2] == S.Running) then
      redis.call('SREM', K.job_waiting(j), t)
      enqueue(id)
    end
  end
end

-- Only what was placed: a pending unit, or a sweep master leaving Running (a Running master
-- is queued while it has instances to hand out).
function EFFECT.unplace(id, from)
  if from == S.Queued then redis.call('ZREM', K.DELAYED, id) end
  local m, i = master_of(id)
  if m then
    if TASK_PENDING[from] then redis.call('LREM', K.sweep_redo(m), 0, i) end
  elseif TASK_PENDING[from] or (from == S.Running and is_master(id)) then
    local j, t = split_id(id)
    redis.call('ZREM', K.QUEUE, id)
    redis.call('SREM', K.job_waiting(j), t)
  end
end

-- What task id was given: cores, memory, and whether it holds GPUs or is exclusive.
local function given(id)
  local a = redis.call('HMGET', K.task(id), 'a_cores', 'a_memory', 'a_gpus', 'a_excl')
  return tonumber(a[1]) or 1, num(a[2]), (a[3] or '') ~= '' or (a[4] or '') ~= ''
end

-- What a worker's tasks were given, kept beside its task set so that a dispatch reads a few
-- fields of the worker instead of every task on it: cores and memory summed (u_cores,
-- u_memory), the tasks per job (worker_jobs), and the few tasks that hold GPUs or are exclusive
-- (worker_special).  sign: 1 as a task joins the set, -1 as it leaves it.
local function worker_hold(w, id, sign)
  local cores, memory, special = given(id)
  local wk = K.worker(w)
  redis.call('HINCRBY', wk, F.u_cores, sign * cores)
  if memory ~= 0 then redis.call('HINCRBY', wk, F.u_memory, sign * memory) end
  local j = split_id(id)
  if redis.call('HINCRBY', K.worker_jobs(w), j, sign) <= 0 then
    redis.call('HDEL', K.worker_jobs(w), j)
  end
  if special then redis.call(sign > 0 and 'SADD' or 'SREM', K.worker_special(w), id) end
end

-- The same from the worker's task set alone (each heartbeat: a drift, if one ever crept in -
-- a record purged under a stale entry - lasts a beat at most).
local function worker_recount(w)
  local jk, sk = K.worker_jobs(w), K.worker_special(w)
  redis.call('DEL', jk, sk)
  local cores, memory = 0, 0
  for _, id in ipairs(redis.call('SMEMBERS', K.worker_tasks(w))) do
    local c, m, special = given(id)
    cores, memory = cores + c, memory + m
    redis.call('HINCRBY', jk, split_id(id), 1)
    if special then redis.call('SADD', sk, id) end
  end
  redis.call('HSET', K.worker(w), F.u_cores, cores, F.u_memory, memory)
end

-- Task id out of worker w's set (and out of what the set's tasks hold).
local function worker_drop(w, id)
  if redis.call('SREM', K.worker_tasks(w), id) == 1 then worker_hold(w, id, -1) end
end

function EFFECT.leave_worker(id, from)
  if not TASK_ON_WORKER[from] then return end
  GAVE.slot = true
  local node = redis.call('HGET', K.task(id), F.node)
  if node then worker_drop(node, id) end
  redis.call('SREM', K.job_active(split_id(id)), id)
  local m, i = master_of(id)
  if m then redis.call('SREM', K.sweep_active(m), i) end
end

function EFFECT.await_start(id, from, to, ctx)
  redis.call('ZADD', K.DISPATCHING, ctx.ts, id)
end

function EFFECT.dispatch_over(id, from)
  if from == S.Dispatching then redis.call('ZREM', K.DISPATCHING, id) end
end

function EFFECT.join_worker(id, from, to, ctx)
  -- (its allocation, a_*, is written before it enters Dispatching: dispatch.lua)
  if redis.call('SADD', K.worker_tasks(ctx.node), id) == 1 then worker_hold(ctx.node, id, 1) end
  redis.call('SADD', K.job_active(split_id(id)), id)
  local m, i = master_of(id)
  if m then redis.call('SADD', K.sweep_active(m), i) end
end

function EFFECT.reset(id, from, to, ctx)
  if TASK_PENDING[from] then return end
  -- a requeue by the user is a new run: its --retry count starts again
  if ctx.count == 'requeue_count' then redis.call('HDEL', K.task(id), F.retry_count) end
  if ctx.count then redis.call('HINCRBY', K.task(id), ctx.count, 1) end
  if is_master(id) then
    if redis.call('HDEL', K.task(id), F.failed_sweeps) == 1 then
      local jk = K.job(split_id(id))
      redis.call('HINCRBY', jk, F.failed_sweeps, -1)
      if redis.call('HGET', jk, F.failed_sweep) == id then redis.call('HDEL', jk, F.failed_sweep) end
    end
    redis.call('HDEL', K.task(id), 'end_time', 'error', F.explicit, F.finish)
  else
    redis.call('HDEL', K.task(id), unpack(RESULT_FIELDS))
  end
end

-- A task or sweep master where the dispatcher finds it: the job's waiting set while its
-- dependencies have not all ended, else the queue.
local function place_in_job(id)
  local j, t = split_id(id)
  if num(redis.call('HGET', K.task(id), F.nwait)) > 0 or job_blocked(j) then
    redis.call('SADD', K.job_waiting(j), t)
  else
    enqueue(id)
  end
end

local function place_unit(id, ts)
  local j, t, i = split_id(id)
  if not i then return place_in_job(id) end
  -- an instance: its master's redo list, and the master placed (an ended one queued again)
  local m = j .. '.' .. t
  redis.call('SREM', K.sweep_ended(m), i)
  redis.call('LPUSH', K.sweep_redo(m), i)
  if TASK_END[redis.call('HGET', K.task(m), F.state)] then
    enter('task', m, S.Queued, {ts = ts})
  else
    place_in_job(m)
  end
end

-- A unit placed again after a command failure (--retry) waits out its delay first (DELAYED;
-- release.lua places it when due).
function EFFECT.place(id, from, to, ctx)
  if ctx.delay and ctx.delay > 0 then
    redis.call('ZADD', K.DELAYED, tonumber(ctx.ts) + ctx.delay, id)
    return
  end
  place_unit(id, ctx.ts)
end

function EFFECT.started(id, from, to, ctx)
  local m = master_of(id)
  -- a master starts with its first instance (below), or passes through Running to its end
  if not m and is_master(id) then return end
  if m and redis.call('HGET', K.task(m), F.state) == S.Queued then
    enter('task', m, S.Running, {ts = ctx.ts})
    redis.call('HSETNX', K.task(m), 'start_time', ctx.ts)
  end
  job_started(split_id(id), ctx.ts)
end

function EFFECT.ended(id, from, to, ctx)
  local j, t, i = split_id(id)
  redis.call('HSET', K.task(id), 'end_time', ctx.ts)
  if to == S.Canceled and not i and num(redis.call('HGET', K.task(id), 'i:' .. S.Failed)) > 0 then
    -- a sweep canceled with instances that failed (killed while running): against its job
    redis.call('HSET', K.task(id), F.failed_sweeps, 1)
    redis.call('HINCRBY', K.job(j), F.failed_sweeps, 1)
    redis.call('HSET', K.job(j), F.failed_sweep, id)
  end
  if i then
    local m = j .. '.' .. t
    if to ~= S.Finished then redis.call('SADD', K.sweep_ended(m), i) end
    master_refresh(m, ctx.ts)
  else
    release_dependents(j, t)
    job_refresh(j, ctx.ts)
  end
end

function EFFECT.job_ended(j, from, to, ctx)
  redis.call('HSET', K.job(j), 'end_time', ctx.ts)
  redis.call('ZREM', K.DEADLINES, j)
  redis.call('ZREM', K.HELD, j)
  redis.call('HDEL', K.job(j), F.held)
  stop_waiting_for_parents(j)
  redis.call('ZADD', K.ENDED, ctx.ts, j)
  JOBS.release_children(j, to, ctx.ts)
end

function EFFECT.job_reopened(j, from, to, ctx)
  -- a new run: its clock (and runtime limit) starts again when a task next runs
  if JOB_END[from] then
    -- a requeue runs it anyway if a parent failed, but after the parents still running
    wait_for_parents(j)
    redis.call('HDEL', K.job(j), 'end_time', 'error', 'start_time', F.finish, F.parent_failed)
    redis.call('ZREM', K.ENDED, j)
  end
end

-- A requeued task brings its ended job back to Queued.
local function job_reopen(j, ts)
  if JOB_END[redis.call('HGET', K.job(j), F.state)] then enter('job', j, S.Queued, {ts = ts}) end
end

-- Give an instance that has no record yet one, in its implicit state.  Until then the master
-- counts it implicitly (total - next - pre); dispatch materializes instances in turn (`next`),
-- and `pre` counts those given a record before their turn (canceled one by one).
local function materialize(id, st, ts, in_turn)
  local m = master_of(id)
  redis.call('HSET', K.task(id), F.state, st, F.changed, ts, 'requeue_count', 0)
  redis.call('HINCRBY', K.task(m), 'i:' .. st, 1)
  if not in_turn then redis.call('HINCRBY', K.task(m), F.pre, 1) end
end
