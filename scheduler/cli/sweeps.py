"""Read-only listing of a job's tasks for the CLI, in pipelined batches: the first page of
``job listtasks --expand`` on a million-instance sweep prints at once and memory stays flat.

(The API's ``Job.iter_tasks(expand=True)`` reads each instance with its own round trips.)"""

from __future__ import annotations

from typing import Iterator

from ..client import Job, Task
from ..ids import TaskId

BATCH = 1000


def iter_job_tasks(job: Job, expand: bool = False) -> Iterator[Task]:
    s = job.scheduler
    n = job.task_count
    for first in range(1, n + 1, BATCH):
        tids = [TaskId(job.id, t) for t in range(first, min(first + BATCH, n + 1))]
        for tid, rec in zip(tids, s.store.tasks(tids)):
            if not rec:
                continue
            task = Task(s, tid, rec)
            if expand and task.is_sweep:
                yield from iter_instances(task)
            else:
                yield task


def iter_instances(master: Task) -> Iterator[Task]:
    """Every instance of a sweep; one not dispatched yet is Queued (Canceled if the master was
    canceled before it), exactly as ``Scheduler.get_task`` reports it."""
    s = master.scheduler
    mrec = master.record
    total = master.instances
    for first in range(1, total + 1, BATCH):
        ids = [TaskId(master.id.job, master.id.task, i)
               for i in range(first, min(first + BATCH, total + 1))]
        recs = s.store.tasks(ids)
        cut = mrec.get("cut")
        for iid, rec in zip(ids, recs):
            if not rec:
                canceled = cut is not None and iid.instance > int(cut)
                rec = {"state": "Canceled" if canceled else "Queued", "requeue_count": "0"}
                if canceled:
                    rec["error"] = mrec.get("error", "")
            rec["_master"] = mrec
            yield Task(s, iid, rec)
