-- ARGV: field, value, ... of the job record.  Returns the new job id.
local ts = now()
local j = redis.call('INCR', PREFIX .. ':job:seq')
local jk = k_job(j)
redis.call('HSET', jk, unpack(ARGV))
redis.call('HSET', jk, 'state', 'Configuring', 'create_time', ts, 'changed', ts, 'ntasks', 0)
redis.call('ZADD', PREFIX .. ':jobs', j, j)
emit('job', j, 'Configuring')
return j
