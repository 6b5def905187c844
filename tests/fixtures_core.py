"""Shared pieces of the integration test modules (test_core, test_scheduling, test_sweep_scale,
test_failover, test_cli, test_up): a real cluster per module whose every process carries a
marker, and the check that none of them outlives the module.

Every process a cluster starts gets ``HPCQ_TEST_MARKER=<marker>`` in its environment (the
scheduler, the Celery workers and their pool processes, and through them every task command),
so after ``stop_all()`` a scan of the process table finds anything left behind."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid

import psutil
import redis

from cluster import Cluster
from helpers import describe, no_task_processes

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


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or environment carries ``marker``."""
    return no_task_processes(marker, env_var=MARKER_VAR)


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

    deadline = time.monotonic() + timeout
    procs = left()
    while procs and time.monotonic() < deadline:
        time.sleep(0.1)
        procs = left()
    if procs:
        report = describe(procs)
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=5)
        raise AssertionError(f"processes left behind:\n{report}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_db(url: str, db: int) -> str:
    """The same Redis server, another database number."""
    base = url.rsplit("/", 1)[0] if url.count("/") >= 3 else url
    return f"{base}/{db}"


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
        for name, concurrency in workers:
            cluster.start_worker(name, concurrency)
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


def task_processes(marker: str, task_id) -> list[psutil.Process]:
    """Live processes of one hpcq task's command (the worker puts HPCQ_TASK_ID in the command's
    environment; the cluster's marker is inherited from the worker)."""
    tid = str(task_id)
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = p.environ()
        except psutil.Error:
            continue
        if env.get(MARKER_VAR) == marker and env.get("HPCQ_TASK_ID") == tid:
            found.append(p)
    return found


def attempt_processes(celery_id: str) -> list[psutil.Process]:
    """Live processes of one attempt (the worker puts ``HPCQ_ATTEMPT=<celery id>`` in the
    command's environment), wherever they were reparented."""
    found = []
    for p in psutil.process_iter(["status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and p.environ().get("HPCQ_ATTEMPT") == celery_id:
                found.append(p)
        except psutil.Error:
            pass
    return found
