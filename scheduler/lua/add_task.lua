-- ARGV: job id, field, value, ... of the task record.  Returns the new task number.
local j = ARGV[1]
local jk = k_job(j)
local st = job_state(j)
if st ~= 'Configuring' then
  fail('STATE', 'Tasks can only be added to a job in the Configuring state; job ' .. j .. ' is ' .. st .. '.')
end
local ts = now()
local t = redis.call('HINCRBY', jk, 'ntasks', 1)
local id = j .. '.' .. t
redis.call('HSET', k_task(id), unpack(ARGV, 2))
redis.call('HSET', k_task(id), 'state', 'Configuring', 'create_time', ts, 'changed', ts, 'requeue_count', 0)
if redis.call('HEXISTS', k_task(id), 'total') == 1 then
  redis.call('HSET', k_task(id), 'next', 0)
end
redis.call('HINCRBY', jk, 'c:Configuring', 1)
emit('task', id, 'Configuring')
return t
