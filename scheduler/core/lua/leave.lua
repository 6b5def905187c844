-- ARGV: worker name.  The worker left cleanly (its last step, after its last heartbeat): no
-- heartbeat score (the dispatcher gives it nothing; the scheduler reclaims what was sent to it
-- but never started), state stopped, and the event.  Never refuses.
local w = ARGV[1]
redis.call('ZADD', K.WORKERS, 0, w)
worker_enter(w, redis.call('HGET', K.worker(w), F.state) or '', WS.stopped, '', now())
return 1
