"""``hpcq job wait``: a live progress bar of the job's tasks per state on a terminal, a line per
change otherwise.  Sweep instances are counted one by one (``Task.instance_counts``).

While the job has tasks left and no worker is online, it says so on stderr (``NoWorkers``), once
each time that becomes true, instead of waiting silently; it keeps waiting."""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scheduler.core import keys
from scheduler.api.client import Job, Task
from scheduler.api.nodes import node_list
from scheduler.core.ids import TaskId
from scheduler.core.states import JOB_END, TASK_END, TASK_ON_WORKER, TASK_PENDING, JobState
from scheduler.cli.render import fmt_counts

REFRESH = 0.2
ORDER = ["Configuring", "Submitted", "Validating", "Queued", "Dispatching", "Running",
         "Finishing", "Canceling", "Finished", "Failed", "Canceled"]
END = {s.value for s in TASK_END}
#: Seconds between two looks at the workers while waiting.
PRESENCE_EVERY = 1.0
_LEFT = {s.value for s in TASK_PENDING | TASK_ON_WORKER} - {"Configuring"}


class Counter:
    """Tasks per state of one job, with sweep masters replaced by their instances."""

    def __init__(self, job: Job):
        self.job = job
        self.ntasks = -1
        self.sweeps: list[TaskId] = []

    def _find_sweeps(self) -> None:
        n = self.job.task_count
        if n == self.ntasks:
            return
        r = self.job.scheduler.store.redis
        tids = [TaskId(self.job.id, t) for t in range(1, n + 1)]
        pipe = r.pipeline(transaction=False)
        for tid in tids:
            pipe.hexists(keys.task(tid), "total")
        self.sweeps = [tid for tid, is_sweep in zip(tids, pipe.execute()) if is_sweep]
        self.ntasks = n

    def counts(self) -> dict[str, int]:
        self._find_sweeps()
        counts = dict(self.job.counts)
        if self.sweeps:
            store = self.job.scheduler.store
            for tid, rec in zip(self.sweeps, store.tasks(self.sweeps)):
                if not rec:
                    continue
                master = Task(self.job.scheduler, tid, rec)
                st = master.state.value
                if counts.get(st):
                    counts[st] -= 1
                for k, v in master.instance_counts.items():
                    counts[k] = counts.get(k, 0) + v
        return {k: counts[k] for k in ORDER if counts.get(k)}


class NoWorkers:
    """Says ``job J: no workers are online; ...`` through ``say`` when the job (submitted, not
    ended) has tasks left to run and no worker is online (nodes.py: heartbeating, not
    draining): once, and again each time it becomes true again.  When a worker comes while it
    was shown, says that too, so a log shows when the wait ended."""

    def __init__(self, job: Job, say):
        self.say = say
        self.shown = False
        self.check = _throttled(self._check, PRESENCE_EVERY)

    def _check(self, job: Job) -> None:
        left = (job.state not in JOB_END and job.state != JobState.Configuring
                and any(job.counts.get(s) for s in _LEFT))
        s = job.scheduler
        online = [n.name for n in node_list(s.store, s.settings.worker_timeout) if n.takes_work]
        if left and not online and not self.shown:
            self.say(f"job {job.id}: no workers are online; its tasks wait until one starts "
                     "(hpcq worker)")
            self.shown = True
        elif online and self.shown:
            self.say(f"job {job.id}: worker {online[0]} is online")
            self.shown = False


def _both(*calls):
    def call(job):
        for c in calls:
            c(job)
    return call


def wait_for_job(job: Job, timeout: float | None, quiet: bool = False) -> JobState:
    """Wait for the job's end state, showing progress unless ``quiet`` (the notice that no
    worker is online is shown even then: it goes to stderr); WaitTimeout on timeout."""
    if quiet:
        notice = NoWorkers(job, lambda line: print(line, file=sys.stderr, flush=True))
        notice.check(job)
        return job.wait(timeout=timeout, on_progress=notice.check)
    counter = Counter(job)
    err = Console(stderr=True, highlight=False)
    if err.is_terminal:  # noqa: SIM108  (two calls read better apart)
        state = _wait_live(job, counter, timeout, err)
    else:
        state = _wait_plain(job, counter, timeout)
    click.echo(f"job {job.id} {state.value}")
    return state


def _throttled(fn, every: float):
    last = [0.0]

    def call(job):
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            fn(job)
    return call


def _wait_live(job: Job, counter: Counter, timeout, err: Console) -> JobState:
    columns = [TextColumn("job {task.fields[jid]} {task.fields[state]:<11}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("{task.fields[counts]}"), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=False) as bar:
        row = bar.add_task("", total=None, jid=job.id, state=job.state.value, counts="")

        def update(j: Job) -> None:
            counts = counter.counts()
            bar.update(row, total=sum(counts.values()) or None,
                       completed=sum(v for k, v in counts.items() if k in END),
                       state=j.state.value, counts=fmt_counts(counts))

        notice = NoWorkers(job, lambda line: bar.console.print(line, style="yellow"))
        update(job)
        notice.check(job)
        state = job.wait(timeout=timeout,
                         on_progress=_both(_throttled(update, REFRESH), notice.check))
        update(job)
        bar.refresh()
    return state


def _wait_plain(job: Job, counter: Counter, timeout) -> JobState:
    last = [None]

    def report(j: Job) -> None:
        counts = counter.counts()
        line = (f"job {j.id} {j.state.value}: {fmt_counts(counts)} "
                f"({sum(v for k, v in counts.items() if k in END)}/{sum(counts.values())} done)")
        if line != last[0]:
            last[0] = line
            print(line, file=sys.stderr, flush=True)

    notice = NoWorkers(job, lambda line: print(line, file=sys.stderr, flush=True))
    report(job)
    notice.check(job)
    state = job.wait(timeout=timeout, on_progress=_both(_throttled(report, 1.0), notice.check))
    report(job)
    return state
