"""Prometheus metrics (issue 13): ``hpcq scheduler --metrics-port`` serves the cluster's figures
(tasks per state, queue depth, workers and slots, dispatch and cancel latencies, attempts lost
and rerun) and ``hpcq worker --metrics-port`` the worker's own; scraped over HTTP and checked
against what the test submitted, on a real cluster driven through the CLI."""

from __future__ import annotations

import os
import signal
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import free_port, hpcq, running_cluster, task_processes, wait_until

pytestmark = pytest.mark.cluster

W = "m1@hpcq-metrics-test"


def scrape(port: int) -> dict:
    """{sample name: value} with the labels folded into the name: ``hpcq_tasks{state=Queued}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def until(port: int, want: dict, what: str, timeout: float = 20) -> dict:
    """Scrape until every metric in ``want`` has its value; the last scrape."""
    last = {}

    def ok():
        last.update(scrape(port))
        return all(last.get(k) == v for k, v in want.items())
    try:
        wait_until(ok, timeout, what, interval=0.2)
    except AssertionError:
        raise AssertionError(f"{what}: wanted {want}, got "
                             f"{ {k: last.get(k) for k in want} }") from None
    return last


@pytest.fixture
def cluster(redis_url):
    sp, wp = str(free_port()), str(free_port())
    with running_cluster(redis_url, workers=(), schedulers=()) as c:
        cli = [sys.executable, "-m", "scheduler.cli"]
        c.spawn("scheduler", cli + ["scheduler", "--metrics-port", sp, "--metrics-address",
                                    "127.0.0.1", "--redis", redis_url])
        c.spawn(W, cli + ["worker", "--hostname", W, "--concurrency", "2", "--metrics-port", wp,
                          "--metrics-address", "127.0.0.1", "--redis", redis_url])
        c.sp, c.wp = sp, wp
        wait_until(lambda: c.r.get("hpcq:leader"), 30, "a scheduler to take the lease")
        yield c


def run(c, *args) -> str:
    p = hpcq(*args, redis_url=c.redis_url)
    assert p.returncode == 0, f"hpcq {' '.join(map(str, args))}: {p.stderr}"
    return p.stdout.strip()


def job_of(c, n: int, command: str) -> str:
    j = run(c, "job", "new")
    for _ in range(n):
        run(c, "job", "add", j, "--", command)
    run(c, "job", "submit", j)
    return j


def test_the_scrapes_count_what_was_submitted(cluster):
    c, sp = cluster, cluster.sp
    until(sp, {"hpcq_redis_up": 1, "hpcq_workers_alive": 1, "hpcq_slots": 2,
               "hpcq_slots_free": 2, "hpcq_workers{state=online}": 1}, "the worker online")

    a = job_of(c, 5, "true")
    assert hpcq("job", "wait", a, redis_url=c.redis_url).returncode == 0
    b = job_of(c, 2, "sleep 60")                       # both slots
    wait_until(lambda: "Running 2" in run(c, "job", "view", b), 20, "job b's tasks to run")
    q = job_of(c, 2, "sleep 60")                       # no free slot: they wait
    m = until(sp, {"hpcq_tasks{state=Finished}": 5, "hpcq_tasks{state=Running}": 2,
                   "hpcq_tasks{state=Queued}": 2, "hpcq_queue_depth": 2, "hpcq_slots_free": 0,
                   "hpcq_jobs{state=Finished}": 1, "hpcq_jobs{state=Running}": 1,
                   "hpcq_jobs{state=Queued}": 1, "hpcq_dispatch_latency_seconds_count": 7,
                   "hpcq_start_latency_seconds_count": 7,
                   "hpcq_cancel_to_stopped_seconds_count": 0,
                   "hpcq_attempts_lost_total": 0, "hpcq_attempts_rerun_total": 0},
              "5 finished, 2 running, 2 queued")
    # each of the 7 was dispatched within 10 s of being queued
    assert m["hpcq_dispatch_latency_seconds_bucket{le=10.0}"] == 7
    assert 0 < m["hpcq_dispatch_latency_seconds_sum"] < 70
    # the worker's own endpoint: its slots and the attempts it holds, its process counters
    w = until(c.wp, {f"hpcq_worker_slots{{worker={W}}}": 2,
                     f"hpcq_worker_attempts{{worker={W}}}": 2,
                     f"hpcq_worker_draining{{worker={W}}}": 0}, "the worker's figures")
    assert w["process_resident_memory_bytes"] > 0

    # a canceled running task: one cancel-to-stopped observation (forced: well under a second
    # plus the poll), and its slot goes to a queued task
    run(c, "task", "cancel", f"{b}.1", "--force")
    m = until(sp, {"hpcq_cancel_to_stopped_seconds_count": 1,
                   "hpcq_dispatch_latency_seconds_count": 8, "hpcq_queue_depth": 1,
                   "hpcq_tasks{state=Failed}": 1}, "the cancel observed")
    assert m["hpcq_cancel_to_stopped_seconds_sum"] < 5

    # an attempt whose supervising pool process is killed is lost, and rerun (rerunnable)
    procs = wait_until(lambda: task_processes(c.marker, f"{b}.2"), 10, f"task {b}.2's command")
    pool = procs[0].parent()
    os.kill(pool.pid, signal.SIGKILL)
    until(sp, {"hpcq_attempts_lost_total": 1, "hpcq_attempts_rerun_total": 1},
          "the lost attempt counted")
    assert "Queued" in run(c, "task", "view", f"{b}.2") or "Running" in run(c, "task", "view", f"{b}.2")
    run(c, "job", "cancel", b, "--force")
    run(c, "job", "cancel", q, "--force")


def test_a_taken_metrics_port_is_one_clear_line(redis_url):
    port = free_port()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        p = hpcq("scheduler", "--metrics-port", port, "--metrics-address", "127.0.0.1",
                 redis_url=redis_url, timeout=30)
    assert p.returncode == 1
    assert p.stderr.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}: ")
    assert "Traceback" not in p.stderr
