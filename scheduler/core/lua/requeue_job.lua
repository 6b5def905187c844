-- ARGV: job id, running message, user (check_permitted in lib.lua).  HPC Pack's job requeue
-- (docs/hpc-pack.md 2.4): Finished tasks stay Finished, tasks explicitly canceled before they ran stay
-- Canceled, every other task is queued again (running ones once they are stopped), by the job's
-- requeue op (lib_ops.lua): this step and job_step.lua.  Returns {state after, celery id, mode,
-- ...}.
local j, rmsg = ARGV[1], ARGV[2]
check_permitted(j, ARGV[3] or '', 'requeue', 'job ' .. j)
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
begin_op(j, 'requeue', {rmsg = rmsg})
step_op(j, STEP_TASKS, out)
return reply(jk, out)
