-- ARGV: job id, number of tasks the caller validated, band (priority score offset), idempotency
-- key ('' for none), then pairs of a task number and its comma-separated dependency task numbers
-- (only the tasks that have some).
-- Configuring -> Submitted -> Validating -> Queued for the job, then its tasks by its submit op
-- (lib_ops.lua: this step and job_step.lua).
-- Returns {job submitted, 'more:<job>' while its op is not done}: another job if the key already
-- names one (this one is left as it is: a client that lost the reply and built the job again
-- gets the first one back).
local j, n, band, key = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if key ~= '' then
  local found = redis.call('GET', K.job_key(key))
  if found and found ~= j and redis.call('EXISTS', K.job(found)) == 1 then return {tonumber(found)} end
end
local jk = K.job(j)
local st = job_state(j)
if st ~= S.Configuring then fail('STATE', string.format(MSG.cannot_submit, j, st)) end
local v = redis.call('HMGET', jk, 'ntasks', 'c:' .. S.Configuring, 'c:' .. S.Canceled)
if num(v[1]) ~= n then fail('RETRY', string.format(MSG.job_changed, j)) end
if n == 0 then fail('STATE', string.format(MSG.job_has_no_tasks, j, j)) end
-- A task canceled while Configuring stays Canceled; every other task is Configuring (the
-- counts say so: a job's tasks cannot move before it is submitted).
if num(v[2]) + num(v[3]) ~= n then
  fail('STATE', string.format(MSG.tasks_not_configuring, j, int(n - num(v[2]) - num(v[3])), int(n)))
end
for k = 5, #ARGV - 1, 2 do redis.call('HSET', K.task(j .. '.' .. ARGV[k]), 'deps', ARGV[k + 1]) end
if key ~= '' then
  redis.call('SET', K.job_key(key), j)
  redis.call('HSET', jk, 'key', key)
end
local out = {}
submit_job(j, band, now(), out)
return {tonumber(j), out[#out]}
