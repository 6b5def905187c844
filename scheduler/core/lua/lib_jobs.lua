-- Shared helpers, part 5 (after lib_attempt.lua): a job's parents (what ending one does to the
-- jobs that depend on it).

-- === jobs: parents ===========================================================================
-- Job j fails without starting because its parent p ended `pst` (Failed or Canceled) and it
-- did not ask to run anyway (run_on_parent_failure): its tasks are canceled with the reason (by
-- its fail op; revokes to `out` if given - none run: they waited for the parent).
function JOBS.parent_failed(j, p, pst, ts, out)
  local jk = K.job(j)
  local st = redis.call('HGET', jk, F.state)
  if st ~= S.Queued and st ~= S.Running then return end
  local msg = string.format(MSG.parent_failed, p, pst)
  redis.call('HSET', jk, 'error', msg, F.parent_failed, p)
  enter('job', j, S.Failed, {ts = ts})     -- (its end stops it waiting for its other parents)
  begin_op(j, 'fail', {qmsg = msg, rmsg = msg})
  step_op(j, STEP_TASKS, out or {})
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
