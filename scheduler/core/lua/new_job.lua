-- ARGV: idempotency key ('' for none), then JSON {job = [field, value, ...], tasks = [[field,
-- value, ...], ...], deps = ["1,2", ...], band = N, submit = true|false, job_id = J}.
-- A whole job in one step: created, filled and (if asked) submitted, so a client that loses
-- the reply and calls again with the same key gets the same job back instead of a second one.
-- A job too large for one step is built in several: the first creates it (submit false), the
-- next ones name it (job_id: its tasks are added; it must still be Configuring), and submit.lua
-- submits it (its tasks then by its submit op, lib_ops.lua).
-- Returns {job id, 1 if created now else 0, 'more:<job>' while its submit op is not done}.
local key = ARGV[1]
if key ~= '' then
  local found = redis.call('GET', K.job_key(key))
  if found and redis.call('EXISTS', K.job(found)) == 1 then return {tonumber(found), 0} end
end
local p = cjson.decode(ARGV[2])
local ts = now()
local j
if p.job_id then
  j = tostring(p.job_id)
  local st = job_state(j)
  if st ~= S.Configuring then fail('STATE', string.format(MSG.cannot_submit, j, st)) end
else
  for k = 1, #p.job - 1, 2 do
    if p.job[k] == 'parents' then check_parents(p.job[k + 1]) end
  end
  if p.submit and #p.tasks == 0 then fail('INPUT', MSG.job_needs_a_task) end
  j = create_job(p.job, ts)
end
local t0 = num(redis.call('HGET', K.job(j), 'ntasks'))
for k, rec in ipairs(p.tasks) do
  local t = add_task_record(j, rec, ts)
  if p.deps[k] and p.deps[k] ~= '' then redis.call('HSET', K.task(j .. '.' .. t), 'deps', p.deps[k]) end
end
if key ~= '' then
  redis.call('SET', K.job_key(key), j)
  redis.call('HSET', K.job(j), 'key', key)
end
local out = {}
if p.submit then submit_job(j, p.band, ts, out) end
return {tonumber(j), p.job_id and 0 or 1, out[#out]}
