"""The one module that names hpcq's Redis keys.  The Lua scripts build the same names through
the helpers in ``lua/lib.lua``, which are generated from ``PREFIX`` here.

Layout (hash unless noted):
  hpcq:job:seq            string  last job id
  hpcq:jobs               zset    every job id (score = id)
  hpcq:job:J              job fields, ``c:<State>`` task counts, ``ntasks``
  hpcq:job:J:waiting      set     task numbers held back by depends_on
  hpcq:task:J.T           task spec + state + results; a sweep master adds start/end/step,
                          ``next`` (instances materialized so far) and ``i:<State>`` counts
  hpcq:task:J.T.I         a sweep instance: state + results, created when dispatched
  hpcq:task:J.T:active    set     instance numbers holding a worker slot
  hpcq:task:J.T:redo      list    instance numbers requeued, dispatched before new ones
  hpcq:task:J.T:ended     set     materialized instance numbers that ended Failed or Canceled
  hpcq:task:J.T:rdeps     set     task numbers still waiting for J.T to end (depends_on)
  hpcq:queue              zset    dispatchable task ids; score = priority band + submit seq
  hpcq:seq                string  submit sequence
  hpcq:attempt            string  attempt-token sequence
  hpcq:workers            zset    worker name -> last heartbeat (unix time)
  hpcq:worker:W           slots, queue, pid, started
  hpcq:worker:W:tasks     set     task ids dispatched to W and not yet ended
  hpcq:deadlines          zset    job id -> time its runtime expires
  hpcq:leader             string  the dispatching scheduler's id (a lease with a TTL)
  hpcq:wakeup             list    nudges for the dispatcher
  hpcq:events             stream  every state change
"""

PREFIX = "hpcq"

JOB_SEQ = f"{PREFIX}:job:seq"
JOBS = f"{PREFIX}:jobs"
QUEUE = f"{PREFIX}:queue"
SEQ = f"{PREFIX}:seq"
ATTEMPT = f"{PREFIX}:attempt"
WORKERS = f"{PREFIX}:workers"
DEADLINES = f"{PREFIX}:deadlines"
LEADER = f"{PREFIX}:leader"
WAKEUP = f"{PREFIX}:wakeup"
EVENTS = f"{PREFIX}:events"


def job(job_id: int) -> str:
    return f"{PREFIX}:job:{job_id}"


def job_waiting(job_id: int) -> str:
    return f"{PREFIX}:job:{job_id}:waiting"


def task(task_id) -> str:
    return f"{PREFIX}:task:{task_id}"


def sweep_active(master_id) -> str:
    return f"{PREFIX}:task:{master_id}:active"


def sweep_redo(master_id) -> str:
    return f"{PREFIX}:task:{master_id}:redo"


def sweep_ended(master_id) -> str:
    return f"{PREFIX}:task:{master_id}:ended"


def task_rdeps(task_id) -> str:
    return f"{PREFIX}:task:{task_id}:rdeps"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def worker_tasks(name: str) -> str:
    return f"{PREFIX}:worker:{name}:tasks"


def worker_queue(name: str) -> str:
    """The Celery queue that only worker ``name`` consumes."""
    return f"{PREFIX}.w.{name}"


def lua_preamble() -> str:
    return f'local PREFIX = "{PREFIX}"\n'
