-- ARGV: job id, field, value, ... of the task record.  Returns the new task number.
local j = ARGV[1]
local jk = K.job(j)
local st = job_state(j)
if st ~= S.Configuring then fail('STATE', string.format(MSG.cannot_add, j, st)) end
local ts = now()
local t = redis.call('HINCRBY', jk, 'ntasks', 1)
local id = j .. '.' .. t
local tk = K.task(id)
redis.call('HSET', tk, unpack(ARGV, 2))
redis.call('HSET', tk, F.state, S.Configuring, 'create_time', ts, F.changed, ts, 'requeue_count', 0)
if redis.call('HEXISTS', tk, F.total) == 1 then redis.call('HSET', tk, F.next, 0) end
redis.call('HINCRBY', jk, 'c:' .. S.Configuring, 1)
emit('task', id, '', S.Configuring, '', '', ts)
history_add(id, ts, S.Configuring, '', '')
return t
