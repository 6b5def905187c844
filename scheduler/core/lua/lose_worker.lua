-- ARGV: worker name, message for a started attempt, message for one never started, retry cap.
-- The worker is lost (silent past the timeout): each of its attempts ends as lost.  Those that
-- never started are queued again; started ones are rerun if rerunnable (up to the cap), else
-- Failed; a Canceling one completes its cancel.  Returns {{celery id, mode, ...} to revoke,
-- {celery id, reason, ...} of the attempts that had started (Celery shows them running until
-- told they ended: scheduler/celery_events.py)}.
local w, msg, unstarted, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local revokes, ended = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', K.worker_tasks(w))) do
  local v = redis.call('HMGET', K.task(id), F.state, F.token, F.celery_id)
  local out = end_attempt(id, v[2] or '', O.lost, '', v[1] == S.Dispatching and unstarted or msg,
                          '', 0, 0, 0, cap)
  if out[1] ~= 'ok' then
    worker_drop(w, id)     -- not on the worker any more: a stale entry
  elseif v[1] ~= S.Dispatching then
    table.insert(ended, v[3] or celery_id(id, v[2]))
    table.insert(ended, out[3] ~= '' and out[3] or msg)
  end
  for k = 4, #out do table.insert(revokes, out[k]) end
end
local ws = redis.call('HGET', K.worker(w), F.state)
if ws ~= WS.lost and ws ~= WS.stopped then
  local ts = now()
  redis.call('HSET', K.worker(w), 'lost_at', ts)
  worker_enter(w, ws or '', WS.lost, msg, ts)
end
return {revokes, ended}
