-- ARGV: worker name, message for a started attempt, message for one never started, retry cap.
-- The worker is lost (silent past the timeout): each of its attempts ends as lost.  Those that
-- never started are queued again; started ones are rerun if rerunnable (up to the cap), else
-- Failed; a Canceling one completes its cancel.  Returns {celery id, mode, ...} to revoke.
local w, msg, unstarted, cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local revokes = {}
for _, id in ipairs(redis.call('SMEMBERS', K.worker_tasks(w))) do
  local v = redis.call('HMGET', K.task(id), F.state, F.token)
  local out = end_attempt(id, v[2] or '', O.lost, '', v[1] == S.Dispatching and unstarted or msg,
                          '', 0, 0, 0, cap)
  if out[1] ~= 'ok' then
    worker_drop(w, id)     -- not on the worker any more: a stale entry
  end
  for k = 4, #out do table.insert(revokes, out[k]) end
end
local ws = redis.call('HGET', K.worker(w), F.state)
if ws ~= WS.lost and ws ~= WS.stopped then
  local ts = now()
  redis.call('HSET', K.worker(w), 'lost_at', ts)
  worker_enter(w, ws or '', WS.lost, msg, ts)
end
return revokes
