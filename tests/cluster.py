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
    def __init__(self, redis_url: str, env: dict | None = None):
        self.redis_url = redis_url
        self.env = dict(os.environ, HPCQ_REDIS_URL=redis_url, **(env or {}))
        self.procs: dict[str, subprocess.Popen] = {}
        self.logdir = tempfile.mkdtemp(prefix="hpcq-test-")
        self.r = redis.Redis.from_url(redis_url, decode_responses=True)

    def _spawn(self, key: str, args: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.logdir, f"{key}.log"), "ab")
        p = subprocess.Popen([sys.executable, "-m", "scheduler.cli", *args, "--redis", self.redis_url],
                             env=self.env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs[key] = p
        return p

    def start_scheduler(self, key: str = "scheduler") -> subprocess.Popen:
        return self._spawn(key, ["scheduler"])

    def start_worker(self, name: str, concurrency: int = 2, wait: bool = True) -> subprocess.Popen:
        self.r.zrem("hpcq:workers", name)
        p = self._spawn(name, ["worker", "--hostname", name, "--concurrency", str(concurrency)])
        if wait:
            _wait(lambda: self.r.zscore("hpcq:workers", name) is not None, 60, f"worker {name}")
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
        for key in [k for k in self.procs if k != "scheduler" and not k.startswith("scheduler")]:
            self.stop(key)
        for key in list(self.procs):
            self.stop(key)
