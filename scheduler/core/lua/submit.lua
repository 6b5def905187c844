-- ARGV: job id, number of tasks the caller validated, band (priority score offset), then for
-- each task its comma-separated dependency task numbers ('' for none).
-- Configuring -> Submitted -> Validating -> Queued for the job and every task, in one step.
local j, n, band = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
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
local ts = now()
local seq = redis.call('INCRBY', K.SEQ, n) - n
for _, s in ipairs({S.Submitted, S.Validating, S.Queued}) do enter('job', j, s, {ts = ts}) end
redis.call('HSET', jk, 'submit_time', ts)
for t = 1, n do
  local id = j .. '.' .. t
  local tk = K.task(id)
  local deps = ARGV[3 + t]
  redis.call('HSET', tk, 'submit_time', ts, F.score, band + seq + t, 'deps', deps)
  if redis.call('HGET', tk, F.state) == S.Configuring then
    local nwait = 0
    for d in string.gmatch(deps, '%d+') do
      if not TASK_END[redis.call('HGET', K.task(j .. '.' .. d), F.state)] then
        redis.call('SADD', K.task_rdeps(j .. '.' .. d), t)
        nwait = nwait + 1
      end
    end
    redis.call('HSET', tk, F.nwait, nwait)
    -- entering Queued places it: the queue, or the job's waiting set while nwait > 0
    for _, s in ipairs({S.Submitted, S.Validating, S.Queued}) do enter('task', id, s, {ts = ts}) end
    -- a sweep whose instances were all canceled one by one before submit ends now
    if is_master(id) then master_refresh(id, ts) end
  end
end
job_refresh(j, ts)
wakeup()
return n
