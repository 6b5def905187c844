-- ARGV: task id, attempt token, worker pid.  The worker's Dispatching -> Running check, made
-- immediately before the command starts: only the current attempt of a task that is still
-- Dispatching may start.  Asking again for the same attempt from the same process (its reply
-- was lost with the connection) answers the same.  Returns {'ok', sweep value or '',
-- spec field, value, ... (schema.START_FIELDS), then _job_name, _job_env (the job's name and variables) and _cores,
-- _gpus (what this attempt was given)} or {'no', state}.
local id, token, pid = ARGV[1], ARGV[2], ARGV[3]
local tk = K.task(id)
local v = redis.call('HMGET', tk, F.state, F.token, 'worker_pid', 'a_cores', 'a_gpus')
if not v[1] then return {'no', 'gone'} end
local again = v[1] == S.Running and v[2] == token and v[3] == pid
if v[2] ~= token or (v[1] ~= S.Dispatching and not again) then return {'no', v[1]} end
local jv = redis.call('HMGET', K.job(split_id(id)), 'name', 'env', F.state, F.finish)
-- its job is being canceled, finished or has failed: its op (lib_ops.lua) ends this attempt
if not again and job_stopping(jv[3], jv[4]) then
  return {'no', jv[3]}
end
if not again then
  local ts = now()
  enter('task', id, S.Running, {ts = ts, from = S.Dispatching})
  redis.call('HSET', tk, 'start_time', ts, 'worker_pid', pid)
  redis.call('HDEL', tk, 'end_time', 'exit_code', 'error', 'output')
end
local m, i = master_of(id)
local spec_key, value = tk, ''
if m then
  spec_key = K.task(m)
  local mv = redis.call('HMGET', spec_key, 'start', 'step')
  value = tostring(num(mv[1]) + (tonumber(i) - 1) * num(mv[2]))
end
local res = {'ok', value}
local sv = redis.call('HMGET', spec_key, unpack(START_FIELDS))
for k, name in ipairs(START_FIELDS) do
  if sv[k] then table.insert(res, name); table.insert(res, sv[k]) end
end
for _, x in ipairs({'_job_name', jv[1] or '', '_job_env', jv[2] or '', '_cores', v[4] or '1',
                    '_gpus', v[5] or ''}) do table.insert(res, x) end
return res
