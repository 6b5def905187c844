-- ARGV: job id, running message.  HPC Pack's job requeue (hpcpack.md 2.4): Finished tasks stay
-- Finished, tasks explicitly canceled before they ran stay Canceled, every other task is queued
-- again (running ones once they are stopped).  Returns {state after, celery id, mode, ...}.
local j, rmsg = ARGV[1], ARGV[2]
local jk = K.job(j)
local st = job_state(j)
if not REQUEUE_JOB_FROM[st] then fail('STATE', string.format(MSG.job_cannot_requeue, st)) end
-- canceled while Configuring: nothing of it was ever submitted (no queue score, no dependencies)
if redis.call('HEXISTS', jk, 'submit_time') == 0 then
  fail('STATE', string.format(MSG.job_never_submitted, j))
end
local ts = now()
local out = {}
job_reopen(j, ts)
redis.call('HINCRBY', jk, 'requeue_count', 1)
for t = 1, num(redis.call('HGET', jk, 'ntasks')) do
  local id = j .. '.' .. t
  local v = redis.call('HMGET', K.task(id), F.state, F.explicit, F.finish)
  local tst, explicit = v[1], v[2] == '1'
  if (tst == S.Canceled and explicit) or (tst == S.Finished and v[3] == '1') then
    -- canceled on purpose: stays Canceled; finished by the user: stays Finished
  elseif is_master(id) then
    if tst ~= S.Canceling then requeue_master(id, ts) end
  elseif tst == S.Failed or tst == S.Canceled then
    enter('task', id, S.Queued, {ts = ts, count = 'requeue_count'})
  elseif tst == S.Running or tst == S.Canceling then
    requeue_running(id, ts, rmsg, out)
  end
end
job_refresh(j, ts)
wakeup()
return reply(jk, out)
