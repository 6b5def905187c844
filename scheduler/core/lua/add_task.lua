-- ARGV: job id, dependencies (task numbers, comma-separated; used when the job is already
-- submitted), field, value, ... of the task record.  A task added to a Queued or Running job
-- is submitted at once, behind what is queued.  Returns the new task number.
local j, deps = ARGV[1], ARGV[2]
local jk = K.job(j)
local st = job_state(j)
if not ADD_TASK_TO[st] then fail('STATE', string.format(MSG.cannot_add, j, st)) end
if redis.call('HGET', jk, F.finish) == '1' then fail('STATE', string.format(MSG.job_finishing, j)) end
for d in string.gmatch(deps, '[^,]+') do
  if not tonumber(d) or tonumber(d) < 1 or tonumber(d) > num(redis.call('HGET', jk, 'ntasks')) then
    fail('INPUT', string.format(MSG.task_not_found, j .. '.' .. d))
  end
end
local ts = now()
local t = add_task_record(j, {unpack(ARGV, 3)}, ts)
if st ~= S.Configuring then
  local band = num(redis.call('HGET', jk, 'band'))
  submit_task(j, t, deps, band + redis.call('INCR', K.SEQ), ts)
  job_refresh(j, ts)
  wakeup()
end
return t
