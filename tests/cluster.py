"""A real hpcq cluster for integration tests: a scheduler and Celery workers as child processes
of the test session, against the session's own redis-server.

Use the ``cluster`` fixture (conftest) or ``Cluster`` directly for a test that needs its own
(e.g. one that kills a scheduler)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import redis

from scheduler import Scheduler


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    """Child processes sharing one Redis, each in its own session with its log in ``logdir``
    (also the base of the benchmarks' ``bench.common.Bench``)."""

    def __init__(self, redis_url: str, env: dict | None = None, prefix: str = "hpcq-test-"):
        self.redis_url = redis_url
        self.env = dict(os.environ, HPCQ_REDIS_URL=redis_url, **(env or {}))
        self.procs: dict[str, subprocess.Popen] = {}
        self.logdir = tempfile.mkdtemp(prefix=prefix)
        self.r = redis.Redis.from_url(redis_url, decode_responses=True)

    def spawn(self, key: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.logdir, f"{key}.log"), "ab")
        p = subprocess.Popen(argv, env=dict(self.env, **(env or {})), stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[key] = p
        return p

    def _spawn(self, key: str, args: list[str]) -> subprocess.Popen:
        return self.spawn(key, [sys.executable, "-m", "scheduler.cli", *args,
                                "--redis", self.redis_url])

    def start_scheduler(self, key: str = "scheduler") -> subprocess.Popen:
        return self._spawn(key, ["scheduler"])

    def start_worker(self, name: str, concurrency: int = 2, wait: bool = True) -> subprocess.Popen:
        self.r.zrem("hpcq:workers", name)
        p = self._spawn(name, ["worker", "--hostname", name, "--concurrency", str(concurrency)])
        if wait:
            def ready():
                if p.poll() is not None:
                    raise AssertionError(f"worker {name} exited:\n{self.log(name)[-2000:]}")
                return self.r.zscore("hpcq:workers", name) is not None
            _wait(ready, 60, f"worker {name}")
        return p

    def log(self, key: str) -> str:
        with open(os.path.join(self.logdir, f"{key}.log"), errors="replace") as f:
            return f.read()

    def scheduler_api(self, **settings) -> Scheduler:
        return Scheduler.connect(self.redis_url, **settings)

    def stop(self, key: str, sig=signal.SIGTERM, timeout: float = 30) -> None:
        p = self.procs.pop(key, None)
        if p is None:
            return
        tree = []
        try:
            tree = psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        try:
            p.send_signal(sig)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            pass
        for proc in [p] + tree:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except Exception:
                pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        psutil.wait_procs([t for t in tree if t.is_running()], timeout=5)

    def stop_all(self) -> None:
        for key in [k for k in self.procs if not k.startswith("scheduler")]:
            self.stop(key)
        for key in list(self.procs):
            self.stop(key)
