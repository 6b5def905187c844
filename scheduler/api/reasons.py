"""Why a task or job that has not started waits, in one line: the ``Reason`` row of
``hpcq task view`` / ``job view`` and their ``"reason"`` in ``--json`` (Slurm's squeue REASON).
None when it is not waiting (started, or ended).

The first that applies, in the order a user would have to fix things:

  not submitted    its job is still Configuring
  held             "held until 2026-11-26 08:00:00" (its job's --hold-until), "waiting for job 3
                   to end" (its job's --depends-on-job parents)
  dependencies     "waiting for task 3.1 (prep) to end": its ``nwait`` > 0; the names in its
                   ``depends_on`` whose tasks still hold it (their ``rdeps`` set)
  no workers       "no workers are online" (see nodes.py for what online means)
  no scheduler     "no scheduler is running (hpcq scheduler)": nobody holds the dispatch lease
  never fits       "needs 8 cores; the largest worker has 4" (placement.never_fits)
  busy slots       "all 4 slots are busy", and where it stands in the queue
  queue            "behind 3 higher-priority or earlier tasks in the queue" (ZRANK in the queue;
                   a sweep instance counts its master's rank and the instances before it)
  free slots       dispatched at the scheduler's next pass

A job (Queued, or the Submitted/Validating a submit passes through) is as far as its task
nearest the queue's head: its reason is that task's.  Reads only; never a Lua script."""

from __future__ import annotations

from datetime import datetime

from scheduler.api import nodes, placement
from scheduler.core import keys
from scheduler.core.ids import TaskId
from scheduler.core.states import JOB_END, JobState, TaskState

#: Task records read per pipelined round trip.
BATCH = 1000
#: States in which a task (or job) is waiting to be dispatched.
TASK_WAITING = {TaskState.Submitted, TaskState.Validating, TaskState.Queued}
JOB_WAITING = {JobState.Submitted, JobState.Validating, JobState.Queued}


def _held(scheduler, obj) -> str | None:
    """A job held (--hold-until) or waiting for its parent jobs (--depends-on-job); a task
    says what its job waits for."""
    store = scheduler.store
    j = obj.id if isinstance(obj.id, int) else obj.id.job
    rec = obj.record if isinstance(obj.id, int) else store._do(store.redis.hgetall, keys.job(j))
    if rec.get("held") == "1" and rec.get("hold_until"):
        when = datetime.fromtimestamp(float(rec["hold_until"])).strftime("%Y-%m-%d %H:%M:%S")
        return f"held until {when}" + ("" if isinstance(obj.id, int) else f" (job {j})")
    if int(rec.get("pwait") or 0) > 0:
        parents = [int(p) for p in (rec.get("parents") or "").split(",") if p]
        pipe = store.redis.pipeline(transaction=False)
        for p in parents:
            pipe.hget(keys.job(p), "state")
        waiting = [str(p) for p, st in zip(parents, store._do(pipe.execute) if parents else [])
                   if st and JobState(st) not in JOB_END]
        if waiting:
            jobs = f"job {waiting[0]}" if len(waiting) == 1 else f"jobs {', '.join(waiting)}"
            return f"waiting for {jobs} to end" + ("" if isinstance(obj.id, int) else f" (job {j})")
    return None


def task_reason(scheduler, task) -> str | None:
    """Why ``task`` (a client.Task: a task, a sweep master or an instance) waits, or None."""
    if task.state == TaskState.Configuring:
        return f"job {task.id.job} is not submitted"
    if task.state not in TASK_WAITING:
        return None
    return _held(scheduler, task) or _depends(scheduler, task) or _dispatch(scheduler, [task.id])


def job_reason(scheduler, job) -> str | None:
    """Why ``job`` (a client.Job) waits, or None: its own state, else its task nearest the
    queue's head (a job is Queued until one of its tasks starts)."""
    if job.state == JobState.Configuring:
        return "not submitted"
    if job.state not in JOB_WAITING:
        return None
    held = _held(scheduler, job)
    if held:
        return held
    store = scheduler.store
    ids = [TaskId(job.id, t) for t in range(1, job.task_count + 1)]
    first_waiting = None
    queued: list[TaskId] = []
    for lo in range(0, len(ids), BATCH):
        batch = ids[lo:lo + BATCH]
        pipe = store.redis.pipeline(transaction=False)
        for tid in batch:
            pipe.hmget(keys.task(tid), "state", "nwait")
        for tid, (state, nwait) in zip(batch, store._do(pipe.execute)):
            if state in TASK_WAITING:
                first_waiting = first_waiting or tid
                if int(nwait or 0) <= 0:
                    queued.append(tid)
    if queued:
        return _dispatch(scheduler, queued)
    if first_waiting:
        return task_reason(scheduler, scheduler.get_task(first_waiting))
    return None


# --- dependencies -----------------------------------------------------------------------------
def _depends(scheduler, task) -> str | None:
    """The dependencies still holding the task (a sweep instance: its master's)."""
    tid = task.id.master
    rec = task.record.get("_master", task.record)
    nwait = int(rec.get("nwait") or 0)
    if nwait <= 0:
        return None
    store, r = scheduler.store, scheduler.store.redis
    names = set(task.depends_on)
    ntasks = int(store._do(r.hget, keys.job(tid.job), "ntasks") or 0)
    candidates: list[tuple[TaskId, str]] = []
    for lo in range(1, ntasks + 1, BATCH):
        batch = [TaskId(tid.job, t) for t in range(lo, min(lo + BATCH, ntasks + 1))]
        pipe = r.pipeline(transaction=False)
        for d in batch:
            pipe.hget(keys.task(d), "name")
        candidates += [(d, n) for d, n in zip(batch, store._do(pipe.execute))
                       if n in names and d != tid]
    pipe = r.pipeline(transaction=False)
    for d, _ in candidates:
        pipe.sismember(keys.task_rdeps(d), tid.task)
    holding = [f"{d} ({n})" for (d, n), member in
               zip(candidates, store._do(pipe.execute) if candidates else []) if member]
    if not holding:
        return f"waiting for {placement.plural(nwait, 'dependency', 'dependencies')} to end"
    if len(holding) == 1:
        return f"waiting for task {holding[0]} to end"
    shown = holding if len(holding) <= 4 else [*holding[:3], f"{len(holding) - 3} more"]
    return f"waiting for tasks {', '.join(shown[:-1])} and {shown[-1]} to end"


# --- dispatch ---------------------------------------------------------------------------------
def _sweep_ahead(scheduler, tid: TaskId) -> int:
    """Instances of its own sweep handed out before instance ``tid``: the master hands out its
    redo list (requeued instances, popped from the right) first, then new ones in order."""
    m, store = tid.master, scheduler.store
    pipe = store.redis.pipeline(transaction=False)
    pipe.exists(keys.task(tid))
    pipe.hget(keys.task(m), "next")
    pipe.llen(keys.sweep_redo(m))
    pipe.lpos(keys.sweep_redo(m), tid.instance)
    has_record, nxt, redo, pos = store._do(pipe.execute)
    if has_record:    # a requeued instance waits in the redo list
        return redo - 1 - pos if pos is not None else 0
    return redo + max(0, tid.instance - 1 - int(nxt or 0))


def _first_in_queue(scheduler, tids: list[TaskId]) -> tuple[int, TaskId] | None:
    """(units ahead of it, which) for the one of ``tids`` nearest the queue's head (an instance
    stands there as its master), in pipelined batches; None if none is in the queue."""
    store, best = scheduler.store, None
    for lo in range(0, len(tids), BATCH):
        batch = tids[lo:lo + BATCH]
        pipe = store.redis.pipeline(transaction=False)
        for tid in batch:
            pipe.zrank(keys.QUEUE, str(tid.master))
        for tid, rank in zip(batch, store._do(pipe.execute)):
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, tid)
    return best


def _behind(rank: int, in_sweep: int, master: TaskId) -> str:
    parts = []
    if rank:
        parts.append(placement.plural(rank, "higher-priority or earlier task") + " in the queue")
    if in_sweep:
        parts.append(placement.plural(in_sweep, "earlier instance") + f" of sweep {master}")
    return "behind " + " and ".join(parts) if parts else ""


def _dispatch(scheduler, tids: list[TaskId]) -> str | None:
    """What keeps the first of ``tids`` in queue order from being dispatched."""
    workers = nodes.node_list(scheduler.store, scheduler.settings.worker_timeout)
    online = [n for n in workers if n.takes_work]
    if not online:
        others = [f"{k} {s}" for s in (nodes.UNREACHABLE, "draining")
                  if (k := sum(n.state == s for n in workers))]
        return "no workers are online" + (f" ({', '.join(others)})" if others else "")
    if not scheduler.store._do(scheduler.store.redis.get, keys.LEADER):
        return "no scheduler is running (hpcq scheduler)"
    first = _first_in_queue(scheduler, tids)
    if first is None:
        return None
    rank, tid = first
    spec = scheduler.store.task(tid.master) or {}
    why = placement.never_fits(placement.Request.of(spec), online)
    if why:
        return why
    in_sweep = _sweep_ahead(scheduler, tid) if tid.instance else 0
    behind = _behind(rank, in_sweep, tid.master)
    free = sum(n.free for n in online)
    if not free:
        slots = sum(n.slots for n in online)
        busy = f"all {slots} slots are busy" if slots != 1 else "the only slot is busy"
        return f"{busy}; {behind}" if behind else busy
    if rank + in_sweep >= free:
        return behind
    req = placement.Request.of(spec)
    if req != placement.Request():
        asks = ", ".join(filter(None, [f"{req.cores} cores" if req.cores > 1 else "",
                                       f"{req.gpus} GPUs" if req.gpus else "",
                                       f"{req.memory} MB" if req.memory else "",
                                       f"group {req.group}" if req.group else "",
                                       "a worker to itself" if req.exclusive else ""]))
        return f"waiting for a worker with room for it (it needs {asks or '1 core'})"
    return f"{placement.plural(free, 'slot')} free: dispatched at the scheduler's next pass"
