-- ARGV: job id, number of tasks the caller validated, band (priority score offset), then for
-- each task its comma-separated dependency task numbers ('' for none).
-- Configuring -> Submitted -> Validating -> Queued for the job and every task, in one step.
local j, n, band = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local jk = k_job(j)
local st = job_state(j)
if st ~= 'Configuring' then
  fail('STATE', 'Only jobs in the Configuring state can be submitted; job ' .. j .. ' is ' .. st .. '.')
end
if num(redis.call('HGET', jk, 'ntasks')) ~= n then
  fail('RETRY', 'job ' .. j .. ' changed while it was being submitted')
end
-- A task canceled while Configuring stays Canceled; every other task must be Configuring.
for t = 1, n do
  local tst = redis.call('HGET', k_task(j .. '.' .. t), 'state')
  if tst ~= 'Configuring' and tst ~= 'Canceled' then
    fail('STATE', 'task ' .. j .. '.' .. t .. ' is ' .. tostring(tst) .. ', not Configuring')
  end
end
local ts = now()
local seq = redis.call('INCRBY', PREFIX .. ':seq', n) - n
for _, s in ipairs({'Submitted', 'Validating', 'Queued'}) do
  job_move(j, redis.call('HGET', jk, 'state'), s, ts)
end
redis.call('HSET', jk, 'submit_time', ts)
for t = 1, n do
  local id = j .. '.' .. t
  local tk = k_task(id)
  local deps = ARGV[3 + t]
  redis.call('HSET', tk, 'submit_time', ts, 'score', band + seq + t, 'deps', deps)
  if redis.call('HGET', tk, 'state') == 'Configuring' then
    for _, s in ipairs({'Submitted', 'Validating', 'Queued'}) do
      task_move(id, redis.call('HGET', tk, 'state'), s, ts)
    end
    local nwait = 0
    for d in string.gmatch(deps, '%d+') do
      if not TASK_END[redis.call('HGET', k_task(j .. '.' .. d), 'state')] then
        redis.call('SADD', k_rdeps(j .. '.' .. d), t)
        nwait = nwait + 1
      end
    end
    redis.call('HSET', tk, 'nwait', nwait)
    if nwait > 0 then redis.call('SADD', k_waiting(j), t) else enqueue(id) end
  end
end
job_refresh(j, ts)
wakeup()
return n
