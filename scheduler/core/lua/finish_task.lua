-- ARGV: task id, message, grace seconds or '', user (check_permitted in lib.lua).  HPC Pack's task
-- Finish: a task (or instance) that has not started ends Finished at once; a running one is stopped
-- as a cancel stops it (SIGTERM, grace, SIGKILL) and then ends Finished with the message; a sweep
-- master ends Finished once its instances are (those never handed out count as Finished). Returns
-- {state after, celery id, mode, ...}.
local id, msg, grace = ARGV[1], ARGV[2], ARGV[3]
check_permitted(split_id(id), ARGV[4] or '', 'finish', 'task ' .. id)
local tk = K.task(id)
local st = unit_state(id)
if not st then fail('NOTFOUND', string.format(MSG.task_not_found, id)) end
if not FINISH_TASK_FROM[st] then fail('STATE', string.format(MSG.task_cannot_finish, st)) end
local ts = now()
if redis.call('EXISTS', tk) == 0 then materialize(id, st, ts) end
local out = {}
local o = {qmsg = msg, rmsg = msg, grace = grace, finish = true}
if is_master(id) then cancel_master(id, ts, o, out) else cancel_unit(id, ts, o, out) end
wakeup()
return reply(tk, out)
