-- Shared helpers, part 2 (after lib.lua): stopping things (cancel and requeue of one task or
-- sweep; lib_ops.lua applies them to a whole job).

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
    -- without a grace of its own, the cluster's (HPC Pack's TaskCancelGracePeriod is one
    -- cluster setting): what the worker gives it, and what the client says it gets
    local grace = o.grace
    if not grace or grace == '' then grace = redis.call('GET', K.CANCEL_GRACE) or '' end
    redis.call('HSET', tk, 'cancel_error', o.rmsg, 'cancel_force', o.force and '1' or '0',
               'cancel_grace', grace, 'cancel_time', ts)
    enter('task', id, S.Canceling, {ts = ts, from = st})
    table.insert(out, redis.call('HGET', tk, F.celery_id) or '')
    table.insert(out, o.force and 'kill' or 'terminate')
  elseif st == S.Canceling then
    if o.force then
      redis.call('HSET', tk, 'cancel_force', '1')
      table.insert(out, redis.call('HGET', tk, F.celery_id) or '')
      table.insert(out, 'kill')
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

