-- ARGV: task id, queued message, running message, force ('0'/'1'), grace seconds or '',
-- mode ('user' | 'revoke' | 'requeue'), attempt token (revoke mode: only that attempt), the
-- user asking ('' for hpcq's own: not checked; else its job's owner or an administrator).
-- HPC Pack's CancelTask: Canceled at once unless Running; Running goes Canceling and the worker
-- stops the process tree, then records Failed.  Returns {state after, celery id, mode, ...}.
local id, qmsg, rmsg, force, grace, mode, token, user = unpack(ARGV)
check_permitted(split_id(id), user or '', 'cancel', 'task ' .. id)
local tk = K.task(id)
local st = unit_state(id)
if not st then fail('NOTFOUND', string.format(MSG.task_not_found, id)) end
local recorded = redis.call('EXISTS', tk) == 1
if mode == 'revoke' then
  -- A Celery revoke names one attempt; an older attempt's revoke must not touch a newer one.
  if not recorded or redis.call('HGET', tk, F.token) ~= token or not CANCEL_TASK_FROM[st]
      or st == S.Canceling then
    return {st}
  end
end
if not CANCEL_TASK_FROM[st] then fail('STATE', string.format(MSG.task_cannot_cancel, st)) end
local ts = now()
-- an instance not dispatched yet gets its record now (dispatch then skips it)
if not recorded then materialize(id, st, ts) end
local out = {}
local o = {qmsg = qmsg, rmsg = rmsg, force = force == '1', grace = grace,
           explicit = mode == 'user'}
if is_master(id) then
  cancel_master(id, ts, o, out)
else
  cancel_unit(id, ts, o, out)
end
if mode == 'requeue' then redis.call('HSET', tk, 'cancel_requeue', '1') end
-- (a queued task canceled gives the dispatcher nothing: no pass of the scheduler for it)
if GAVE.work or GAVE.slot then wakeup() end
return reply(tk, out)
