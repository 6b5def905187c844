-- ARGV: idempotency key ('' for none), then JSON {job = [field, value, ...], tasks = [[field,
-- value, ...], ...], deps = ["1,2", ...], band = N, submit = true|false}.
-- A whole job in one step: created, filled and (if asked) submitted, so a client that loses
-- the reply and calls again with the same key gets the same job back instead of a second one.
-- Returns {job id, 1 if created now else 0}.
local key = ARGV[1]
if key ~= '' then
  local found = redis.call('GET', K.job_key(key))
  if found and redis.call('EXISTS', K.job(found)) == 1 then return {tonumber(found), 0} end
end
local p = cjson.decode(ARGV[2])
for k = 1, #p.job - 1, 2 do
  if p.job[k] == 'parents' then check_parents(p.job[k + 1]) end
end
if p.submit and #p.tasks == 0 then fail('INPUT', 'a job needs at least one task') end
local ts = now()
local j = create_job(p.job, ts)
if key ~= '' then
  redis.call('SET', K.job_key(key), j)
  redis.call('HSET', K.job(j), 'key', key)
end
for _, rec in ipairs(p.tasks) do add_task_record(j, rec, ts) end
if p.submit then submit_job(j, p.band, p.deps, ts) end
return {j, 1}
