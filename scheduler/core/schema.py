"""hpcq's rules as data, declared once: states and the transitions between them, what entering
each state does, which states each operation accepts, the Redis key shapes and hash fields, and
the texts hpcq records.

Everything here is generated into the preamble of every Lua script (``lua_preamble``), so the
scripts only choose targets; the Python side reads the same declarations (``states.py``,
``keys.py`` and ``model.Msg`` re-export them).  Changing a rule means editing this file."""

from __future__ import annotations

import enum


class TaskState(str, enum.Enum):
    Configuring = "Configuring"
    Submitted = "Submitted"
    Validating = "Validating"
    Queued = "Queued"
    Dispatching = "Dispatching"
    Running = "Running"
    Finished = "Finished"
    Failed = "Failed"
    Canceling = "Canceling"
    Canceled = "Canceled"

    def __str__(self) -> str:
        return self.value


class JobState(str, enum.Enum):
    Configuring = "Configuring"
    Submitted = "Submitted"
    Validating = "Validating"
    Queued = "Queued"
    Running = "Running"
    Finished = "Finished"
    Failed = "Failed"
    Canceling = "Canceling"
    Canceled = "Canceled"

    def __str__(self) -> str:
        return self.value


class WorkerState(str, enum.Enum):
    online = "online"        # heartbeating, takes work
    draining = "draining"    # shutting down: no new work, its tasks are being stopped
    lost = "lost"            # silent past worker_timeout: its attempts were ended
    stopped = "stopped"      # left cleanly

    def __str__(self) -> str:
        return self.value


T, J = TaskState, JobState

#: Allowed task transitions.  A sweep master uses the same table (it goes Queued -> Running
#: without Dispatching, since its instances are what get dispatched; a Queued master whose
#: instances all ended before any of them started - canceled one by one, before or after submit -
#: passes through Running to its end, as submit passes through Submitted and Validating, so that
#: a task goes Queued -> Finished only when the user finishes it, and never Queued -> Failed).
#: Submitted and Validating are passed through at submit (each move is an event); HPC Pack's
#: Finishing is not used: a task's end is recorded in the one step that sees its processes gone,
#: so nothing could ever observe it.
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.Configuring: frozenset({T.Submitted, T.Canceled}),
    T.Submitted: frozenset({T.Validating, T.Queued, T.Failed, T.Canceled}),
    T.Validating: frozenset({T.Queued, T.Failed, T.Canceled}),
    # Queued/Dispatching -> Finished: finished by the user (HPC Pack's Finish) before it ran.
    T.Queued: frozenset({T.Dispatching, T.Running, T.Canceling, T.Canceled, T.Finished}),
    # Dispatching -> Queued/Failed: the worker it was sent to was lost before it started;
    # -> Finished/Failed through Running only (a start Redis forgot is recorded first).
    T.Dispatching: frozenset({T.Running, T.Queued, T.Failed, T.Canceled, T.Finished}),
    # Running -> Queued: a rerunnable task whose attempt was lost (or a requeued sweep master).
    T.Running: frozenset({T.Finished, T.Failed, T.Canceling, T.Queued}),
    # Only a sweep master: one of its canceled instances was requeued (REQUEUE_TASK_FROM still
    # refuses requeuing a Finished task itself).
    T.Finished: frozenset({T.Queued}),
    # A task stopped while Canceling ends Failed, or Queued when a requeue waited on the stop;
    # a sweep master ends Canceled; either ends Finished when the user finished it.
    T.Canceling: frozenset({T.Failed, T.Canceled, T.Queued, T.Finished}),
    T.Failed: frozenset({T.Queued}),
    T.Canceled: frozenset({T.Queued}),
}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.Configuring: frozenset({J.Submitted, J.Canceled}),
    J.Submitted: frozenset({J.Validating, J.Queued, J.Failed, J.Canceled}),
    J.Validating: frozenset({J.Queued, J.Failed, J.Canceled}),
    J.Queued: frozenset({J.Running, J.Finished, J.Failed, J.Canceling, J.Canceled}),
    J.Running: frozenset({J.Queued, J.Finished, J.Failed, J.Canceling, J.Canceled}),
    # A Finished job goes back to Queued only when one of its canceled tasks is requeued.
    J.Finished: frozenset({J.Queued, J.Running}),
    J.Canceling: frozenset({J.Canceled}),
    J.Failed: frozenset({J.Queued, J.Running}),
    J.Canceled: frozenset({J.Queued, J.Running}),
}

TASK_END = frozenset({T.Finished, T.Failed, T.Canceled})
JOB_END = frozenset({J.Finished, J.Failed, J.Canceled})
#: A task holding a worker slot.
TASK_ON_WORKER = frozenset({T.Dispatching, T.Running, T.Canceling})
#: Not yet sent anywhere: still in the queue, the job's waiting set or a sweep's redo list.
TASK_PENDING = frozenset({T.Configuring, T.Submitted, T.Validating, T.Queued})
JOB_PENDING = frozenset({J.Configuring, J.Submitted, J.Validating})

#: What entering a state does, in order, after the move itself (the state field, the per-state
#: counts of the parent - the job for a task or sweep master, the master for an instance - and
#: an event), which every move makes.  Each name is a function of ``EFFECT`` in lua/lib.lua:
#:   unplace       out of the queue / waiting set / redo list (only if it was placed: pending,
#:                 or a sweep master leaving Running, which hands out instances)
#:   leave_worker  out of its worker's set (only if it was on a worker)
#:   join_worker   into its worker's set (ctx.node)
#:   await_start   into DISPATCHING, by its dispatch time (the scheduler takes back an attempt
#:                 never started within dispatch_timeout without reading every worker's set)
#:   dispatch_over  out of DISPATCHING, when it leaves Dispatching
#:   reset         a new run: results cleared, ctx.count (requeue_count/auto_requeue_count) + 1;
#:                 a sweep master's failed_sweeps mark taken back from its job
#:   place         where the dispatcher finds it: queue, or the job's waiting set while its
#:                 dependencies (nwait) have not ended or its job is blocked (parent jobs, a
#:                 hold); an instance: its master's redo list, and the master placed so (an
#:                 ended master is queued again); a --retry with a delay: DELAYED until due
#:   started       an instance's sweep master and the job start (the job's clock and runtime
#:                 limit); nothing for a master itself (its first instance starts it)
#:   ended         end time; dependents released; the sweep master and the job refreshed; a
#:                 sweep master ending Canceled with Failed instances (killed while running)
#:                 counts against its job (failed_sweeps), as a task killed running does
TASK_ON_ENTER: dict[TaskState, tuple[str, ...]] = {
    T.Configuring: (),
    T.Submitted: (),
    T.Validating: (),
    T.Queued: ("dispatch_over", "leave_worker", "reset", "place"),
    T.Dispatching: ("join_worker", "await_start"),
    T.Running: ("dispatch_over", "started"),
    # a sweep master being canceled leaves the queue (or the waiting set) at once
    T.Canceling: ("dispatch_over", "unplace"),
    T.Finished: ("dispatch_over", "unplace", "leave_worker", "ended"),
    T.Failed: ("dispatch_over", "unplace", "leave_worker", "ended"),
    T.Canceled: ("dispatch_over", "unplace", "leave_worker", "ended"),
}
#:   job_ended     end time, runtime deadline dropped, kept for retention (ENDED)
#:   job_reopened  a new run: end time, error and start time cleared (the clock starts again),
#:                 out of retention
JOB_ON_ENTER: dict[JobState, tuple[str, ...]] = {
    J.Configuring: (), J.Submitted: (), J.Validating: (), J.Running: (), J.Canceling: (),
    J.Queued: ("job_reopened",),
    J.Finished: ("job_ended",), J.Failed: ("job_ended",), J.Canceled: ("job_ended",),
}

#: The states each user operation accepts (HPC Pack's rules, docs/hpc-pack.md section 2).
#: Finish (HPC Pack's Finish) stops what runs like a cancel; what it ends, ends Finished.
FINISH_TASK_FROM = frozenset({T.Queued, T.Dispatching, T.Running, T.Canceling})
FINISH_JOB_FROM = frozenset({J.Queued, J.Running})
MODIFY_JOB_FROM = frozenset({J.Configuring, J.Queued})
ADD_TASK_TO = frozenset({J.Configuring, J.Queued, J.Running})
#: Canceling is accepted again so that a second cancel can escalate to force.
CANCEL_TASK_FROM = frozenset(
    {T.Configuring, T.Submitted, T.Validating, T.Queued, T.Dispatching, T.Running, T.Canceling})
REQUEUE_TASK_FROM = frozenset({T.Failed, T.Canceled, T.Running, T.Canceling, T.Queued})
CANCEL_JOB_FROM = frozenset(
    {J.Configuring, J.Submitted, J.Validating, J.Queued, J.Running, J.Canceling})
REQUEUE_JOB_FROM = frozenset({J.Canceled, J.Failed, J.Running})

# --- Redis keys ---------------------------------------------------------------------------------
PREFIX = "hpcq"

#: Every key hpcq writes: name -> (shape, type, what).  ``{}`` is the one argument.
KEYS: dict[str, tuple[str, str, str]] = {
    "JOB_SEQ": ("job:seq", "string", "last job id"),
    "JOBS": ("jobs", "zset", "every job id (score = id)"),
    "job": ("job:{}", "hash", "job fields, c:<State> task counts, ntasks"),
    "job_waiting": ("job:{}:waiting", "set", "task numbers held back by depends_on"),
    "task": ("task:{}", "hash", "task spec + state + results; a sweep master adds start/end/step, "
             "next (instances materialized), pre, cut and i:<State> counts"),
    "sweep_active": ("task:{}:active", "set", "instance numbers holding a worker slot"),
    "sweep_redo": ("task:{}:redo", "list", "instance numbers requeued, dispatched before new ones"),
    "sweep_ended": ("task:{}:ended", "set", "materialized instances that ended Failed or Canceled"),
    "task_rdeps": ("task:{}:rdeps", "set", "task numbers still waiting for this task to end"),
    "task_history": ("task:{}:history", "string", "the task's moves, a line each: time, state, "
                     "node, message (HISTORY_SEP between them); the oldest cut past HISTORY_BYTES"),
    "QUEUE": ("queue", "zset", "dispatchable task ids; score = priority band + submit seq"),
    "SEQ": ("seq", "string", "submit sequence"),
    "ATTEMPT": ("attempt", "string", "attempt-token sequence"),
    "WORKERS": ("workers", "zset", "worker name -> last heartbeat (Redis time)"),
    "worker": ("worker:{}", "hash", "slots, queue, info, state, beat, stale, u_cores, u_memory"),
    "worker_tasks": ("worker:{}:tasks", "set", "task ids dispatched to the worker, not yet ended"),
    "worker_jobs": ("worker:{}:jobs", "hash", "job id -> how many of the worker's tasks are its"),
    "worker_special": ("worker:{}:special", "set", "the worker's tasks that hold GPUs or are "
                       "exclusive (dispatch reads these, not every task on the worker)"),
    "DEADLINES": ("deadlines", "zset", "job id -> time its runtime expires"),
    "LEADER": ("leader", "string", "the dispatching scheduler's id (a lease with a TTL)"),
    "WAKEUP": ("wakeup", "list", "nudges for the dispatcher"),
    "EVENTS": ("events", "stream", "every state change (EVENT_FIELDS), the last ~EVENTS_KEEP"),
    "STATS": ("stats", "hash", "cluster-wide counters since the database was created (STATS)"),
    "ENDED": ("ended", "zset", "ended job id -> its end time (what retention purges, oldest first)"),
    "PURGING": ("purging", "set", "jobs whose records are being deleted (resumed by any scheduler)"),
    "DELAYED": ("delayed", "zset", "task or instance ids waiting out a --retry-delay -> when they "
                "are placed again (the dispatcher places those due)"),
    "DISPATCHING": ("dispatching", "zset", "units Dispatching -> their dispatch time (the "
                    "scheduler takes back those not started within dispatch_timeout)"),
    "HELD": ("held", "zset", "job id -> its hold_until (the dispatcher releases those due)"),
    "job_children": ("job:{}:children", "set", "jobs waiting for this job to end (their parents "
                     "field names it)"),
    "job_key": ("jobkey:{}", "string", "the id of the job submitted with this idempotency key"),
    "CLUSTER": ("cluster", "string", "when a scheduler or worker first ran against this Redis: "
                "a Redis without it holds no hpcq cluster, and commands say so"),
    "CANCEL_GRACE": ("cancel_grace", "string", "the cluster's cancel grace period in seconds, as the "
                     "leading scheduler was started with (HPCQ_TASK_CANCEL_GRACE_PERIOD): what a "
                     "cancel without a grace of its own records for the worker"),
    "ADMINS": ("admins", "string", "the administrators' user names, comma-separated, as the "
               "scheduler publishes HPCQ_ADMINS (clients never set it)"),
    "job_purge": ("purge:{}", "hash", "a job being purged: t, i = the task and instance left to delete"),
    "job_active": ("job:{}:active", "set", "the job's task and instance ids on a worker (what a "
                   "job cancel stops first)"),
    "JOB_OPS": ("jobops", "set", "jobs with a chunked operation in progress (op; resumed by the "
                "leading scheduler)"),
}

#: Hash fields that more than one script, or Python and Lua, read: named once here.
FIELDS = {
    "state": "the state", "changed": "time of the last move",
    "token": "the current attempt's token", "celery_id": "the current attempt's Celery task id",
    "node": "the worker of the current (or last) attempt", "score": "queue score",
    "total": "a sweep's instance count (a task with it is a sweep master)",
    "next": "instances materialized so far", "pre": "instances given a record before their turn",
    "cut": "where a master cancel cut the sweep off",
    "cut_as": "the state the cut-off instances count as: Finished when the sweep was finished "
              "(task finish), else (absent) Canceled", "nwait": "dependencies not yet ended",
    "explicit": "canceled on purpose (stays Canceled when the job is requeued)",
    "rerunnable": "the task may be rerun", "unlisted": "when its worker stopped listing it",
    "pwait": "a job: parent jobs (depends_on_job) not yet ended",
    "parent_failed": "a job: the parent whose failure failed it without starting",
    "held": "a job: '1' while its hold_until is in the future (its tasks wait in its waiting set)",
    "finish": "a task (or job) being finished by the user: ends Finished, not Failed/Canceled",
    "retry_count": "command failures retried in this run (--retry), reset by a requeue",
    "op": "a job: the operation on all its tasks still in progress, a step of STEP_TASKS at a "
          "time (submit, cancel, finish, fail, requeue; lua/lib_ops.lua)",
    "op_at": "a job: the next task number its op handles",
    "seq0": "a job: its tasks' queue scores are band + seq0 + task number (reserved at submit)",
    "failed_sweeps": "a sweep master: it ended Canceled with Failed instances; a job: how many "
                     "of its sweeps did (each counts against the job as a Failed task)",
    "failed_sweep": "a job: the sweep master that last ended Canceled with Failed instances, "
                    "named in the job's error (dropped when that sweep is requeued)",
    "u_cores": "a worker: the cores its tasks were given (a_cores summed over worker_tasks)",
    "u_memory": "a worker: the memory its tasks were given (a_memory summed over worker_tasks)",
}

#: What the worker reads of a task's spec to start an attempt (start.lua returns only these, not
#: the whole record: a sweep master's hash also holds its counts and cursors).
START_FIELDS = ("command", "name", "env", "work_dir", "stdin", "stdout", "stderr", "runtime")

#: Tasks one step of a job operation handles (the job's op: submit, cancel, finish, fail,
#: requeue).  Those scripts loop over the job's tasks; one step for a 100,000-task job blocked
#: Redis for seconds, so the first step is made by the script that starts the operation and the
#: rest by job_step.lua, each short (the figures are in docs/scaling.md).
STEP_TASKS = 128

#: Queue scores: a task's is its job's priority band (``api.control.band``: higher priorities
#: in lower bands, so they sort first) plus its submit sequence, which stays below one band.
PRIORITY_BAND = 1 << 45

#: What a task asks for (its record's fields; a sweep instance asks what its master asks) and,
#: prefixed ``a_``, what its current attempt was given (written by dispatch on the unit's own
#: record; the worker's usage is the sum over its attempts).  A worker advertises the same names
#: (``gpus`` as a comma-separated id list, ``groups`` comma-separated) in its record.
RESOURCES = {
    "cores": "cores (CCP_NUMCPUS); default 1", "memory": "MB of memory; default 0 (not counted)",
    "gpus": "GPUs (a task: how many; an attempt: which ids, CUDA_VISIBLE_DEVICES)",
    "group": "the node group the worker must be in", "exclusive": "'1': alone on its worker",
}

# --- the event stream ---------------------------------------------------------------------------
#: The fields of every entry of the ``EVENTS`` stream, one entry per state change (written by
#: ``emit`` in lua/lib.lua, read by scheduler/api/events.py).  Every entry has all of them (empty
#: when there is none), so Redis stores the names once per stream node, not once per entry.
EVENT_FIELDS = {
    "ts": "Redis time of the move, seconds with microseconds (as the records' times)",
    "kind": "job, task (a task, sweep master or sweep instance) or worker",
    "id": "the job id, task id J.T[.I] or worker name",
    "from": "the state before ('' when the object was created)",
    "state": "the state entered",
    "node": "a task: the worker it is on or just left; a worker: its own name",
    "msg": "the error or cancel message of the move, where there is one",
}
#: Entries the stream keeps (trimmed with ``MAXLEN ~``, so a little more): measured 72 bytes an
#: entry on Redis 6.2 (more for one with a message), so about 7 MB of Redis memory, an hour of a
#: cluster moving ~30 tasks a second (~4 events each after submit).  One value for the whole
#: cluster (every script that moves something trims), hence declared here, not a setting.
EVENTS_KEEP = 100_000
#: Where an event (and a task's history line) finds its message when the script passes none
#: (ctx.msg): the first non-empty of these fields of the record entering the state (a job's
#: states of the same names read its ``error``).
EVENT_MESSAGE: dict[TaskState, tuple[str, ...]] = {
    T.Canceling: ("cancel_error", "error"), T.Failed: ("error",), T.Canceled: ("error",),
}
#: A task's history (``task_history``): lines of HISTORY_SEP-separated (time, state, node,
#: message), appended by every move; the oldest lines are dropped once it passes HISTORY_BYTES (a
#: task rerun dozens of times).  A string of its own and not a field of the task's hash: a
#: field over 64 bytes turns a small hash from listpack into a hashtable, measured 584 -> 2432
#: bytes for a finished task, while the string costs ~260 (and APPEND needs no read).
HISTORY_SEP = "\t"
HISTORY_BYTES = 4096

#: The fields of the ``STATS`` hash: counters of the whole cluster, incremented by the scripts.
STATS = {
    "attempts_lost": "attempts that ended lost (worker lost, supervisor died, shutdown, never "
                     "started, record lost)",
    "attempts_rerun": "lost attempts that had run and were queued again (auto_requeue_count)",
}

#: How an attempt ended, as its worker (or whoever found it gone) reports it: its command's
#: result, or lost (never recorded by its supervisor).
OUTCOMES = ("exit", "lost")

#: The Celery task id of one attempt: built by the dispatch script, parsed by the transport.
CELERY_ID = "hpcq-{}-{}"


def key(name: str, arg=None) -> str:
    shape = KEYS[name][0]
    return f"{PREFIX}:{shape.format(arg) if '{}' in shape else shape}"


# --- texts ------------------------------------------------------------------------------------
class Msg:
    """Every text hpcq records or refuses with; the Lua scripts get these as ``MSG``."""

    canceled_by_user = "Canceled by user. Message: {}"
    canceled_during_execution = "The task has been canceled by the user during execution. Message: {}"
    task_runtime_expired = "Canceled by the scheduler because the task's runtime has expired."
    job_runtime_expired = "Canceled by the scheduler because the job's run time expired."
    task_not_found = "task {} does not exist"
    job_not_found = "job {} does not exist"
    not_permitted = ("only the job's owner or an administrator can {} {} (it belongs to {}; "
                     "you are {})")
    task_cannot_cancel = "Tasks in the {} state cannot be canceled."
    job_cannot_cancel = "Jobs in the {} state cannot be canceled."
    message_too_long = "Cancel message should not contain more than 128 characters."
    not_rerunnable = "The task could not be requeued because it is not marked as rerunnable."
    task_cannot_requeue = "Tasks in the {} state cannot be requeued."
    job_cannot_requeue = "Jobs in the {} state cannot be requeued."
    job_failed_on_task = "The job failed because task {} failed."
    stopped_by_job_failure = "Canceled by the scheduler because task {} failed and the job fails on task failure."
    exit_code = "The task exited with code {}."
    killed = "The task was killed by signal {}."
    worker_lost = "Node {} became unreachable."
    worker_stopped = "The worker {} was stopped while the task ran."
    never_started = "The task was sent to {} but never started there; it was queued again."
    supervisor_died = "The process supervising the task on {} died ({})."
    worker_unlisted = "The worker {} no longer runs the task (its record of it was lost)."
    fenced = "The worker {} could not reach Redis for {} s and stopped the task."
    worker_failed = "The worker failed while running the task: {}"
    retry_limit = ("{} The task was already rerun {} times after system errors (TaskRetryCount {}), "
                   "so it is not rerun again.")
    cannot_submit = "Only jobs in the Configuring state can be submitted; job {} is {}."
    cannot_add = "Tasks can only be added to a Configuring, Queued or Running job; job {} is {}."
    job_changed = "job {} changed while it was being submitted"
    job_has_no_tasks = "job {} has no tasks: add one first (hpcq job add {} -- COMMAND)"
    cannot_purge = "Only Finished, Failed or Canceled jobs can be purged; job {} is {}."
    tasks_not_configuring = "job {}: {} of its {} tasks are neither Configuring nor Canceled"
    instance_cut = "Sweep instance {} was canceled with its master; requeue the master {}."
    job_cannot_requeue_tasks = "Tasks of a job in the {} state cannot be requeued."
    sweep_cannot_requeue_instances = "Instances of a sweep in the {} state cannot be requeued."
    job_never_submitted = "Job {} was canceled before it was submitted, so it cannot be requeued."
    task_never_submitted = "Task {} was canceled before its job was submitted, so it cannot be requeued."
    tasks_failed = "{} task(s) failed."
    job_needs_a_task = "a job needs at least one task"
    requeued = "Requeued."
    sweep_canceled_failed = "The job failed because task {} was canceled with {} failed instance{}."
    sweeps_canceled_failed = ("The job failed because {} task(s) failed and {} sweep(s) were canceled "
                              "with failed instances (the last: task {}, {} failed).")
    retrying = "Attempt {}: {} Retry {} of {} in {} s."
    retries_spent = "Attempt {}: {} It was retried {} times (--retry), so it is not retried again."
    parent_failed = "The job failed without starting because its parent job {} is {}."
    parent_not_found = "parent job {} does not exist"
    parent_is_self = "a job cannot depend on itself"
    finished_by_user = "Finished by user."
    task_cannot_finish = "Tasks in the {} state cannot be finished."
    job_cannot_finish = "Jobs in the {} state cannot be finished."
    job_cannot_modify = "Only Configuring or Queued jobs can be modified; job {} is {}."
    job_finishing = "Tasks cannot be added to job {}: it is being finished."
    job_key_taken = "the key {} belongs to job {}, which was not submitted with it"
    instances_failed = "{} instance(s) failed."


def cancel_texts(message: str = "") -> tuple[str, str]:
    """HPC Pack's texts for a cancel with ``message`` (already checked): what a task that had
    not started records, and what a running one records once its processes are gone.  The one
    place ``Msg.canceled_by_user`` and ``Msg.canceled_during_execution`` are formatted."""
    if not message:  # HPC Pack's text without a dangling "Message: "
        return (Msg.canceled_by_user.partition(" Message:")[0],
                Msg.canceled_during_execution.partition(" Message:")[0])
    return Msg.canceled_by_user.format(message), Msg.canceled_during_execution.format(message)


# --- the Lua generated from these declarations (scheduler/core/preamble.py) ------------------
def lua_preamble(inline: bool = False) -> str:
    from scheduler.core import preamble
    return preamble.lua_preamble(inline)


def inline_names(source: str) -> str:
    from scheduler.core import preamble
    return preamble.inline_names(source)
