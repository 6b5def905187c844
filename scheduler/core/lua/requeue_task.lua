-- ARGV: task id, running message, user (check_permitted in lib.lua).  HPC Pack's RequeueTask:
-- Failed or Canceled go back to Queued; Running is canceled first and queued again once its
-- processes are gone (the worker's finish step does that).  Returns {state after, celery id, mode,
-- ...}.
local id, rmsg = ARGV[1], ARGV[2]
check_permitted(split_id(id), ARGV[3] or '', 'requeue', 'task ' .. id)
local tk = K.task(id)
local st = unit_state(id)
if not st then fail('NOTFOUND', string.format(MSG.task_not_found, id)) end
local j, t, i = split_id(id)
local jst = job_state(j)     -- refuses a task of a job that was purged
-- a job canceled while Configuring was never submitted (no queue score, no dependencies)
if jst ~= S.Configuring and redis.call('HEXISTS', K.job(j), 'submit_time') == 0 then
  fail('STATE', string.format(MSG.task_never_submitted, id))
end
if redis.call('EXISTS', tk) == 0 then
  -- an instance not dispatched yet: already queued, or cut off with its master
  if st == S.Queued then return {st} end
  if st == S.Canceled then fail('STATE', string.format(MSG.instance_cut, id, j .. '.' .. t)) end
end
local spec = i and K.task(j .. '.' .. t) or tk
if redis.call('HGET', spec, F.rerunnable) ~= '1' then fail('NOTRERUN', MSG.not_rerunnable) end
local master = is_master(id)
if not REQUEUE_TASK_FROM[st] or (master and st == S.Canceling) then
  fail('STATE', string.format(MSG.task_cannot_requeue, st))
end
if jst == S.Canceling or jst == S.Configuring then
  fail('STATE', string.format(MSG.job_cannot_requeue_tasks, jst))
end
if i then
  -- an instance of a sweep being canceled: refused, as the requeue of the sweep itself is
  local mst = redis.call('HGET', K.task(j .. '.' .. t), F.state)
  if mst == S.Canceling then fail('STATE', string.format(MSG.sweep_cannot_requeue_instances, mst)) end
end
local ts = now()
local out = {}
if master then
  if requeue_master(id, ts) > 0 then job_reopen(j, ts) end
elseif st == S.Running or st == S.Canceling then
  requeue_running(id, ts, rmsg, out)
elseif st == S.Failed or st == S.Canceled then
  job_reopen(j, ts)
  enter('task', id, S.Queued, {ts = ts, count = 'requeue_count'})
end
job_refresh(j, ts)
wakeup()
return reply(tk, out)
