-- ARGV: task id, attempt token, worker pid.  The worker's Dispatching -> Running check, made
-- immediately before the command starts: only the current attempt of a task that is still
-- Dispatching may start.  Returns {'ok', sweep value or '', spec field, value, ...} or
-- {'no', state}.
local id, token, pid = ARGV[1], ARGV[2], ARGV[3]
local tk = k_task(id)
local v = redis.call('HMGET', tk, 'state', 'token')
if not v[1] then return {'no', 'gone'} end
if v[2] ~= token or v[1] ~= 'Dispatching' then return {'no', v[1]} end
local ts = now()
task_move(id, 'Dispatching', 'Running', ts)
redis.call('HSET', tk, 'start_time', ts, 'worker_pid', pid)
redis.call('HDEL', tk, 'end_time', 'exit_code', 'error', 'output')
local j, t, i = split_id(id)
local spec_key, value = tk, ''
if i then
  local m = j .. '.' .. t
  spec_key = k_task(m)
  local mv = redis.call('HMGET', spec_key, 'state', 'start', 'step')
  if mv[1] == 'Queued' then
    task_move(m, 'Queued', 'Running', ts)
    redis.call('HSETNX', spec_key, 'start_time', ts)
  end
  value = tostring(num(mv[2]) + (tonumber(i) - 1) * num(mv[3]))
end
job_started(j, ts)
local res = {'ok', value}
for _, x in ipairs(redis.call('HGETALL', spec_key)) do table.insert(res, x) end
return res
