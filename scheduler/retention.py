"""Retention: ended jobs are kept for ``HPCQ_JOB_RETENTION`` (HPC Pack keeps them 5 days), then
deleted with every record of their tasks and instances.

Deleting is chunked (``purge_job.lua`` deletes at most ``BUDGET`` keys per call, about a
millisecond of Redis), so a job of a million instance records never blocks Redis; the first
call takes the job out of sight at once, and a purge cut short (a scheduler or client stopped
midway) is resumed by the leading scheduler from the cursor it left in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from scheduler.core.store import Store
from scheduler.errors import InvalidState, NotFound

#: Keys one purge call deletes at most.
BUDGET = 1000
#: Jobs the leader looks at per pass, and how often it passes.
BATCH = 100
EVERY = 5.0


def purge(store: Store, job_id: int, budget: int = BUDGET) -> None:
    """Delete the ended job ``job_id`` now (InvalidState if it has not ended, NotFound if there
    is no such job)."""
    while store.purge_job(job_id, budget)[0] == "more":
        pass


def purge_older(store: Store, ended_before: float,
                on_job: Callable[[int], None] | None = None) -> list[int]:
    """Delete every job that ended before ``ended_before`` (Redis' clock); returns their ids."""
    done = []
    while True:
        jobs = store.ended_jobs(ended_before, BATCH)
        for job_id in jobs:
            if _finish(store, job_id, ended_before):
                done.append(job_id)
                if on_job:
                    on_job(job_id)
        if len(jobs) < BATCH:
            return done


def _advance(store: Store, job_id: int, ended_before: float | None,
             calls: float = float("inf")) -> tuple[str, int]:
    """Purge one job until it is done or ``calls`` script calls are spent; returns (status,
    calls made).  'young': it ended too recently; 'gone': requeued, or purged by someone else,
    meanwhile.  Only the first call checks the age: later ones resume the begun purge."""
    status, made = "more", 0
    while status == "more" and made < calls:
        made += 1
        try:
            status, _ = store.purge_job(job_id, BUDGET, ended_before)
        except (InvalidState, NotFound):
            return "gone", made
        ended_before = None
    return status, made


def _finish(store: Store, job_id: int, ended_before: float | None) -> bool:
    """Purge one job to the end unless it turned out too young or gone."""
    return _advance(store, job_id, ended_before)[0] == "done"


class Retention:
    """The leading scheduler's share: every ``EVERY`` seconds, resume any purge left midway,
    then purge jobs older than the retention period, at most ``calls`` script calls a pass so
    that dispatching is never held up for long."""

    def __init__(self, store: Store, retention: float):
        self.store = store
        self.retention = retention
        self.at = 0.0

    def step(self, redis_now: float, calls: int = 20) -> int:
        """One pass if one is due; returns how many jobs it finished purging."""
        if time.monotonic() < self.at:
            return 0
        self.at = time.monotonic() + EVERY
        pending: Iterable[tuple[int, float | None]] = [(j, None) for j in self.store.purging_jobs()]
        if self.retention > 0:
            cutoff = redis_now - self.retention
            pending = [*pending, *((j, cutoff) for j in self.store.ended_jobs(cutoff, BATCH))]
        finished = 0
        for job_id, job_cutoff in pending:
            status, made = _advance(self.store, job_id, job_cutoff, calls)
            calls -= made
            finished += status == "done"
            if calls <= 0:
                self.at = 0.0           # more to do: come back on the next pass
                break
        return finished
