-- ARGV: field, value, ... of the job record.  Returns the new job id.
local ts = now()
local j = redis.call('INCR', K.JOB_SEQ)
local jk = K.job(j)
redis.call('HSET', jk, unpack(ARGV))
redis.call('HSET', jk, F.state, S.Configuring, 'create_time', ts, F.changed, ts, 'ntasks', 0)
redis.call('ZADD', K.JOBS, j, j)
emit('job', j, '', S.Configuring, '', '', ts)
return j
