"""Two schedulers on one Redis: only the lease holder dispatches, and when it is killed -9 the
other takes over within seconds (lease TTL 5 s by default)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support import running_cluster, wait_until
from scheduler import JobState

pytestmark = pytest.mark.cluster

SCHEDULERS = ("scheduler-a", "scheduler-b")


@pytest.fixture(scope="module")
def cluster(redis_server):
    with running_cluster(redis_server, workers=(("w1@failover", 2),), schedulers=SCHEDULERS) as c:
        yield c


def leader_pid(cluster) -> int:
    lease = cluster.r.get("hpcq:leader")
    assert lease, "no scheduler holds the lease"
    return int(lease.split(":")[-2])   # "<host>:<pid>:<nonce>"


def key_of(cluster, pid: int) -> str:
    keys = [k for k in SCHEDULERS if k in cluster.procs and cluster.procs[k].pid == pid]
    assert keys, f"the lease names pid {pid}, which is none of the schedulers"
    return keys[0]


def run_job(s, n=4, timeout=60):
    job = s.create_job(name="failover")
    for i in range(n):
        job.add_task(command=f"echo {i}")
    s.submit_job(job)
    assert job.wait(timeout=timeout) == JobState.Finished
    return job


def test_only_one_scheduler_dispatches(cluster):
    s = cluster.scheduler_api()
    for key in SCHEDULERS:
        wait_until(lambda: "started" in cluster.log(key), 30, f"{key} to start")
    leader = key_of(cluster, leader_pid(cluster))
    other = next(k for k in SCHEDULERS if k != leader)
    lease = cluster.r.get("hpcq:leader")

    for _ in range(3):
        run_job(s)
    # still the same holder, well past the lease TTL, with the other alive and standing by
    assert cluster.r.get("hpcq:leader") == lease
    assert cluster.procs[other].poll() is None
    wait_until(lambda: "is now dispatching" in cluster.log(leader), 10, "the leader's log line")
    assert "is now dispatching" not in cluster.log(other), cluster.log(other)
    assert 0 < cluster.r.pttl("hpcq:leader") <= 5000 * 1.01  # a lease, not a permanent key


def test_takeover_after_kill_9(cluster):
    s = cluster.scheduler_api()
    leader = key_of(cluster, leader_pid(cluster))
    other = next(k for k in SCHEDULERS if k != leader)
    other_pid = cluster.procs[other].pid

    cluster.stop(leader, sig=signal.SIGKILL)
    killed = time.monotonic()
    job = s.create_job(name="after-kill")
    for i in range(4):
        job.add_task(command=f"echo after-{i}")
    s.submit_job(job)
    assert job.wait(timeout=30) == JobState.Finished
    took = time.monotonic() - killed
    assert took < 15, f"took {took:.1f}s after the kill"
    assert [t.output for t in job.get_task_list()] == [f"after-{i}\n" for i in range(4)]
    assert leader_pid(cluster) == other_pid
    wait_until(lambda: "is now dispatching" in cluster.log(other), 10, "the takeover log line")

