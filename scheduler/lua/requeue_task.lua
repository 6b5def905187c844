-- ARGV: task id, running message.  HPC Pack's RequeueTask: Failed or Canceled go back to Queued;
-- Running is canceled first and queued again once its processes are gone (the worker's finish
-- step does that).  Returns {state after, celery id, mode, ...}.
local id, rmsg = ARGV[1], ARGV[2]
local tk = k_task(id)
local st = redis.call('HGET', tk, 'state')
local j, t, i = split_id(id)
if not st and i then
  local v = redis.call('HMGET', k_task(j .. '.' .. t), 'total', 'cut')
  if v[1] and tonumber(i) <= num(v[1]) then
    if not v[2] then return {'Queued'} end   -- not dispatched yet: already queued
    fail('STATE', 'Sweep instance ' .. id .. ' was canceled with its master; requeue the master ' .. j .. '.' .. t .. '.')
  end
end
if not st then fail('NOTFOUND', string.format(MSG.task_not_found, id)) end
local spec = i and k_task(j .. '.' .. t) or tk
if redis.call('HGET', spec, 'rerunnable') ~= '1' then
  fail('NOTRERUN', MSG.not_rerunnable)
end
local jst = redis.call('HGET', k_job(j), 'state')
local master = is_master(id)
if not REQUEUE_TASK_FROM[st] or (master and st == 'Canceling') then
  fail('STATE', string.format(MSG.task_cannot_requeue, st))
end
if jst == 'Canceling' or jst == 'Configuring' then
  fail('STATE', 'Tasks of a job in the ' .. jst .. ' state cannot be requeued.')
end
local ts = now()
local out = {}
if master then
  if requeue_master(id, st, ts) > 0 then job_reopen(j, ts) end
elseif st == 'Running' or st == 'Canceling' then
  cancel_unit(id, ts, '', rmsg, '0', '', '0', out)
  redis.call('HSET', tk, 'cancel_requeue', '1')
elseif st == 'Failed' or st == 'Canceled' then
  requeue_unit(id, st, ts)
  job_reopen(j, ts)
end
job_refresh(j, ts)
wakeup()
local res = {redis.call('HGET', tk, 'state')}
for _, x in ipairs(out) do table.insert(res, x) end
return res
