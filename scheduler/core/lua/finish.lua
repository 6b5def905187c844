-- ARGV: task id, attempt token, outcome ('exit' | 'lost'), exit code, error, output, cpu_user,
-- cpu_sys, max_rss, retry cap, drain ('1': the worker is shutting down; it gets no more work),
-- and optionally the command's pid and spool file (a command that ended within its first
-- moments has them recorded here rather than in a write of their own).
-- The worker's last step for an attempt: records the result if the token is still current
-- (end_attempt in lib.lua).  Returns {'ok', end state, error message, celery id, mode, ...} or
-- {'stale', state}.
if (ARGV[12] or '') ~= '' then
  local tk = K.task(ARGV[1])
  local v = redis.call('HMGET', tk, F.state, F.token)
  if v[2] == ARGV[2] and TASK_ON_WORKER[v[1]] then
    redis.call('HSET', tk, 'pid', ARGV[12], 'spool', ARGV[13] or '')
  end
end
local out = end_attempt(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8],
                        ARGV[9], ARGV[10])
if ARGV[11] == '1' and out[1] == 'ok' then
  -- in the same step as the requeue, so the task cannot be sent back to this worker
  local node = redis.call('HGET', K.task(ARGV[1]), F.node)
  if node then
    local ts = now()
    redis.call('HSET', K.worker(node), 'drain_at', ts)
    worker_enter(node, redis.call('HGET', K.worker(node), F.state) or '', WS.draining, '', ts)
  end
end
return out
