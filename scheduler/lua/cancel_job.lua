-- ARGV: job id, queued message, running message, job error, force, grace, graceful.
-- Every unfinished task by the CancelTask table (graceful: running ones are left to finish);
-- the job is Canceling until nothing of it runs, then Canceled.
local j, qmsg, rmsg, jerr, force, grace, graceful = unpack(ARGV)
local jk = k_job(j)
local st = job_state(j)
if not CANCEL_JOB_FROM[st] then fail('STATE', string.format(MSG.job_cannot_cancel, st)) end
local ts = now()
local out = {}
if st ~= 'Canceling' then
  redis.call('HSET', jk, 'error', jerr)
  if st == 'Configuring' then
    job_move(j, st, 'Canceled', ts)
  else
    job_move(j, st, 'Canceling', ts)
  end
end
cancel_all(j, ts, qmsg, rmsg, force, grace, graceful, '', out)
job_refresh(j, ts)
wakeup()
local res = {redis.call('HGET', jk, 'state')}
for _, x in ipairs(out) do table.insert(res, x) end
return res
