-- ARGV: job id, number of tasks the caller validated, band (priority score offset), then for
-- each task its comma-separated dependency task numbers ('' for none), then an idempotency key
-- ('' or absent for none).
-- Configuring -> Submitted -> Validating -> Queued for the job and every task, in one step.
-- Returns the job submitted: another one if the key already names a job (this one is left
-- as it is: a client that lost the reply and built the job again gets the first one back).
local j, n, band = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local key = ARGV[4 + n] or ''
if key ~= '' then
  local found = redis.call('GET', K.job_key(key))
  if found and found ~= j and redis.call('EXISTS', K.job(found)) == 1 then return tonumber(found) end
end
local jk = K.job(j)
local st = job_state(j)
if st ~= S.Configuring then fail('STATE', string.format(MSG.cannot_submit, j, st)) end
if num(redis.call('HGET', jk, 'ntasks')) ~= n then fail('RETRY', string.format(MSG.job_changed, j)) end
if n == 0 then fail('STATE', string.format(MSG.job_has_no_tasks, j, j)) end
-- A task canceled while Configuring stays Canceled; every other task must be Configuring.
for t = 1, n do
  local tst = redis.call('HGET', K.task(j .. '.' .. t), F.state)
  if tst ~= S.Configuring and tst ~= S.Canceled then
    fail('STATE', string.format(MSG.task_not_configuring, j .. '.' .. t, tostring(tst)))
  end
end
local deps = {}
for t = 1, n do deps[t] = ARGV[3 + t] end
if key ~= '' then
  redis.call('SET', K.job_key(key), j)
  redis.call('HSET', jk, 'key', key)
end
submit_job(j, band, deps, now())
return tonumber(j)
