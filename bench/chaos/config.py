"""What a chaos run is set up with: its ``Config`` (size, seed, cluster shape), the settings its
cluster runs under, the task states the checks speak of, and the marker variable that tells the
run's processes from everything else on the machine.

The chaos runs from a checkout (``python -m bench.chaos`` from its root) and uses the test
suite's ``tests.support.netns`` and ``tests.support.redis_server``."""

from __future__ import annotations

import os
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MARKER_VAR = "HPCQ_CHAOS_MARKER"
TASK_STATES = ("Configuring", "Submitted", "Validating", "Queued", "Dispatching", "Running",
               "Finishing", "Finished", "Canceling", "Failed", "Canceled")
TASK_END = {"Finished", "Failed", "Canceled"}
JOB_END = {"Finished", "Failed", "Canceled"}
PRE_QUEUE = ("Configuring", "Submitted", "Validating")

#: The cluster's settings: failures are noticed fast, and chaos does not exhaust the reruns.
CLUSTER_ENV = {
    "HPCQ_WORKER_TIMEOUT": "3",
    "HPCQ_HEARTBEAT_INTERVAL": "0.5",
    "HPCQ_REDIS_TIMEOUT": "1",
    "HPCQ_TASK_CANCEL_GRACE_PERIOD": "1",
    "HPCQ_RECONCILE_GRACE": "2",
    "HPCQ_TASK_RETRY_COUNT": "10",
    "HPCQ_DISPATCH_TIMEOUT": "10",
    "HPCQ_LEASE_TTL": "3",
    "PYTHONUNBUFFERED": "1",
}


@dataclass
class Config:
    tasks: int = 300
    seed: int = 1
    workers: int = 3
    schedulers: int = 2
    concurrency: int = 2
    duration: float | None = None        # chaos phase; default from the size
    settle_timeout: float | None = None
    keep: bool = False
    quiet: bool = False

    def chaos_seconds(self) -> float:
        return self.duration if self.duration is not None else max(20.0, self.tasks * 0.06)
