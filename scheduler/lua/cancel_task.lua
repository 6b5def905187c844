-- ARGV: task id, queued message, running message, force ('0'/'1'), grace seconds or '',
-- mode ('user' | 'revoke' | 'requeue'), attempt token (revoke mode: only that attempt).
-- HPC Pack's CancelTask: Canceled at once unless Running; Running goes Canceling and the worker
-- stops the process tree, then records Failed.  Returns {state after, celery id, mode, ...}.
local id, qmsg, rmsg, force, grace, mode, token = unpack(ARGV)
local tk = k_task(id)
local st = redis.call('HGET', tk, 'state')
local j, t, i = split_id(id)
if not st and i then
  -- An instance never dispatched has no record yet: it is Queued, or Canceled if its master's
  -- cancel cut it off.  Canceling it creates its record as Canceled; dispatch skips it.
  local m = j .. '.' .. t
  local mk = k_task(m)
  local v = redis.call('HMGET', mk, 'total', 'cut', 'state', 'next')
  if v[1] and tonumber(i) <= num(v[1]) then
    if v[2] or TASK_END[v[3]] or v[3] == 'Canceling' then
      fail('STATE', string.format(MSG.task_cannot_cancel, 'Canceled'))
    end
    if mode == 'revoke' then return {'Queued'} end
    local ts = now()
    redis.call('HSET', tk, 'state', 'Canceled', 'changed', ts, 'error', qmsg, 'requeue_count', 0)
    if mode == 'user' then redis.call('HSET', tk, 'explicit', '1') end
    redis.call('HINCRBY', mk, 'i:Canceled', 1)
    redis.call('HINCRBY', mk, 'pre', 1)
    emit('task', id, 'Canceled')
    unit_ended(id, 'Canceled', ts)
    return {'Canceled'}
  end
end
if not st then fail('NOTFOUND', string.format(MSG.task_not_found, id)) end
if mode == 'revoke' then
  -- A Celery revoke names one attempt; an older attempt's revoke must not touch a newer one.
  if redis.call('HGET', tk, 'token') ~= token or not CANCEL_TASK_FROM[st] or st == 'Canceling' then
    return {st}
  end
end
if not CANCEL_TASK_FROM[st] then fail('STATE', string.format(MSG.task_cannot_cancel, st)) end
local ts = now()
local out = {}
local explicit = mode == 'user' and '1' or '0'
if is_master(id) then
  cancel_master(id, ts, qmsg, rmsg, force, grace, explicit, '0', out)
else
  cancel_unit(id, ts, qmsg, rmsg, force, grace, explicit, out)
end
if mode == 'requeue' then redis.call('HSET', tk, 'cancel_requeue', '1') end
wakeup()
local res = {redis.call('HGET', tk, 'state')}
for _, x in ipairs(out) do table.insert(res, x) end
return res
