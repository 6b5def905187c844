-- ARGV: job id, queued message, running message, job error, force, grace, graceful, user
-- (check_permitted in lib.lua).
-- Every unfinished task by the CancelTask table (graceful: running ones are left to finish),
-- by the job's cancel op (lib_ops.lua): this step marks the job (nothing of it starts from now
-- on), stops what runs and cancels the first tasks; job_step.lua does the rest.  The job is
-- Canceling until nothing of it runs, then Canceled.
local j, qmsg, rmsg, jerr, force, grace, graceful, user = unpack(ARGV)
check_permitted(j, user or '', 'cancel', 'job ' .. j)
local jk = K.job(j)
local st = job_state(j)
if not CANCEL_JOB_FROM[st] then fail('STATE', string.format(MSG.job_cannot_cancel, st)) end
local ts = now()
local out = {}
if st ~= S.Canceling then
  redis.call('HSET', jk, 'error', jerr)
  enter('job', j, st == S.Configuring and S.Canceled or S.Canceling, {ts = ts})
end
begin_op(j, 'cancel', {qmsg = qmsg, rmsg = rmsg, force = force == '1', grace = grace,
                       graceful = graceful == '1'})
step_op(j, STEP_TASKS, out)
return reply(jk, out)
