"""The plan of a run, fixed by its seed: the jobs (tasks, sweeps, dependencies, commands that
leave marker files) and the timeline of operations against them.  Timing still makes each run
different; the plan is what the seed makes repeatable."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field


@dataclass
class TaskPlan:
    name: str
    kind: str                      # quick | medium | stubborn | detached | fail
    rerunnable: bool
    command: str
    sweep: tuple[int, int, int] | None = None
    depends_on: list[str] = field(default_factory=list)

    @property
    def units(self) -> int:
        if not self.sweep:
            return 1
        start, end, step = self.sweep
        return (end - start) // step + 1


@dataclass
class JobPlan:
    at: float
    priority: str
    tasks: list[TaskPlan]
    job_id: int | None = None


KIND_WEIGHTS = (("quick", 70), ("medium", 8), ("stubborn", 6), ("detached", 6), ("fail", 10))


def command(kind: str, marks: str, sweep: bool, rng: random.Random) -> str:
    """A short shell command that appends ``start <attempt>`` (with the sweep value, ``*``
    substituted by hpcq) to its unit's marker file first and ``end <attempt>`` last, and prints
    its attempt id as its output."""
    value = " v=*" if sweep else ""
    body = {
        "quick": f"sleep 0.0{rng.randint(1, 9)}",
        "medium": f"sleep 0.{rng.randint(3, 9)}",
        "stubborn": f"trap '' TERM; sleep 1.{rng.randint(0, 5)}",      # SIGKILLed after the grace
        "detached": "setsid sleep 60 </dev/null >/dev/null 2>&1 & sleep 0.05",  # leaves its session
        "fail": f"sleep 0.0{rng.randint(1, 9)}",
    }[kind]
    tail = "; exit 3" if kind == "fail" else ""
    return (f'M={marks}/$HPCQ_TASK_ID; echo "start $HPCQ_ATTEMPT{value}" >> "$M"; {body}; '
            f'echo "end $HPCQ_ATTEMPT" >> "$M"; echo "$HPCQ_ATTEMPT"{tail}')


def plan_jobs(rng: random.Random, n_units: int, submit_until: float, marks: str) -> list[JobPlan]:
    kinds = [k for k, _ in KIND_WEIGHTS]
    weights = [w for _, w in KIND_WEIGHTS]
    jobs: list[JobPlan] = []
    left = n_units
    while left > 0:
        tasks: list[TaskPlan] = []
        for t in range(1, rng.randint(4, 14) + 1):
            if left <= 0:
                break
            kind = rng.choices(kinds, weights)[0]
            rerunnable = rng.random() < 0.9
            deps = [f"t{rng.randint(1, t - 1)}"] if t > 1 and rng.random() < 0.15 else []
            if rng.random() < 0.2 and left >= 3:
                count = min(left, rng.randint(3, 16))
                start, step = rng.randint(0, 5), rng.randint(1, 3)
                sweep = (start, start + (count - 1) * step, step)
                left -= count
            else:
                sweep = None
                left -= 1
            tasks.append(TaskPlan(f"t{t}", kind, rerunnable, command(kind, marks, bool(sweep), rng),
                                  sweep, deps))
        prio = rng.choice(["BelowNormal", "Normal", "Normal", "AboveNormal"])
        jobs.append(JobPlan(0.0, prio, tasks))
    for k, job in enumerate(jobs):
        # the first quarter of the jobs at once (work to be in flight when the chaos starts)
        job.at = 0.0 if k < max(1, len(jobs) // 4) else rng.uniform(0, submit_until)
    jobs.sort(key=lambda j: j.at)
    return jobs



class Timeline:
    """Part of ``Chaos`` (bench/chaos/run.py): the heap of timed operations, and the seeded
    spread of them over the chaos phase.  ``drive`` pops it; operations push restarts and heals
    onto it as they happen."""

    def at(self, t: float, action: str, *args) -> None:
        self._seq += 1
        heapq.heappush(self.timeline, (t, self._seq, action, args))

    def plan_chaos(self, d: float) -> None:
        rng, cfg = self.rng, self.cfg
        njobs = len(self.jobs)
        for job in self.jobs:
            self.at(job.at, "submit", job)

        def spread(action: str, n: int, lo: float = 0.05, hi: float = 0.95) -> None:
            for _ in range(n):
                self.at(rng.uniform(lo * d, hi * d), action)

        spread("cancel", max(8, cfg.tasks * 6 // 100))
        spread("requeue", max(6, cfg.tasks * 5 // 100))
        spread("cancel_job", max(1, njobs // 12))
        spread("requeue_job", max(1, njobs // 20))
        spread("kill_worker_main", max(2, int(d / 12)))
        spread("kill_worker_whole", max(2, int(d / 12)))
        spread("kill_pool", max(3, int(d / 6)))
        spread("kill_scheduler", max(2, int(d / 15)), hi=0.9)
        # one Redis restart mid-run, more for long runs
        nredis = max(1, int(d // 300))
        for k in range(nredis):
            self.at(d * (k + 0.5) / nredis + rng.uniform(-0.05, 0.05) * d, "redis_restart")
        ncuts = max(1, int(d / 20))
        for k in range(ncuts):
            self.at(rng.uniform(0.1 * d, 0.85 * d), "cut", k == 0)
        self.at(d, "end")
