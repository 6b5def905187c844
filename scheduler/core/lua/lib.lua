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

local function is_master(id) return redis.call('HEXISTS', K.task(id), F.total) == 1 end

-- The one rule for a sweep instance that has no record yet: before the sweep is submitted it is
-- in its master's state; after, Queued, unless a cancel of the master cut it off (Canceled).
-- Returns nil for an id that is no instance of a sweep.
local function implicit_state(id)
  local m, i = master_of(id)
  if not m then return nil end
  local v = redis.call('HMGET', K.task(m), F.total, F.cut, F.state)
  if not v[1] or tonumber(i) < 1 or tonumber(i) > num(v[1]) then return nil end
  if v[2] and tonumber(i) > num(v[2]) then
    return redis.call('HGET', K.task(m), F.finish) == '1' and S.Finished or S.Canceled
  end
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

local function enqueue(id)
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
-- Job-level steps used by effects but defined further down (after cancel_all): parents.
local JOBS = {}

-- Move job j or task/instance id to state `to`: the state, the per-state counts of its parent,
-- an event (and a task's history line), then what entering `to` does (schema.TASK_ON_ENTER /
-- JOB_ON_ENTER).
-- ctx: ts (required), msg (the event's message; else EVENT_MESSAGE's fields), and what an
-- effect needs (node, count).
local function enter(kind, id, to, ctx)
  local task = kind ~= 'job'
  local key = task and K.task(id) or K.job(id)
  -- one read: the state, a task's node, the fields holding the message
  local want = {F.state, F.node}
  local mfields = ctx.msg == nil and EVENT_MESSAGE[to] or {}
  for _, f in ipairs(mfields) do table.insert(want, f) end
  local v = redis.call('HMGET', key, unpack(want))
  local from = ctx.from or v[1]
  local table_ = task and TASK_T or JOB_T
  if not table_[from] or not table_[from][to] then
    error('HPCQ-BUG ' .. kind .. ' ' .. id .. ' cannot go from ' .. tostring(from) .. ' to ' .. to
          .. ' (a script skipped its check)')
  end
  local msg = ctx.msg or ''
  for k = 3, #want do
    if v[k] and v[k] ~= '' then msg = v[k]; break end
  end
  local node = ''
  if task then
    if TASK_ON_WORKER[to] or TASK_ON_WORKER[from] then node = ctx.node or v[2] or '' end
    redis.call('HSET', key, F.state, to, F.changed, ctx.ts)
    history_add(id, ctx.ts, to, node, msg)
    local m = master_of(id)
    local ck, prefix = m and K.task(m) or K.job(split_id(id)), m and 'i:' or 'c:'
    redis.call('HINCRBY', ck, prefix .. from, -1)
    redis.call('HINCRBY', ck, prefix .. to, 1)
  else
    redis.call('HSET', key, F.state, to, F.changed, ctx.ts)
  end
  emit(kind, id, from, to, node, msg, ctx.ts)
  local effects = (kind == 'job' and JOB_ON_ENTER or TASK_ON_ENTER)[to]
  for _, name in ipairs(effects) do EFFECT[name](id, from, to, ctx) end
end

-- The job's state follows its tasks: Running once one runs; once none is left to run, Canceled
-- if it was being canceled, else Failed if any task Failed, else Finished.
local function job_refresh(j, ts)
  local jk = K.job(j)
  local st = redis.call('HGET', jk, F.state)
  if st == S.Configuring or not st then return end
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
        redis.call('HSET', jk, 'error', string.format(MSG.tasks_failed, int(nf)))
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

function EFFECT.leave_worker(id, from)
  if not TASK_ON_WORKER[from] then return end
  local node = redis.call('HGET', K.task(id), F.node)
  if node then redis.call('SREM', K.worker_tasks(node), id) end
  local m, i = master_of(id)
  if m then redis.call('SREM', K.sweep_active(m), i) end
end

function EFFECT.join_worker(id, from, to, ctx)
  redis.call('SADD', K.worker_tasks(ctx.node), id)
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
      redis.call('HINCRBY', K.job(split_id(id)), F.failed_sweeps, -1)
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
  redis.call('ZADD', K.ENDED, ctx.ts, j)
  JOBS.release_children(j, to, ctx.ts)
end

function EFFECT.job_reopened(j, from, to, ctx)
  -- a new run: its clock (and runtime limit) starts again when a task next runs
  if JOB_END[from] then
    redis.call('HDEL', K.job(j), 'end_time', 'error', 'start_time', F.finish)
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
  local v = redis.call('HMGET', mk, F.total, F.cut, F.pre)
  if v[2] then
    local rest = num(v[1]) - num(v[2]) - num(v[3])
    redis.call('HSET', mk, F.next, v[2])
    redis.call('HDEL', mk, F.cut)
    if rest ~= 0 then redis.call('HINCRBY', mk, 'i:' .. S.Canceled, int(-rest)) end
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
    msg = string.format(MSG.retrying, err, int(num(v[8]) + 1), sv[3], sv[4])
  elseif exit_code ~= '' and num(sv[3]) > 0 then
    msg = string.format(MSG.retries_spent, err, sv[3])
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

-- === jobs: parents, creation, tasks, submission ==============================================
-- Job j fails without starting because its parent p ended `pst` (Failed or Canceled) and it
-- did not ask to run anyway (run_on_parent_failure): its tasks are canceled with the reason.
function JOBS.parent_failed(j, p, pst, ts)
  local jk = K.job(j)
  local st = redis.call('HGET', jk, F.state)
  if st ~= S.Queued and st ~= S.Running then return end
  local msg = string.format(MSG.parent_failed, p, pst)
  redis.call('HSET', jk, 'error', msg, F.pwait, 0)
  enter('job', j, S.Failed, {ts = ts})
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
  local jv = redis.call('HMGET', jk, 'parents', 'run_on_parent_failure', 'hold_until')
  local pwait, failed, fstate = 0, nil, nil
  for p in string.gmatch(jv[1] or '', '%d+') do
    local pst = redis.call('HGET', K.job(p), F.state)
    -- a parent purged since is taken as ended well (its outcome is no longer known)
    if pst and not JOB_END[pst] then
      redis.call('SADD', K.job_children(p), j)
      pwait = pwait + 1
    elseif pst and pst ~= S.Finished and jv[2] ~= '1' and not failed then
      failed, fstate = p, pst
    end
  end
  redis.call('HSET', jk, F.pwait, failed and 1 or pwait, 'band', int(band), 'submit_time', ts)
  if jv[3] and tonumber(jv[3]) > tonumber(ts) then
    redis.call('HSET', jk, F.held, '1')
    redis.call('ZADD', K.HELD, jv[3], j)
  end
  for _, s in ipairs({S.Submitted, S.Validating, S.Queued}) do enter('job', j, s, {ts = ts}) end
  for t = 1, n do submit_task(j, t, deps[t], band + seq + t, ts) end
  job_refresh(j, ts)
  if failed then JOBS.parent_failed(j, failed, fstate, ts) end
  wakeup()
end
