-- ARGV: job id, budget (about the most keys this call deletes), ended before (a time; '' for
-- any age).
-- Retention: an ended job and every key of its tasks and instances are deleted, a budget of
-- keys per call so that Redis is never blocked for long.  The first call takes the job out of
-- sight at once (its keys, the job list, retention) and keeps a cursor (job_purge) of the tasks
-- left; later calls resume from it, whichever client makes them.  Once the job record is gone
-- no script can move its tasks (each refuses a task of a job that does not exist).  The keys
-- deleted are every task and job key the schema declares (TASK_KEYS, JOB_KEYS).
-- Returns {'done' | 'more' | 'young', keys deleted}.
local j, budget, before = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local pk = K.job_purge(j)
if redis.call('EXISTS', pk) == 0 then
  local st = job_state(j)
  if not JOB_END[st] then fail('STATE', string.format(MSG.cannot_purge, j, st)) end
  if before ~= '' then
    local ended = redis.call('ZSCORE', K.ENDED, j)
    if not ended or tonumber(ended) >= tonumber(before) then return {'young', 0} end
  end
  local jv = redis.call('HMGET', K.job(j), 'ntasks', 'key')
  redis.call('HSET', pk, 't', num(jv[1]), 'i', 0)
  if jv[2] and redis.call('GET', K.job_key(jv[2])) == tostring(j) then redis.call('DEL', K.job_key(jv[2])) end
  for _, name in ipairs(JOB_KEYS) do
    if name ~= 'job_purge' then redis.call('DEL', K[name](j)) end
  end
  redis.call('ZREM', K.JOBS, j)
  redis.call('ZREM', K.ENDED, j)
  redis.call('ZREM', K.DEADLINES, j)
  redis.call('SADD', K.PURGING, j)
end
-- every key of one task or instance (its record, history, dependents, a sweep's sets)
local function drop(id)
  for _, name in ipairs(TASK_KEYS) do redis.call('DEL', K[name](id)) end
  return #TASK_KEYS
end
local v = redis.call('HMGET', pk, 't', 'i')
local t, i = num(v[1]), num(v[2])
local deleted = 0
while t > 0 and deleted < budget do
  local id = j .. '.' .. t
  local m = redis.call('HMGET', K.task(id), F.total, F.next, F.pre)
  if m[1] then
    -- instance records: those materialized in turn (1..next), and those given one before their
    -- turn (pre), which may be anywhere up to total
    local last = num(m[3]) > 0 and num(m[1]) or num(m[2])
    while i < last and deleted < budget do
      i = i + 1
      deleted = deleted + drop(id .. '.' .. i)
    end
    if i < last then break end      -- the budget ran out inside this sweep
  end
  deleted = deleted + drop(id)
  t, i = t - 1, 0
end
if t == 0 then
  redis.call('DEL', pk)
  redis.call('SREM', K.PURGING, j)
  return {'done', deleted}
end
redis.call('HSET', pk, 't', t, 'i', i)
return {'more', deleted}
