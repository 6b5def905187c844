-- Helpers of the scripts that make jobs (create_job, add_task, submit, new_job) only, after the
-- shared ones: creation and tasks (submission is lib_ops.lua's).  Apart so that the scripts of the hot path (dispatch,
-- start, finish) do not define them on every call.

-- Refuses (before any write) parents that do not exist.
local function check_parents(parents)
  for p in string.gmatch(parents or '', '%d+') do
    if redis.call('EXISTS', K.job(p)) == 0 then fail('NOTFOUND', string.format(MSG.parent_not_found, p)) end
  end
end

local function create_job(fields, ts)
  local j = redis.call('INCR', K.JOB_SEQ)
  local jk = K.job(j)
  if #fields > 0 then redis.call('HSET', jk, unpack(fields)) end
  redis.call('HSET', jk, F.state, S.Configuring, 'create_time', ts, F.changed, ts, 'ntasks', 0)
  redis.call('ZADD', K.JOBS, j, j)
  emit('job', j, '', S.Configuring, '', '', ts)
  return j
end

-- The job's defaults for what a task does not ask itself (schema.RESOURCES).
local JOB_DEFAULTS = {'cores', 'memory', 'gpus', 'group'}

local defaults_of = {}   -- job -> its defaults, read once a call (new_job adds hundreds of tasks)

local function add_task_record(j, fields, ts)
  local jk = K.job(j)
  local t = redis.call('HINCRBY', jk, 'ntasks', 1)
  local id = j .. '.' .. t
  local tk = K.task(id)
  local given = {}
  for k = 1, #fields - 1, 2 do given[fields[k]] = true end
  local dv = defaults_of[j]
  if not dv then
    dv = redis.call('HMGET', jk, unpack(JOB_DEFAULTS))
    defaults_of[j] = dv
  end
  local rec = {F.state, S.Configuring, 'create_time', ts, F.changed, ts, 'requeue_count', 0}
  for k, f in ipairs(JOB_DEFAULTS) do
    if dv[k] and not given[f] then table.insert(rec, f); table.insert(rec, dv[k]) end
  end
  if given[F.total] then table.insert(rec, F.next); table.insert(rec, 0) end
  redis.call('HSET', tk, unpack(fields))
  redis.call('HSET', tk, unpack(rec))
  redis.call('HINCRBY', jk, 'c:' .. S.Configuring, 1)
  emit('task', id, '', S.Configuring, '', '', ts)
  history_add(id, ts, S.Configuring, '', '')
  return t
end
