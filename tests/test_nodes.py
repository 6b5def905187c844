"""``hpcq node list/view`` (scheduler/api/nodes.py), why a task or job waits
(scheduler/api/reasons.py: ``Reason`` in ``task view``/``job view``, ``"reason"`` in their
--json) and ``hpcq job wait`` saying that no worker is online; against real Redis, schedulers
and Celery workers.  Worker names end in ``@hpcq-nodes-test`` (other tests share the machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from scheduler import TaskState
from tests.support import hpcq, running_cluster, wait_until

pytestmark = pytest.mark.cluster

W1, W2 = "n1@hpcq-nodes-test", "n2@hpcq-nodes-test"
COLUMNS = ["Name", "State", "Used/Slots", "Free", "Cores", "GPUs", "Groups", "Tasks", "Heartbeat",
           "Started", "Queue"]


def run(url, *args, code=0, env=None):
    p = hpcq(*args, redis_url=url, env=env)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    return p


def run_json(url, *args, code=0, env=None):
    return json.loads(run(url, *args[:2], "--json", *args[2:], code=code, env=env).stdout)


def kv(text: str) -> dict[str, str]:
    """``Key   value`` lines of a view as a dict (keys of one word or two)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("  ")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def running(s, tid) -> None:
    wait_until(lambda: s.get_task(tid).state == TaskState.Running, 60, f"{tid} to run")


def test_node_list_and_view_slots_and_a_stopped_worker(redis_server):
    with running_cluster(redis_server, workers=((W1, 2), (W2, 1))) as c:
        url, s = c.redis_url, c.scheduler_api()
        nodes = run_json(url, "node", "list")
        assert [n["name"] for n in nodes] == [W1, W2]
        for n, slots in zip(nodes, (2, 1)):
            assert (n["state"], n["recorded_state"]) == ("online", "online")
            assert (n["slots"], n["used"], n["free"], n["stale"], n["tasks"]) == (slots, 0, slots, 0, [])
            assert n["queue"] == f"hpcq.w.{n['name']}" and n["pid"] == c.procs[n["name"]].pid
            assert 0 <= n["heartbeat_age"] < 10 and n["started"] <= n["last_heartbeat"]
        header, rule, *rows = run(url, "node", "list").stdout.splitlines()
        assert header.split() == COLUMNS and set(rule.split()) == {"-" * len(r) for r in rule.split()}
        assert [r.split()[:8] for r in rows] == [[W1, "online", "0/2", "2", "0/2", "-", "-", "-"],
                                                [W2, "online", "0/1", "1", "0/1", "-", "-", "-"]]
        assert rows[0].split()[-1] == f"hpcq.w.{W1}" and "s ago" in rows[0]

        # a running task holds a slot of its node
        job = s.submit([{"command": "sleep 60"}], name="busy")
        tid = f"{job.id}.1"
        running(s, tid)
        node = s.get_task(tid).node
        slots = 2 if node == W1 else 1
        view = run_json(url, "node", "view", node)
        assert view["name"] == node and view["tasks"] == [{"id": tid, "state": "Running"}]
        assert (view["used"], view["free"]) == (1, slots - 1)
        text = kv(run(url, "node", "view", node).stdout)
        assert text["State"] == "online" and text["Tasks"] == f"{tid} Running"
        assert (text["Slots"], text["Used"], text["Free"]) == (str(slots), "1", str(slots - 1))
        assert text["Queue"] == f"hpcq.w.{node}" and "s ago)" in text["Last heartbeat"]
        row = next(r for r in run(url, "node", "list").stdout.splitlines() if r.startswith(node))
        assert row.split()[2:8] == [f"1/{slots}", str(slots - 1), f"1/{slots}", "-", "-", tid]
        assert (view["cores_used"], view["cores"]) == (1, slots)
        assert repr(s.get_node(node)).startswith(f"<Node {node} online: 1/{slots} slots used, tasks {tid}")
        s.cancel_job(job.id, force=True, timeout=30)
        wait_until(lambda: s.get_node(node).used == 0, 10, "the slot to be free")

        # a worker stopped (SIGTERM) shows stopped, also after the scheduler's next passes
        c.stop(W2)
        assert run_json(url, "node", "view", W2)["state"] == "stopped"
        wait_until(lambda: s.get_node(W2).heartbeat_age > 3, 20, "a few scheduler passes")
        view = run_json(url, "node", "view", W2)
        assert (view["state"], view["free"], view["used"]) == ("stopped", 0, 0)
        assert kv(run(url, "node", "view", W2).stdout)["State"] == "stopped"
        assert [n["state"] for n in run_json(url, "node", "list")] == ["online", "stopped"]


def test_killed_worker_shows_lost_after_the_timeout(redis_server):
    env = {"HPCQ_WORKER_TIMEOUT": "3", "HPCQ_HEARTBEAT_INTERVAL": "0.5"}
    name = "k1@hpcq-nodes-test"
    with running_cluster(redis_server, workers=((name, 1),), env=env) as c:
        url = c.redis_url
        assert run_json(url, "node", "view", name, env=env)["state"] == "online"
        os.killpg(c.procs[name].pid, signal.SIGKILL)
        c.procs.pop(name).wait(10)
        view = wait_until(lambda: (v := run_json(url, "node", "view", name, env=env))["state"] == "lost" and v,
                          20, "the worker to be declared lost")
        assert view["recorded_state"] == "lost" and view["free"] == 0
        assert view["heartbeat_age"] >= 3 and view["lost_at"] >= view["last_heartbeat"]
        text = kv(run(url, "node", "view", name, env=env).stdout)
        assert text["State"] == "lost" and text["Lost at"]


def test_silent_worker_shows_unreachable_and_reasons_without_scheduler(redis_server):
    """No scheduler: nobody declares the silent worker lost, so it stays unreachable."""
    env = {"HPCQ_WORKER_TIMEOUT": "3"}
    name = "u1@hpcq-nodes-test"
    with running_cluster(redis_server, workers=((name, 1),), schedulers=(),
                         env={"HPCQ_HEARTBEAT_INTERVAL": "0.5"}) as c:
        url, s = c.redis_url, c.scheduler_api(worker_timeout=3)
        job = s.submit({"command": "true"}, name="undispatched")
        tid = f"{job.id}.1"
        assert s.get_task(tid).reason == "no scheduler is running (hpcq scheduler)"
        main = c.procs[name]
        main.send_signal(signal.SIGSTOP)
        try:
            view = wait_until(lambda: (v := run_json(url, "node", "view", name, env=env))["state"]
                              == "unreachable" and v, 20, "the worker to be unreachable")
            assert view["recorded_state"] == "online" and view["free"] == 0
            assert view["heartbeat_age"] > 3
            state = kv(run(url, "node", "view", name, env=env).stdout)["State"]
            assert state == "unreachable (recorded online; no heartbeat for more than 3 s)"
            assert run_json(url, "task", "view", tid, env=env)["reason"] == \
                "no workers are online (1 unreachable)"
        finally:
            main.send_signal(signal.SIGCONT)
        wait_until(lambda: run_json(url, "node", "view", name, env=env)["state"] == "online", 20,
                   "the worker to be online again")
        assert run_json(url, "job", "view", str(job.id), env=env)["reason"] == \
            "no scheduler is running (hpcq scheduler)"


def test_reasons_busy_slots_queue_position_and_dependencies(redis_server):
    with running_cluster(redis_server, workers=((W1, 2), (W2, 1))) as c:
        url, s = c.redis_url, c.scheduler_api()
        fill = s.submit([{"command": "sleep 60"}] * 3, name="fill")
        for t in range(1, 4):
            running(s, f"{fill.id}.{t}")
        assert sum(n["free"] for n in run_json(url, "node", "list")) == 0
        assert run_json(url, "task", "view", f"{fill.id}.1")["reason"] is None
        assert run_json(url, "job", "view", str(fill.id))["reason"] is None

        two = s.submit([{"command": "true"}, {"command": "true"}], name="queued")
        dep = s.submit([{"command": "true", "name": "prep"},
                        {"command": "true", "name": "after", "depends_on": ["prep"]}], name="deps")
        sweep = s.submit({"command": "echo *", "sweep": (1, 5, 1)}, name="sweep")
        busy = "all 3 slots are busy"

        def reason(tid):
            return run_json(url, "task", "view", tid)["reason"]
        assert reason(f"{two.id}.1") == busy
        assert reason(f"{two.id}.2") == f"{busy}; behind 1 higher-priority or earlier task in the queue"
        assert reason(f"{dep.id}.1") == f"{busy}; behind 2 higher-priority or earlier tasks in the queue"
        assert reason(f"{dep.id}.2") == f"waiting for task {dep.id}.1 (prep) to end"
        assert reason(f"{sweep.id}.1.3") == (f"{busy}; behind 3 higher-priority or earlier tasks in the "
                                             f"queue and 2 earlier instances of sweep {sweep.id}.1")
        assert reason(f"{sweep.id}.1") == f"{busy}; behind 3 higher-priority or earlier tasks in the queue"
        assert run_json(url, "job", "view", str(two.id))["reason"] == busy
        assert kv(run(url, "job", "view", str(dep.id)).stdout)["Reason"] == \
            f"{busy}; behind 2 higher-priority or earlier tasks in the queue"
        assert kv(run(url, "task", "view", f"{dep.id}.2").stdout)["Reason"] == \
            f"waiting for task {dep.id}.1 (prep) to end"
        assert "Reason" not in kv(run(url, "task", "view", f"{fill.id}.1").stdout)
        # a higher priority goes first; listings do not pay for reasons
        urgent = s.submit({"command": "true"}, name="urgent", priority="Highest")
        assert reason(f"{urgent.id}.1") == busy
        assert reason(f"{two.id}.1") == f"{busy}; behind 1 higher-priority or earlier task in the queue"
        assert all("reason" not in t for t in run_json(url, "job", "listtasks", str(two.id)))
        for j in (fill, two, dep, sweep, urgent):
            s.cancel_job(j.id, force=True, wait=False)
        for j in (fill, two, dep, sweep, urgent):
            s.get_job(j.id).wait(timeout=30)


def test_no_workers_reasons_nodes_and_job_wait_notice(redis_server, tmp_path):
    with running_cluster(redis_server, workers=()) as c:
        url, s = c.redis_url, c.scheduler_api()
        p = run(url, "node", "list")
        assert p.stdout == "" and p.stderr == "no nodes\n"
        assert run_json(url, "node", "list") == [] and s.get_node_list() == []
        p = run(url, "node", "view", "ghost@hpcq-nodes-test", code=1)
        assert p.stderr == "error: node ghost@hpcq-nodes-test does not exist\n"
        run(url, "node", "view", "ghost@hpcq-nodes-test", "--json", code=1)

        job = run(url, "job", "new", "--name", "later").stdout.strip()
        run(url, "job", "add", job, "--", "sleep 60")
        assert run_json(url, "job", "view", job)["reason"] == "not submitted"
        assert run_json(url, "task", "view", f"{job}.1")["reason"] == f"job {job} is not submitted"
        run(url, "job", "submit", job)
        none = "no workers are online"
        assert run_json(url, "task", "view", f"{job}.1")["reason"] == none
        assert run_json(url, "job", "view", job)["reason"] == none
        assert kv(run(url, "job", "view", job).stdout)["Reason"] == none
        assert kv(run(url, "task", "view", f"{job}.1").stdout)["Reason"] == none

        notice = f"job {job}: no workers are online; its tasks wait until one starts (hpcq worker)"
        p = run(url, "job", "wait", job, "--timeout", "2", code=3)
        assert p.stderr.splitlines().count(notice) == 1, p.stderr
        assert p.stderr.endswith(f"error: timed out waiting for job {job}\n")

        # said again each time the workers are gone again; it keeps waiting meanwhile
        log = tmp_path / "wait.err"
        with open(log, "w") as err:
            waiter = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "job", "wait", job],
                                      env=dict(os.environ, HPCQ_REDIS_URL=url),
                                      stdout=subprocess.DEVNULL, stderr=err)
        try:
            def said(line, times=1):
                return lambda: log.read_text().splitlines().count(line) >= times
            wait_until(said(notice), 20, "the notice")
            name = "j1@hpcq-nodes-test"
            c.start_worker(name, 1)
            wait_until(said(f"job {job}: worker {name} is online"), 20, "the worker's arrival")
            running(s, f"{job}.1")
            c.stop(name)          # warm shutdown: the task is stopped and queued again
            wait_until(said(notice, 2), 30, "the notice again")
            assert waiter.poll() is None
            s.cancel_job(int(job), force=True, wait=False)
            assert waiter.wait(30) == 1
        finally:
            if waiter.poll() is None:
                waiter.kill()
                waiter.wait()
        assert log.read_text().splitlines().count(notice) == 2, log.read_text()
