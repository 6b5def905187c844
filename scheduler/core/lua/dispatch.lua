-- ARGV: worker name, most tasks to hand out.  Pops the queue head in priority order up to the
-- worker's free slots; each popped task (or the next instance of a sweep) goes Dispatching with a
-- fresh attempt token.  Returns id, token, celery id for each.
local w, want = ARGV[1], tonumber(ARGV[2])
local wv = redis.call('HMGET', K.worker(w), 'slots', F.state, 'stale')
-- a lost, draining or stopped worker gets nothing; slots held by stale attempts being killed are not free
if wv[2] == WS.lost or wv[2] == WS.stopped or wv[2] == WS.draining then return {} end
local free = num(wv[1]) - redis.call('SCARD', K.worker_tasks(w)) - num(wv[3])
if want > free then want = free end
local out = {}
if want <= 0 then return out end
local ts = now()
while #out < want * 3 do
  local head = redis.call('ZRANGE', K.QUEUE, 0, 0)
  if #head == 0 then break end
  local id = head[1]
  local tk = K.task(id)
  local unit
  if redis.call('HEXISTS', tk, F.total) == 1 then
    local i = redis.call('RPOP', K.sweep_redo(id))
    if not i then
      local v = redis.call('HMGET', tk, F.next, F.total)
      local nxt, total = num(v[1]), num(v[2])
      while not i and nxt < total do
        nxt = redis.call('HINCRBY', tk, F.next, 1)
        if redis.call('EXISTS', K.task(id .. '.' .. nxt)) == 1 then
          redis.call('HINCRBY', tk, F.pre, -1)   -- canceled (or requeued) before its turn
        else
          i = nxt
          materialize(id .. '.' .. i, S.Queued, ts, true)
        end
      end
    end
    if i then unit = id .. '.' .. i end
    local v = redis.call('HMGET', tk, F.next, F.total)
    if num(v[1]) >= num(v[2]) and redis.call('LLEN', K.sweep_redo(id)) == 0 then
      redis.call('ZREM', K.QUEUE, id)
    end
  else
    redis.call('ZREM', K.QUEUE, id)
    if redis.call('HGET', tk, F.state) == S.Queued then unit = id end
  end
  if unit then
    -- unique even if Redis lost its last writes and counts again: the sequence, then microseconds
    local token = string.format('%d%06d', redis.call('INCR', K.ATTEMPT), tonumber(redis.call('TIME')[2]))
    local cid = celery_id(unit, token)
    redis.call('HSET', K.task(unit), F.token, token, F.celery_id, cid, F.node, w, 'dispatch_time', ts)
    enter('task', unit, S.Dispatching, {ts = ts, node = w, from = S.Queued})
    table.insert(out, unit)
    table.insert(out, token)
    table.insert(out, cid)
  end
end
return out
