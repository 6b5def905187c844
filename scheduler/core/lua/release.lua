-- No ARGV.  The dispatcher's pass over what waits for a time: jobs whose hold_until has come
-- (their tasks go to the queue unless parents still hold them), and units whose --retry-delay
-- has passed (placed again, as a requeue places them).  Returns how many it released.
local ts = now()
local n = 0
for _, j in ipairs(redis.call('ZRANGEBYSCORE', K.HELD, '-inf', ts, 'LIMIT', 0, 100)) do
  redis.call('ZREM', K.HELD, j)
  redis.call('HDEL', K.job(j), F.held)
  job_unblock(j)
  n = n + 1
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.DELAYED, '-inf', ts, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', K.DELAYED, id)
  if redis.call('HGET', K.task(id), F.state) == S.Queued then place_unit(id, ts) end
  n = n + 1
end
if n > 0 then wakeup() end
return n
