-- ARGV: job id, queued message, running message, job error, force, grace, graceful.
-- Every unfinished task by the CancelTask table (graceful: running ones are left to finish);
-- the job is Canceling until nothing of it runs, then Canceled.
local j, qmsg, rmsg, jerr, force, grace, graceful = unpack(ARGV)
local jk = K.job(j)
local st = job_state(j)
if not CANCEL_JOB_FROM[st] then fail('STATE', string.format(MSG.job_cannot_cancel, st)) end
local ts = now()
local out = {}
if st ~= S.Canceling then
  redis.call('HSET', jk, 'error', jerr)
  enter('job', j, st == S.Configuring and S.Canceled or S.Canceling, {ts = ts})
end
cancel_all(j, ts, {qmsg = qmsg, rmsg = rmsg, force = force == '1', grace = grace,
                   graceful = graceful == '1'}, '', out)
job_refresh(j, ts)
wakeup()
return reply(jk, out)
