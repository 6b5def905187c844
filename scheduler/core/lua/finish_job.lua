-- ARGV: job id, message, grace seconds or '', user (check_permitted in lib.lua).  HPC Pack's job
-- Finish: every task that has not ended is finished (finish_task.lua) and the job ends Finished
-- with the message once nothing of it runs; no task of it starts from now on (its finish flag is
-- set first; the job's finish op, lib_ops.lua, goes over its tasks).  Returns {state after, celery
-- id, mode, ...}.
local j, msg, grace = ARGV[1], ARGV[2], ARGV[3]
check_permitted(j, ARGV[4] or '', 'finish', 'job ' .. j)
local jk = K.job(j)
local st = job_state(j)
if not FINISH_JOB_FROM[st] then fail('STATE', string.format(MSG.job_cannot_finish, st)) end
redis.call('HSET', jk, F.finish, '1', 'error', msg)
local out = {}
begin_op(j, 'finish', {qmsg = msg, rmsg = msg, grace = grace, finish = true})
step_op(j, STEP_TASKS, out)
return reply(jk, out)
