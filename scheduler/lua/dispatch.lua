-- ARGV: worker name, most tasks to hand out.  Pops the queue head in priority order up to the
-- worker's free slots; each popped task (or the next instance of a sweep) goes Dispatching with a
-- fresh attempt token.  Returns id, token, celery id for each.
local w, want = ARGV[1], tonumber(ARGV[2])
local wv = redis.call('HMGET', k_worker(w), 'slots', 'state', 'stale')
-- a lost, draining or stopped worker gets nothing; slots held by stale attempts being killed are not free
if wv[2] == 'lost' or wv[2] == 'stopped' or wv[2] == 'draining' then return {} end
local free = num(wv[1]) - redis.call('SCARD', k_wtasks(w)) - num(wv[3])
if want > free then want = free end
local out = {}
if want <= 0 then return out end
local ts = now()
while #out < want * 3 do
  local head = redis.call('ZRANGE', K_QUEUE, 0, 0)
  if #head == 0 then break end
  local id = head[1]
  local tk = k_task(id)
  local unit
  if redis.call('HEXISTS', tk, 'total') == 1 then
    local i = redis.call('RPOP', k_redo(id))
    if i then
      unit = id .. '.' .. i
      task_move(unit, 'Queued', 'Dispatching', ts)
    else
      local v = redis.call('HMGET', tk, 'next', 'total')
      local nxt, total = num(v[1]), num(v[2])
      while not i and nxt < total do
        nxt = redis.call('HINCRBY', tk, 'next', 1)
        if redis.call('EXISTS', k_task(id .. '.' .. nxt)) == 1 then
          redis.call('HINCRBY', tk, 'pre', -1)   -- canceled (or requeued) before its turn
        else
          i = nxt
        end
      end
      if i then
        unit = id .. '.' .. i
        redis.call('HSET', k_task(unit), 'state', 'Dispatching', 'changed', ts, 'requeue_count', 0)
        redis.call('HINCRBY', tk, 'i:Dispatching', 1)
        emit('task', unit, 'Dispatching')
      end
    end
    if i then redis.call('SADD', k_active(id), i) end
    local v = redis.call('HMGET', tk, 'next', 'total')
    if num(v[1]) >= num(v[2]) and redis.call('LLEN', k_redo(id)) == 0 then
      redis.call('ZREM', K_QUEUE, id)
    end
  else
    redis.call('ZREM', K_QUEUE, id)
    local st = redis.call('HGET', tk, 'state')
    if st == 'Queued' then
      unit = id
      task_move(unit, st, 'Dispatching', ts)
    end
  end
  if unit then
    -- unique even if Redis lost its last writes and counts again: the sequence, then microseconds
    local token = string.format('%d%06d', redis.call('INCR', PREFIX .. ':attempt'), tonumber(redis.call('TIME')[2]))
    local cid = 'hpcq-' .. unit .. '-' .. token
    redis.call('HSET', k_task(unit), 'token', token, 'celery_id', cid, 'node', w, 'dispatch_time', ts)
    redis.call('SADD', k_wtasks(w), unit)
    table.insert(out, unit)
    table.insert(out, token)
    table.insert(out, cid)
  end
end
return out
