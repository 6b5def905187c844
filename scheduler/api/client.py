"""The Python API, shaped like HPC Pack's IScheduler / ISchedulerJob / ISchedulerTask.

Objects are thin views of Redis records: properties read what was last loaded, ``refresh()``
reloads, and every operation is one atomic script in the store.  Cancels of running tasks are
then published as Celery revokes; the call waits for the end state unless ``wait=False``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from scheduler.errors import InvalidInput, InvalidState, NoCluster, NotFound, RedisUnavailable, WaitTimeout
from scheduler.core.ids import TaskId, parse_job_id
from scheduler.core.schema import cancel_texts
from scheduler.api.model import JobSpec, Msg, TaskSpec, check_cancel_message
from scheduler import retention
from scheduler.api import events as _events, nodes, permissions, placement, reasons
from scheduler.api.control import Control, band as _band, parse_time
from scheduler.api.records import JobView, TaskView, instance_record
from scheduler.settings import Settings, get_settings, mask_url
from scheduler.core.states import JOB_END, TASK_END, JobState, TaskState
from scheduler.core.store import Store
from scheduler.api.connection import check_url, no_cluster_message, unreachable_message  # (re-exported)
from scheduler.api.submission import TaskInput, submission_checks, task_specs
from scheduler.transport import make_celery, parse_celery_id, publish_revokes

POLL = 0.05
#: Records read per pipelined round trip when listing.
BATCH = 1000


def _check_key(key) -> None:
    if key is not None and (not str(key) or len(str(key)) > 200 or not str(key).isprintable()):
        raise InvalidInput("a submission key must be 1 to 200 printable characters")


class Scheduler(Control):
    """A connection to one hpcq cluster (its Redis), acting as ``user`` (the owner of the jobs
    it creates; cancel, requeue, modify and finish are refused on others' jobs unless the user
    is an administrator: permissions.py)."""

    def __init__(self, store: Store, settings: Settings, user: str | None = None):
        self.store = store
        self.settings = settings
        self.user = user or permissions.current_user()
        self._celery = None

    def __repr__(self) -> str:
        return f"<Scheduler {mask_url(self.settings.redis_url)}>"

    @classmethod
    def connect(cls, url: str | None = None, require_cluster: bool = False,
                **settings) -> Scheduler:
        """Connect (``url``, else ``HPCQ_REDIS_URL``) and PING; errors name the URL with its
        password masked.  ``require_cluster``: raise ``NoCluster`` if no scheduler or worker
        ever ran against that Redis (the CLI does: a wrong URL is not an empty cluster)."""
        cfg = get_settings(redis_url=url, **settings)
        check_url(cfg.redis_url)
        try:
            store = Store(cfg.redis_url)
        except ValueError as exc:  # redis-py's verdict on a malformed URL
            raise InvalidInput(f"invalid Redis URL {mask_url(cfg.redis_url)}: {exc}") from None
        try:  # one round trip: the cluster's mark answers for the PING
            if require_cluster:
                held = store.holds_cluster()
            else:
                store.ping()
        except RedisUnavailable as exc:  # its context is redis-py's own error
            raise RedisUnavailable(unreachable_message(cfg.redis_url, exc.__context__ or exc)) from None
        if require_cluster and not held:
            raise NoCluster(no_cluster_message(cfg.redis_url))
        return cls(store, cfg)

    @property
    def celery(self):
        if self._celery is None:
            self._celery = make_celery(self.settings.redis_url)
        return self._celery

    def publish(self, revokes) -> None:
        if revokes:
            publish_revokes(self.celery, revokes)

    # --- jobs -----------------------------------------------------------------------------
    def _job_spec(self, name, priority, fail_on_task_failure, runtime, fields) -> JobSpec:
        if "hold_until" in fields:
            fields["hold_until"] = parse_time(fields["hold_until"])
        return JobSpec(name=name, priority=priority, fail_on_task_failure=fail_on_task_failure,
                       runtime=runtime, owner=self.user, **fields)

    def create_job(self, name: str = "", priority="Normal", fail_on_task_failure: bool = False,
                   runtime: int | None = None, **fields) -> Job:
        """A job in Configuring.  ``fields``: JobSpec's others (exclusive, env, cores, memory,
        gpus, group, task_retry_count, depends_on_job, run_on_parent_failure, hold_until)."""
        spec = self._job_spec(name, priority, fail_on_task_failure, runtime, fields)
        return self.get_job(self.store.create_job(spec.to_record()))

    def submit_job(self, job: Job | int, strict: bool = False, key: str | None = None) -> Job:
        """Submit a job in Configuring with the tasks it has (``submission_checks`` first;
        ``strict``: also refuse a task no online worker could ever run).  With ``key``: if a
        job was already submitted with it, that job is returned and this one left as it is."""
        job = self._job(job)
        job.refresh()
        _check_key(key)
        if key:
            found = self.store.job_by_key(key)
            if found is not None and found != job.id:
                return self.get_job(found)
        if job.state != JobState.Configuring:
            raise InvalidState(f"Only jobs in the Configuring state can be submitted; job {job.id} is {job.state}.")
        specs = [t.spec() for t in job.get_task_list()]
        deps = submission_checks(specs, job.runtime, job.id)
        if strict:
            self._check_fits(specs, job.id)
        submitted = self.store.submit(job.id, _band(job.priority), deps, key or "")
        return job.refresh() if submitted == job.id else self.get_job(submitted)

    def _check_fits(self, specs, job_id=None) -> None:
        """The strict check: refuse a task that no online worker could run even when idle."""
        found = self.get_node_list()
        if not any(n.takes_work for n in found):
            raise InvalidState("no workers are online, so --strict cannot check that the tasks fit")
        for n, spec in enumerate(specs, 1):
            why = placement.never_fits(placement.Request.of(spec.to_record()), found)
            if why:
                label = f"{job_id}.{n}" if job_id is not None else str(n)
                raise InvalidState(f"task {label} {why}")

    def submit(self, tasks: TaskInput | Iterable[TaskInput], *, name: str = "",
               priority="Normal", fail_on_task_failure: bool = False,
               runtime: int | None = None, key: str | None = None, strict: bool = False,
               **fields) -> Job:
        """Create a job of ``tasks`` and submit it, in one atomic step; returns the job.

        ``tasks`` is one task or a list of them, each a TaskSpec or a mapping of its fields
        (``{"command": "echo hi", "name": "a", "depends_on": ["b"]}``); ``fields`` are the
        job's others (see ``create_job``).  Everything is checked before Redis is written, and
        the job is created, filled and submitted by one script, so a failed call leaves nothing.
        With ``key``, a retried call (the reply was lost) returns the job the key already
        names instead of creating another; ``strict`` refuses a task that no online worker
        could ever run."""
        job_spec = self._job_spec(name, priority, fail_on_task_failure, runtime, fields)
        specs = task_specs(tasks)
        deps = submission_checks(specs, job_spec.runtime)
        _check_key(key)
        if strict:
            self._check_fits(specs)
        job_id, _ = self.store.new_job(job_spec.to_record(), [s.to_record() for s in specs], deps,
                                       _band(job_spec.priority), key=key or "")
        return self.get_job(job_id)

    def get_job(self, job_id) -> Job:
        job_id = parse_job_id(job_id)
        return Job(self, job_id, self.store.job(job_id), explain=True)

    def get_job_list(self, state=None, owner: str | None = None) -> list[Job]:
        """Jobs, oldest first; ``state`` one state or several, ``owner`` a user name."""
        ids = self.store.job_ids()
        wanted = {JobState(s) for s in ([state] if isinstance(state, str) else state or [])}
        jobs = [Job(self, j, rec) for j, rec in zip(ids, self.store.jobs(ids)) if rec]
        return [j for j in jobs
                if (not wanted or j.state in wanted) and (owner is None or j.owner == owner)]

    def cancel_job(self, job_id, message: str | None = None, force: bool = False,
                   graceful: bool = False, wait: bool = True, timeout: float | None = None,
                   grace: float | None = None) -> Job:
        if force and graceful:
            raise InvalidInput("a cancel cannot be both forced and graceful")
        job = self.get_job(job_id)
        message = check_cancel_message(message)
        _, revokes = self.store.cancel_job(job.id, *cancel_texts(message), message, force=force,
                                           grace=grace, graceful=graceful, user=self.user)
        self.publish(revokes)
        if wait:
            job.wait(timeout=self._cancel_timeout(timeout, grace) if not graceful else timeout)
        return job.refresh()

    def purge_job(self, job_id) -> None:
        """Delete an ended job and all its records now (retention does it after
        ``job_retention``); InvalidState if it has not ended."""
        retention.purge(self.store, parse_job_id(job_id))

    def purge_jobs(self, older_than: float, on_job=None) -> list[int]:
        """Delete every job that ended more than ``older_than`` seconds ago; their ids."""
        return retention.purge_older(self.store, self.store.time() - older_than, on_job)

    def requeue_job(self, job_id, wait: bool = True, timeout: float | None = None) -> Job:
        job = self.get_job(job_id)
        _, revokes = self.store.requeue_job(job.id, cancel_texts(Msg.requeued)[1], user=self.user)
        self.publish(revokes)
        if wait:
            self._wait_requeued(revokes, timeout)
        return job.refresh()

    # --- tasks ----------------------------------------------------------------------------
    def get_task(self, task_id) -> Task:
        tid = TaskId.parse(task_id)
        return Task(self, tid, self._task_record(tid), explain=True)

    def _task_record(self, tid: TaskId) -> dict:
        return self._joined(tid, self.store.tasks(self._record_ids(tid)))

    @staticmethod
    def _record_ids(tid: TaskId) -> list:
        """The records a task's view is made of: its own, or an instance's master's and its own."""
        return [tid.master, tid] if tid.instance else [tid]

    @staticmethod
    def _joined(tid: TaskId, recs: list[dict]) -> dict:
        if not tid.instance:
            if not recs[0]:
                raise NotFound(Msg.task_not_found.format(tid))
            return recs[0]
        master, rec = recs
        if not master or "total" not in master or tid.instance > int(master["total"]):
            raise NotFound(Msg.task_not_found.format(tid))
        return instance_record(master, tid, rec or None)

    def cancel_task(self, task_id, message: str | None = None, force: bool = False,
                    wait: bool = True, timeout: float | None = None,
                    grace: float | None = None) -> Task:
        tid = TaskId.parse(task_id)
        message = check_cancel_message(message)
        # one round trip: the step checks the owner, and the task's records are read right
        # after it, as it left them
        state, revokes, recs = self.store.cancel_task(tid, *cancel_texts(message), force=force,
                                                      grace=grace, read=self._record_ids(tid),
                                                      user=self.user)
        self.publish(revokes)
        task = Task(self, tid, self._joined(tid, recs), explain=True)
        if wait and state not in TASK_END:      # (a queued one ended in the step itself)
            self._wait_stopped(task, timeout, grace)
        return task

    def _wait_stopped(self, task: Task, timeout, grace) -> None:
        """Until a canceled or finished task has ended (its processes are gone)."""
        self._wait(lambda: task.refresh().state in TASK_END, self._cancel_timeout(timeout, grace),
                   f"task {task.id} to stop")

    def requeue_task(self, task_id, wait: bool = True, timeout: float | None = None) -> Task:
        tid = TaskId.parse(task_id)
        state, revokes = self.store.requeue_task(tid, cancel_texts(Msg.requeued)[1],
                                                 user=self.user)
        self.publish(revokes)
        if wait and state == TaskState.Canceling:  # queued again once its processes are gone
            self._wait(lambda: self.get_task(tid).state != TaskState.Canceling,
                       self._cancel_timeout(timeout, None), f"task {tid} to be requeued")
        return self.get_task(tid)

    # --- events (scheduler/api/events.py) --------------------------------------------------
    def events(self, since: str | None = None, job=None, block: float | None = None):
        """Every state change after cursor ``since`` (None: from now, "0": the oldest kept) as
        ``Event``s, ``job``'s only if given; waits ``block`` s for more (None: follows forever)."""
        return _events.events(self.store, since, None if job is None else parse_job_id(job), block)

    # --- nodes (scheduler/api/nodes.py) ----------------------------------------------------
    def get_node_list(self) -> list[nodes.Node]:
        """Every worker Redis knows, by name: state, slots, tasks held, heartbeat."""
        return nodes.node_list(self.store, self.settings.worker_timeout)

    def get_node(self, name: str) -> nodes.Node:
        return nodes.get_node(self.store, self.settings.worker_timeout, name)

    # --- helpers --------------------------------------------------------------------------
    def _wait_requeued(self, revokes, timeout) -> None:
        """Until every stopped attempt is gone: its task has a newer attempt or is Queued."""
        parsed = [parse_celery_id(cid) for cid, _ in revokes]
        attempts = [a for a in parsed if a]

        def gone(tid, token):
            rec = self.store.task(tid) or {}
            return rec.get("token") != token or rec.get("state") == TaskState.Queued
        self._wait(lambda: all(gone(*a) for a in attempts), self._cancel_timeout(timeout, None),
                   "the requeued tasks to stop")

    def _job(self, job) -> Job:
        return job if isinstance(job, Job) else self.get_job(job)

    def cancel_grace(self, grace: float | None = None) -> float:
        """The grace period a cancel (or finish) given ``grace`` gets: its own, else the
        cluster's (the leading scheduler's HPCQ_TASK_CANCEL_GRACE_PERIOD, which the cancel step
        records for the worker), else this client's setting (no scheduler has published one)."""
        if grace is not None:
            return grace
        cluster = self.store.cancel_grace()
        return cluster if cluster is not None else self.settings.task_cancel_grace_period

    def _cancel_timeout(self, timeout, grace) -> float:
        if timeout is not None:
            return timeout
        return self.cancel_grace(grace) + 60

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while not predicate():
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"timed out waiting for {what}")
            time.sleep(pause)
            pause = min(pause * 1.5, POLL)


class Job(JobView):
    """ISchedulerJob: a job's properties and the operations on it."""

    reason = property(lambda self: reasons.job_reason(self.scheduler, self), doc="Why it waits, or None.")

    def __init__(self, scheduler: Scheduler, job_id: int, record: dict, explain: bool = False):
        super().__init__(job_id, record)
        self.scheduler, self.explain = scheduler, explain

    def refresh(self) -> Job:
        self.record = self.scheduler.store.job(self.id)
        return self

    def add_task(self, command: str, name: str = "", sweep=None, **fields) -> Task:
        """Add a task; to a Queued or Running job it is queued at once (its ``depends_on``
        names then refer to the job's tasks so far)."""
        spec = TaskSpec(command=command, name=name, sweep=sweep, **fields)
        deps: list[int] = []
        if spec.depends_on and self.refresh().state != JobState.Configuring:
            names: dict[str, list[int]] = {}
            for t in self.iter_tasks():
                names.setdefault(t.name, []).append(t.id.task)
            for d in spec.depends_on:
                if d not in names:
                    raise InvalidInput(f"the new task depends on {d!r}, which no task of job {self.id} is named")
                deps += names[d]
        number = self.scheduler.store.add_task(self.id, spec.to_record(), sorted(set(deps)))
        return self.get_task(f"{self.id}.{number}")

    def submit(self) -> Job:
        return self.scheduler.submit_job(self)

    def task_id(self, task_id) -> TaskId:
        """A task number or id of this job as a TaskId (nothing read: NotFound for another job's)."""
        tid = TaskId.parse(task_id if "." in str(task_id) else f"{self.id}.{task_id}")
        if tid.job != self.id:
            raise NotFound(f"task {tid} belongs to job {tid.job}, not to job {self.id} "
                           f"(Scheduler.get_task({str(tid)!r}) reads it)")
        return tid

    def get_task(self, task_id) -> Task:
        return self.scheduler.get_task(self.task_id(task_id))

    def get_task_id_list(self, expand: bool = False) -> list[str]:
        return [str(t.id) for t in self.iter_tasks(expand=expand)]

    def get_task_list(self, expand: bool = False, state=None) -> list[Task]:
        wanted = {TaskState(s) for s in ([state] if isinstance(state, str) else state or [])}
        return [t for t in self.iter_tasks(expand) if not wanted or t.state in wanted]

    def iter_tasks(self, expand: bool = False) -> Iterator[Task]:
        """Every task in order; with ``expand`` each sweep's instances instead of its master.
        Reads in pipelined batches, so a million-instance sweep streams in flat memory."""
        store = self.scheduler.store
        n = int(self.refresh().record.get("ntasks", 0))
        for first in range(1, n + 1, BATCH):
            tids = [TaskId(self.id, t) for t in range(first, min(first + BATCH, n + 1))]
            for tid, rec in zip(tids, store.tasks(tids)):
                task = Task(self.scheduler, tid, rec)
                if not (expand and task.is_sweep):
                    yield task
                    continue
                for lo in range(1, task.instances + 1, BATCH):
                    ids = [TaskId(tid.job, tid.task, i)
                           for i in range(lo, min(lo + BATCH, task.instances + 1))]
                    for iid, irec in zip(ids, store.tasks(ids)):
                        yield Task(self.scheduler, iid, instance_record(rec, iid, irec or None))

    def cancel_task(self, task_id, message=None, force=False, **kw) -> Task:
        # (the cancel step itself says NotFound for a task that does not exist: no read first)
        return self.scheduler.cancel_task(self.task_id(task_id), message, force, **kw)

    def requeue_task(self, task_id, **kw) -> Task:
        return self.scheduler.requeue_task(self.task_id(task_id), **kw)

    def cancel(self, message=None, force=False, graceful=False, **kw) -> Job:
        return self.scheduler.cancel_job(self.id, message, force, graceful, **kw)

    def requeue(self, **kw) -> Job:
        return self.scheduler.requeue_job(self.id, **kw)

    def finish(self, message=None, **kw) -> Job:
        return self.scheduler.finish_job(self.id, message, **kw)

    def modify(self, **kw) -> Job:
        return self.scheduler.modify_job(self.id, **kw)

    def wait(self, timeout: float | None = None,
             on_progress: Callable[[Job], None] | None = None) -> JobState:
        """Block until the job is Finished, Failed or Canceled; return that state."""
        def done():
            self.refresh()
            if on_progress:
                on_progress(self)
            return self.state in JOB_END and self.state != JobState.Configuring
        Scheduler._wait(done, timeout, f"job {self.id}")
        return self.state


class Task(TaskView):
    """ISchedulerTask: a task, a sweep master or one sweep instance."""

    reason = property(lambda self: reasons.task_reason(self.scheduler, self), doc="Why it waits, or None.")
    history = property(lambda self: _events.history(self.scheduler.store, self.id),
                       doc="Its states with times, oldest first (events.Move).")

    def __init__(self, scheduler: Scheduler, task_id: TaskId, record: dict, explain: bool = False):
        super().__init__(task_id, record)
        self.scheduler, self.explain = scheduler, explain

    def refresh(self) -> Task:
        self.record = self.scheduler._task_record(self.id)
        return self

    def cancel(self, message=None, force=False, **kw) -> Task:
        return self.scheduler.cancel_task(self.id, message, force, **kw)

    def requeue(self, **kw) -> Task:
        return self.scheduler.requeue_task(self.id, **kw)

    def finish(self, message=None, **kw) -> Task:
        return self.scheduler.finish_task(self.id, message, **kw)
