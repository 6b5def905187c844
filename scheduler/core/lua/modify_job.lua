-- ARGV: job id, hold_until ('' unchanged, '0' none, else a time), priority name ('' unchanged), its
-- band, user (check_permitted in lib.lua).  HPC Pack's job modify while the job waits (Configuring
-- or Queued): a hold in the future takes its queued tasks out of the queue (into its waiting set)
-- until then; a priority moves its tasks' queue scores to the new band (submission order kept
-- within it).
local j, hold, prio, band = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
check_permitted(j, ARGV[5] or '', 'modify', 'job ' .. j)
local jk = K.job(j)
local st = job_state(j)
if not MODIFY_JOB_FROM[st] then fail('STATE', string.format(MSG.job_cannot_modify, j, st)) end
local ts = now()
local n = num(redis.call('HGET', jk, 'ntasks'))
if prio ~= '' then
  local old = redis.call('HGET', jk, 'band')
  redis.call('HSET', jk, 'priority', prio)
  if old then
    redis.call('HSET', jk, 'band', band)
    for t = 1, n do
      local id = j .. '.' .. t
      local score = redis.call('HGET', K.task(id), F.score)
      if score then
        local new = int(tonumber(score) - tonumber(old) + tonumber(band))
        redis.call('HSET', K.task(id), F.score, new)
        if redis.call('ZSCORE', K.QUEUE, id) then redis.call('ZADD', K.QUEUE, new, id) end
      end
    end
  end
end
if hold ~= '' then
  if hold == '0' then redis.call('HDEL', jk, 'hold_until') else redis.call('HSET', jk, 'hold_until', hold) end
  if st ~= S.Configuring then
    if hold ~= '0' and tonumber(hold) > tonumber(ts) then
      redis.call('HSET', jk, F.held, '1')
      redis.call('ZADD', K.HELD, hold, j)
      for t = 1, n do
        if redis.call('ZREM', K.QUEUE, j .. '.' .. t) == 1 then redis.call('SADD', K.job_waiting(j), t) end
      end
    else
      redis.call('HDEL', jk, F.held)
      redis.call('ZREM', K.HELD, j)
      job_unblock(j)
    end
  end
end
wakeup()
return st
