-- ARGV: task id, attempt token, outcome ('exit' | 'lost'), exit code, error, output, cpu_user,
-- cpu_sys, max_rss.
-- The worker's last step for an attempt: records the result if the token is still current.
-- A task stopped while Canceling ends Failed with its cancel message; a requeue waiting on the
-- stop puts it back in the queue; a lost attempt of a rerunnable task is queued again.
-- Returns {'ok', end state, error message, celery id, mode, ...} or {'stale', state}.
local id, token, outcome = ARGV[1], ARGV[2], ARGV[3]
local exit_code, err, output = ARGV[4], ARGV[5], ARGV[6]
local tk = k_task(id)
local v = redis.call('HMGET', tk, 'state', 'token', 'cancel_error', 'cancel_requeue', 'node')
local st = v[1]
if not st then return {'stale', 'gone'} end
if v[2] ~= token or not TASK_ON_WORKER[st] then return {'stale', st} end
local j, t, i = split_id(id)
local spec = i and k_task(j .. '.' .. t) or tk
local rerunnable = redis.call('HGET', spec, 'rerunnable') == '1'
local to, msg, requeue = 'Failed', err, v[4] == '1'
if st == 'Canceling' then
  msg = v[3]
elseif outcome == 'lost' then
  -- an attempt that never started is always safe to queue again
  if rerunnable or st == 'Dispatching' then to = 'Queued' end
elseif exit_code == '0' and err == '' then
  to, msg = 'Finished', ''
end
local ts = now()
redis.call('SREM', k_wtasks(v[5]), id)
local fields = {'end_time', ts, 'cpu_user', ARGV[7], 'cpu_sys', ARGV[8], 'max_rss', ARGV[9],
                'output', output}
if exit_code ~= '' then table.insert(fields, 'exit_code'); table.insert(fields, exit_code) end
redis.call('HSET', tk, unpack(fields))
local out = {'ok', to, msg or ''}
if to == 'Queued' then
  task_move(id, st, 'Queued', ts)
  redis.call('HINCRBY', tk, 'auto_requeue_count', 1)
  redis.call('HSET', tk, 'last_error', msg)
  clear_results(id)
  place_queued(id, ts)
  job_refresh(j, ts)
elseif to == 'Failed' and requeue then
  task_move(id, st, 'Failed', ts)
  task_move(id, 'Failed', 'Queued', ts)
  redis.call('HINCRBY', tk, 'requeue_count', 1)
  clear_results(id)
  place_queued(id, ts)
  out[2] = 'Queued'
  job_refresh(j, ts)
else
  task_move(id, st, to, ts)
  if msg ~= '' then redis.call('HSET', tk, 'error', msg) else redis.call('HDEL', tk, 'error') end
  -- fail_on_task_failure: the first real failure fails the job at once and stops the rest.
  local jv = redis.call('HMGET', k_job(j), 'state', 'fail_on_task_failure')
  if to == 'Failed' and st ~= 'Canceling' and jv[2] == '1' and not JOB_END[jv[1]]
      and jv[1] ~= 'Canceling' then
    redis.call('HSET', k_job(j), 'error', string.format(MSG.job_failed_on_task, id))
    job_move(j, jv[1], 'Failed', ts)
    local stop = string.format(MSG.stopped_by_job_failure, id)
    local revokes = {}
    local mid = i and (j .. '.' .. t) or id
    cancel_all(j, ts, stop, stop, '0', '', '0', mid, revokes)
    if i then cancel_master(mid, ts, stop, stop, '0', '', '0', '0', revokes) end
    for _, x in ipairs(revokes) do table.insert(out, x) end
  end
  unit_ended(id, to, ts)
end
if #out > 3 then wakeup() else wakeup(v[5]) end
return out
