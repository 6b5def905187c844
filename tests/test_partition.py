"""Network partitions between hosts (issue 10), on real processes: Redis and a scheduler in the
root namespace, two workers ``wa`` and ``wb`` each on a host of its own (a Linux network
namespace, tests/netns.py); the host running a task is cut off mid-task (link down) and healed.

* fence off (the default): the cut-off worker's task is declared lost after
  HPCQ_WORKER_TIMEOUT and rerun on the other host while the stale copy runs on (as under
  slurmd); on heal the stale copy is killed before it can finish, and exactly one attempt (the
  recorded one) runs to the end.
* HPCQ_FENCE_AFTER on: the cut-off worker stops its own task while still cut, before the rerun
  starts elsewhere (no overlap).
* a task that is not rerunnable fails with "Node NAME became unreachable".
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis

from tests.support import MARKER_VAR, assert_no_leftovers, attempt_processes, die_with_parent, new_marker, wait_until
from tests.support.netns import Network, netns_available, start_redis
from scheduler import JobState, Scheduler

_ok, _reason = netns_available()
pytestmark = [pytest.mark.cluster, pytest.mark.netns, pytest.mark.skipif(not _ok, reason=_reason)]

ENV = {
    "HPCQ_WORKER_TIMEOUT": "3",
    "HPCQ_HEARTBEAT_INTERVAL": "0.5",
    "HPCQ_REDIS_TIMEOUT": "1",
    "HPCQ_TASK_CANCEL_GRACE_PERIOD": "2",
    "PYTHONUNBUFFERED": "1",
}
WORKER_TIMEOUT = float(ENV["HPCQ_WORKER_TIMEOUT"])
GRACE = float(ENV["HPCQ_TASK_CANCEL_GRACE_PERIOD"])
SLEEP = 8   # how long each copy of the task runs


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def marker_command(path) -> str:
    """A line 'start <attempt> <time>' when it starts, SLEEP s of work, then 'end <attempt> <time>'."""
    return (f'echo "start $HPCQ_ATTEMPT $(date +%s.%N)" >> {path}; sleep {SLEEP}; '
            f'echo "end $HPCQ_ATTEMPT $(date +%s.%N)" >> {path}')


def lines(path) -> list[tuple[str, str, float]]:
    """(kind, attempt, unix time) for each line the command wrote."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                out.append((parts[0], parts[1], float(parts[2])))
    return out


def started(path, cid):
    return next((ts for kind, c, ts in lines(path) if kind == "start" and c == cid), None)


class PartitionCluster:
    """Redis and a scheduler in the root namespace, workers ``wa`` on host a and ``wb`` on host
    b, every process carrying a per-test marker; ``s`` is the client API (127.0.0.1)."""

    def __init__(self, net: Network, workdir, worker_env: dict | None = None):
        self.net = net
        self.workdir = str(workdir)
        self.logdir = os.path.join(self.workdir, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.marker = new_marker()
        self.redis_proc, self.port = start_redis(net, self.workdir)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.r = redis.Redis.from_url(self.url, decode_responses=True)
        self.env = {**ENV, MARKER_VAR: self.marker,
                    "HPCQ_RUN_DIR": os.path.join(self.workdir, "run")}
        self.daemons: dict[str, subprocess.Popen] = {}
        self.hosts = {"wa": net.host("a"), "wb": net.host("b")}
        self.names: dict[str, str] = {}     # wa -> the node name hpcq registered (celery@wa)
        self.worker_env = worker_env or {}

    def log(self, key: str) -> str:
        try:
            with open(os.path.join(self.logdir, f"{key}.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"===== {k}\n{self.log(k)[-5000:]}" for k in self.daemons)

    def start(self) -> None:
        with open(os.path.join(self.logdir, "scheduler.log"), "ab") as log:
            self.daemons["scheduler"] = subprocess.Popen(
                [sys.executable, "-m", "scheduler.cli", "scheduler"],
                env={**os.environ, **self.env, "HPCQ_REDIS_URL": self.url},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent)
        for w, host in self.hosts.items():
            with open(os.path.join(self.logdir, f"{w}.log"), "ab") as log:
                self.daemons[w] = host.popen(
                    [sys.executable, "-m", "scheduler.cli", "worker", "--hostname", w,
                     "--concurrency", "1"],
                    env={**self.env, **self.worker_env, "HPCQ_REDIS_URL": self.net.redis_url(self.port)},
                    stdout=log, stderr=subprocess.STDOUT)
        for w in self.hosts:
            self.names[w] = wait_until(lambda: self._registered(w), 30, f"worker {w} to register")
        wait_until(lambda: self.r.get("hpcq:leader"), 30, "the scheduler to take the lease")
        self.s = Scheduler.connect(self.url)

    def _registered(self, w: str):
        p = self.daemons[w]
        if p.poll() is not None:
            raise AssertionError(f"worker {w} exited {p.returncode}:\n{self.log(w)[-3000:]}")
        for name in (f"celery@{w}", w):
            if self.r.zscore("hpcq:workers", name):
                return name
        return None

    def host_of(self, node: str):
        """(short name, host) of the worker registered as ``node``."""
        for w, name in self.names.items():
            if name == node:
                return w, self.hosts[w]
        raise AssertionError(f"unknown node {node!r} (workers: {self.names})")

    def stop(self) -> None:
        for h in self.hosts.values():
            if h.is_cut:
                h.heal()
        for key in [k for k in self.daemons if k != "scheduler"] + ["scheduler"]:
            p = self.daemons.get(key)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        try:
            assert_no_leftovers(self.marker)
        finally:
            self.r.close()
            self.redis_proc.terminate()
            self.redis_proc.wait(10)


@contextlib.contextmanager
def partition_cluster(tmp_path, worker_env: dict | None = None):
    with Network("hqp") as net:
        c = PartitionCluster(net, tmp_path, worker_env)
        ok = False
        try:
            c.start()
            yield c
            ok = True
        finally:
            try:
                c.stop()
            finally:
                if not ok:
                    print(c.logs())
        # every process of the daemons and their tasks is gone (the namespaces' too, on exit)
        left = [p for p in psutil.process_iter() if _alive(p) and p.pid != os.getpid()
                and _env_of(p).get(MARKER_VAR) == c.marker]
        assert not left, left


def _env_of(p: psutil.Process) -> dict:
    try:
        return p.environ()
    except psutil.Error:
        return {}


def running_attempt(s, tid, timeout=15, not_token=None):
    def ok():
        t = s.get_task(tid)
        return t.state.value == "Running" and t.token != not_token and t
    return wait_until(ok, timeout, f"task {tid} Running" + (" again" if not_token else ""))


def finished_events(r, tid) -> int:
    return sum(1 for _, e in r.xrange("hpcq:events") if e.get("id") == str(tid) and e.get("state") == "Finished")


def test_partitioned_worker_task_reruns_and_stale_copy_is_killed(tmp_path):
    runs = tmp_path / "runs.txt"
    with partition_cluster(tmp_path) as c:
        s = c.s
        job = s.create_job(name="partition")
        task = job.add_task(command=marker_command(runs))
        s.submit_job(job)
        t = running_attempt(s, task.id)
        wa, a = c.host_of(t.node)
        cid_a = t.record["celery_id"]
        wait_until(lambda: started(runs, cid_a), 10, "the first copy to start")
        stale = attempt_processes(cid_a)
        assert stale and all(p.pid in a.pids() for p in stale), "the task does not run on host a"

        cut_at = time.monotonic()
        a.cut()
        t = wait_until(lambda: s.get_task(task.id).auto_requeue_count == 1 and s.get_task(task.id),
                       WORKER_TIMEOUT + 5, "the cut-off worker to be declared lost")
        detected = time.monotonic() - cut_at
        t = running_attempt(s, task.id, timeout=10, not_token=cid_a.rsplit("-", 1)[1])
        cid_b = t.record["celery_id"]
        assert cid_b != cid_a and t.auto_requeue_count == 1
        assert t.node != c.names[wa]
        wait_until(lambda: started(runs, cid_b), 10, "the rerun to start")
        rerun = time.monotonic() - cut_at
        assert rerun < WORKER_TIMEOUT + 5, rerun
        other = c.host_of(t.node)[1]
        assert all(p.pid in other.pids() for p in attempt_processes(cid_b))
        # fence off: the cut-off worker's copy runs on meanwhile (two copies, only one counts)
        assert a.is_cut and [p for p in stale if _alive(p)], "the stale copy died while cut off"
        assert c.r.hget(f"hpcq:worker:{c.names[wa]}", "state") == "lost"

        heal_at = time.monotonic()
        a.heal()
        wait_until(lambda: not [p for p in stale if _alive(p)] and not attempt_processes(cid_a),
                   5, "the stale copy to be killed after the heal")
        killed = time.monotonic() - heal_at
        assert not [x for x in lines(runs) if x[0] == "end" and x[1] == cid_a], lines(runs)
        wait_until(lambda: c.r.hget(f"hpcq:worker:{c.names[wa]}", "state") == "online", 10,
                   f"{c.names[wa]} to re-register")
        back = time.monotonic() - heal_at
        assert c.r.zscore("hpcq:workers", c.names[wa])

        assert job.wait(timeout=SLEEP + 10) == JobState.Finished
        t = s.get_task(task.id)
        assert t.state.value == "Finished" and t.exit_code == 0
        assert t.node != c.names[wa]
        assert t.record["celery_id"] == cid_b and t.auto_requeue_count == 1
        ends = [x for x in lines(runs) if x[0] == "end"]
        assert [e[1] for e in ends] == [cid_b], lines(runs)
        assert [x[1] for x in lines(runs) if x[0] == "start"] == [cid_a, cid_b]
        assert finished_events(c.r, task.id) == 1
        print(f"\n[fence off] cut -> declared lost {detected:.2f} s, rerun started {rerun:.2f} s "
              f"after the cut; heal -> stale copy killed {killed:.2f} s, re-registered "
              f"online {back:.2f} s")


def test_fence_after_stops_the_cut_off_workers_task(tmp_path):
    fence = 1.5
    runs = tmp_path / "runs.txt"
    with partition_cluster(tmp_path, worker_env={"HPCQ_FENCE_AFTER": str(fence)}) as c:
        s = c.s
        job = s.create_job(name="fence")
        task = job.add_task(command=marker_command(runs))
        s.submit_job(job)
        t = running_attempt(s, task.id)
        wa, a = c.host_of(t.node)
        cid_a = t.record["celery_id"]
        wait_until(lambda: started(runs, cid_a), 10, "the first copy to start")
        stale = attempt_processes(cid_a)
        assert stale and all(p.pid in a.pids() for p in stale)

        cut_at, cut_wall = time.monotonic(), time.time()
        a.cut()
        # Watch the copy closely: the last time it was seen alive and the first time it was not.
        deadline = cut_at + fence + 1 + 0.5 + GRACE + 3   # fence + redis timeout + poll + grace + slack
        last_alive = cut_wall
        while [p for p in stale if _alive(p)]:
            last_alive = time.time()
            assert time.monotonic() < deadline, "the fenced copy is still alive"
            time.sleep(0.01)
        dead_wall = time.time()
        died = time.monotonic() - cut_at
        assert a.is_cut
        assert not attempt_processes(cid_a)

        t = wait_until(lambda: s.get_task(task.id).auto_requeue_count == 1 and s.get_task(task.id),
                       WORKER_TIMEOUT + 5, "the cut-off worker to be declared lost")
        detected = time.monotonic() - cut_at
        t = running_attempt(s, task.id, timeout=10, not_token=cid_a.rsplit("-", 1)[1])
        cid_b = t.record["celery_id"]
        assert t.node != c.names[wa] and cid_b != cid_a
        b_start = wait_until(lambda: started(runs, cid_b), 10, "the rerun to start")
        rerun = b_start - cut_wall
        print(f"\n[fence {fence:g} s] cut -> fenced copy dead {died:.2f} s (last seen alive "
              f"{last_alive - cut_wall:.2f} s), declared lost {detected:.2f} s, rerun started "
              f"{rerun:.2f} s after the cut")
        # No overlap: the fenced copy was dead before the rerun's command started.  Checked at
        # the end, so that the rest (one end line, one Finished) is checked too.
        overlap = None if dead_wall <= b_start else (
            f"overlap: cut at {datetime.datetime.fromtimestamp(cut_wall).time()}; A's copy seen alive until {last_alive - cut_wall:.3f} s and dead "
            f"at {dead_wall - cut_wall:.3f} s, B's copy started at {rerun:.3f} s after the cut")
        assert a.is_cut

        heal_at = time.monotonic()
        a.heal()
        wait_until(lambda: c.r.hget(f"hpcq:worker:{c.names[wa]}", "state") == "online", 10,
                   f"{c.names[wa]} to re-register")
        print(f"[fence {fence:g} s] heal -> re-registered online {time.monotonic() - heal_at:.2f} s")
        assert job.wait(timeout=SLEEP + 10) == JobState.Finished
        t = s.get_task(task.id)
        assert t.state.value == "Finished" and t.record["celery_id"] == cid_b
        assert t.auto_requeue_count == 1 and t.node != c.names[wa]
        assert [e[1] for e in lines(runs) if e[0] == "end"] == [cid_b], lines(runs)
        assert finished_events(c.r, task.id) == 1
        assert overlap is None, overlap


def test_not_rerunnable_task_on_a_cut_host_fails(tmp_path):
    with partition_cluster(tmp_path) as c:
        s = c.s
        job = s.create_job(name="unreachable")
        task = job.add_task(command="sleep 60", is_rerunnable=False)
        s.submit_job(job)
        t = running_attempt(s, task.id)
        node = t.node
        wa, a = c.host_of(node)
        cid = t.record["celery_id"]
        wait_until(lambda: attempt_processes(cid), 10, "the command to start")
        stale = attempt_processes(cid)

        cut_at = time.monotonic()
        a.cut()
        t = wait_until(lambda: s.get_task(task.id).state.value == "Failed" and s.get_task(task.id),
                       WORKER_TIMEOUT + 5, "the task to fail")
        detected = time.monotonic() - cut_at
        assert t.error_message.startswith(f"Node {node} became unreachable"), t.error_message
        assert t.auto_requeue_count == 0
        assert job.wait(timeout=5) == JobState.Failed
        assert [p for p in stale if _alive(p)], "fence off: the copy runs on while cut off"

        heal_at = time.monotonic()
        a.heal()
        wait_until(lambda: not [p for p in stale if _alive(p)], 5, "the stale copy to be killed")
        killed = time.monotonic() - heal_at
        t = s.get_task(task.id)
        assert t.state.value == "Failed" and t.error_message.startswith(f"Node {node} became unreachable")
        wait_until(lambda: c.r.hget(f"hpcq:worker:{node}", "state") == "online", 10,
                   f"{node} to re-register")
        print(f"\n[not rerunnable] cut -> Failed {detected:.2f} s ({t.error_message!r}); "
              f"heal -> stale copy killed {killed:.2f} s")
