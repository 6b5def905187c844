-- Shared helpers, part 3 (after lib_stop.lua): a job's parents (what ending one does to the
-- jobs that depend on it).

-- === jobs: parents ===========================================================================
-- Job j fails without starting because its parent p ended `pst` (Failed or Canceled) and it
-- did not ask to run anyway (run_on_parent_failure): its tasks are canceled with the reason.
function JOBS.parent_failed(j, p, pst, ts)
  local jk = K.job(j)
  local st = redis.call('HGET', jk, F.state)
  if st ~= S.Queued and st ~= S.Running then return end
  local msg = string.format(MSG.parent_failed, p, pst)
  redis.call('HSET', jk, 'error', msg, F.parent_failed, p)
  enter('job', j, S.Failed, {ts = ts})     -- (its end stops it waiting for its other parents)
  local revokes = {}
  cancel_all(j, ts, {qmsg = msg, rmsg = msg}, '', revokes)
end

-- Job j ended `to`: each job waiting for it has one parent fewer to wait for; it starts once
-- none is left (and its hold passed), or fails at once if `to` is not Finished.
function JOBS.release_children(j, to, ts)
  local ck = K.job_children(j)
  for _, c in ipairs(redis.call('SMEMBERS', ck)) do
    local v = redis.call('HMGET', K.job(c), F.state, 'run_on_parent_failure')
    if v[1] and not JOB_END[v[1]] then
      redis.call('HINCRBY', K.job(c), F.pwait, -1)
      if to ~= S.Finished and v[2] ~= '1' then
        JOBS.parent_failed(c, j, to, ts)
      else
        job_unblock(c)
      end
    end
  end
  redis.call('DEL', ck)
  wakeup()
end
