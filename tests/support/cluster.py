"""A real hpcq cluster: a scheduler and Celery workers as child processes of the test (or
benchmark), against a Redis it is given; ``running_cluster`` is one whose every process carries
a marker, checked gone at exit.

Every process ``running_cluster`` starts gets ``HPCQ_TEST_MARKER=<marker>`` in its environment
(the scheduler, the Celery workers and their pool processes, and through them every task
command), so after ``stop_all()`` a scan of the process table finds anything left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid

import psutil
import redis

from scheduler import Scheduler
from tests.support.procs import assert_gone, descendants, die_with_parent, processes
from tests.support.wait import wait_until

MARKER_VAR = "HPCQ_TEST_MARKER"

#: Settings every test cluster runs with: a short cancel grace period so runtime-limit tests are
#: quick, and a short heartbeat so workers show up fast.
CLUSTER_ENV = {
    "HPCQ_TASK_CANCEL_GRACE_PERIOD": "2",
    "HPCQ_HEARTBEAT_INTERVAL": "1",
    "PYTHONUNBUFFERED": "1",
}


def new_marker() -> str:
    return f"hpcq-test-marker-{uuid.uuid4().hex[:12]}"


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or environment carries ``marker``."""
    return processes(cmdline=marker, env={MARKER_VAR: marker})


def task_processes(marker: str, task_id) -> list[psutil.Process]:
    """Live processes of one hpcq task's command (the worker puts HPCQ_TASK_ID in the command's
    environment; the cluster's marker is inherited from the worker)."""
    return processes(env={MARKER_VAR: marker, "HPCQ_TASK_ID": str(task_id)})


def assert_no_leftovers(marker: str, timeout: float = 10.0, extra=()) -> None:
    """Every process carrying ``marker`` (and every process in ``extra``) is gone within
    ``timeout``.  Stragglers are killed (they are ours: they carry our marker) and reported."""
    extra = list(extra)

    def left():
        procs = marked_processes(marker)
        pids = {p.pid for p in procs}
        for p in extra:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and p.pid not in pids:
                    procs.append(p)
            except psutil.NoSuchProcess:
                pass
        return procs

    assert_gone(left, timeout)


def as_cluster(client) -> None:
    """Make the Redis behind ``client`` one that holds an hpcq cluster whose daemons are not
    running now (what a scheduler's lease or a worker's heartbeat marks: ``keys.CLUSTER``), for
    tests of the CLI with no scheduler or worker; commands refuse a Redis without the mark."""
    from scheduler.core import keys
    client.set(keys.CLUSTER, "0")


def with_db(url: str, db: int) -> str:
    """The same Redis server, another database number."""
    base = url.rsplit("/", 1)[0] if url.count("/") >= 3 else url
    return f"{base}/{db}"


class Cluster:
    """Child processes sharing one Redis, each in its own session with its log in ``logdir``
    (also the base of the benchmarks' ``bench.common.Bench``); ``running_cluster`` makes one
    whose every process carries a marker."""

    def __init__(self, redis_url: str, env: dict | None = None, prefix: str = "hpcq-test-",
                 logdir: str | None = None):
        self.redis_url = redis_url
        self.env = dict(os.environ, HPCQ_REDIS_URL=redis_url, **(env or {}))
        self.procs: dict[str, subprocess.Popen] = {}
        self.logdir = logdir or tempfile.mkdtemp(prefix=prefix)
        self.r = redis.Redis.from_url(redis_url, decode_responses=True)

    def spawn(self, key: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.logdir, f"{key}.log"), "ab")
        # dies with the test session even if it is killed before its teardown
        p = subprocess.Popen(argv, env=dict(self.env, **(env or {})), stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=die_with_parent)
        self.procs[key] = p
        return p

    def _spawn(self, key: str, args: list[str]) -> subprocess.Popen:
        return self.spawn(key, [sys.executable, "-m", "scheduler.cli", *args,
                                "--redis", self.redis_url])

    def start_scheduler(self, key: str = "scheduler") -> subprocess.Popen:
        return self._spawn(key, ["scheduler"])

    def start_worker(self, name: str, concurrency: int = 2, wait: bool = True,
                     args=()) -> subprocess.Popen:
        """``args``: more options of ``hpcq worker`` (--cores, --gpus, --group ...)."""
        self.r.zrem("hpcq:workers", name)
        p = self._spawn(name, ["worker", "--hostname", name, "--concurrency", str(concurrency),
                               *map(str, args)])
        if wait:
            def ready():
                if p.poll() is not None:
                    raise AssertionError(f"worker {name} exited:\n{self.log(name)[-2000:]}")
                return self.r.zscore("hpcq:workers", name) is not None
            wait_until(ready, 60, f"worker {name}")
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
        tree = descendants(p.pid)
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


@contextlib.contextmanager
def running_cluster(redis_url: str, workers=(("w1@hpcq-test", 2),), schedulers=("scheduler",),
                    env: dict | None = None, flush: bool = True):
    """A cluster of real ``hpcq scheduler`` and ``hpcq worker`` processes on ``redis_url``,
    all stopped at exit, with a check that none of their processes (or the commands they ran)
    is left."""
    marker = new_marker()
    if flush:
        redis.Redis.from_url(redis_url).flushall()
    cluster = Cluster(redis_url, env={MARKER_VAR: marker, **CLUSTER_ENV, **(env or {})})
    cluster.marker = marker
    try:
        for key in schedulers:
            cluster.start_scheduler(key)
        for name, concurrency, *args in workers:
            cluster.start_worker(name, concurrency, args=args[0] if args else ())
        if schedulers:
            wait_until(lambda: cluster.r.get("hpcq:leader"), 30, "a scheduler to take the lease")
        yield cluster
    finally:
        cluster.stop_all()
        assert_no_leftovers(marker)


def dump_logs(cluster: Cluster) -> str:
    out = []
    for name in sorted(os.listdir(cluster.logdir)):
        with open(os.path.join(cluster.logdir, name), errors="replace") as f:
            out.append(f"===== {name}\n{f.read()[-4000:]}")
    return "\n".join(out)
