"""Chaos: a real cluster (Redis in the root network namespace, schedulers and workers each on a
host of their own, tests/netns.py) runs short tasks and sweeps while a seeded timeline cancels
and requeues tasks and jobs, kills worker main processes, whole workers, pool processes and
schedulers with SIGKILL (each restarted under its name after a short random delay), restarts
Redis (SHUTDOWN, then the same port and AOF) and cuts a host's link and heals it.  Once every job
has settled, every invariant is checked and printed with its count of violations:

  1. every task and sweep instance is in exactly one end state that agrees with its history
     (the ``hpcq:events`` stream), every job is final, nothing is left in a queue or on a worker
  2. a task canceled before it started never ran its command (per-task marker files), and no
     command ever started without its attempt recorded Running
  3. never two attempts of a task that both record: each attempt ends once, a task is Finished
     at most once, and a Finished task's result (output, marker lines, sweep value) is its
     recorded attempt's own
  4. no process of any task is alive once everything has settled, and none of the run's
     processes after the cluster is stopped
  5. per-state counts: a job's ``c:<State>`` and a sweep master's ``i:<State>`` equal a recount
  6. job (and sweep master) states agree with their tasks (instances)

    python -m bench.chaos --tasks 10000 --seed S [--workers 3] [--schedulers 2] [--keep]

Timing makes a run non-deterministic even with a fixed seed (the seed fixes the plan: jobs,
commands, which operations at which times); the invariants must hold whatever happens.  Exit 1
if any invariant is violated.  Needs root (network namespaces); logs stay in the run's directory
when something is violated (or with --keep).

The package, one idea a module: ``config`` (the run's settings, the states, the import path),
``plan`` (the seeded jobs and the timeline of operations), ``cluster`` (the daemons on their
network-namespace hosts, their kills and restarts), ``events`` (the event stream as it grows),
``drive`` (the run loop and the operations), ``record`` (settling, then what is read back),
``checks`` (the invariants), ``report`` (the table) and ``run`` (``Chaos``, one run from start
to end, made of those parts); ``__main__`` is the command line."""

from __future__ import annotations

from bench.chaos.config import Config  # first: it puts tests/ on the import path
from bench.chaos.events import EventTail
from bench.chaos.plan import JobPlan, TaskPlan, plan_jobs
from bench.chaos.checks import Invariant
from bench.chaos.run import Chaos, run_chaos

__all__ = ["Chaos", "Config", "EventTail", "Invariant", "JobPlan", "TaskPlan", "plan_jobs",
           "run_chaos"]
