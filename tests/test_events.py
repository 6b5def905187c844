"""The public event stream (issue 13): every state change with time, old and new state, node and
message; resumable from a cursor with nothing missed; ``hpcq watch`` following a job until it
ends with ``job wait``'s exit codes; a task's history in ``hpcq task view``.  On a real cluster
(scheduler and worker processes), through the API, the CLI and Redis itself."""

from __future__ import annotations

import json
import subprocess
import sys
import os

import pytest

from scheduler.api import events as ev_api
from tests.support import hpcq, running_cluster, wait_until

pytestmark = pytest.mark.cluster

W = "e1@hpcq-events-test"


@pytest.fixture(scope="module")
def cluster(redis_server):
    """One cluster for the module (each test uses the ids it creates)."""
    with running_cluster(redis_server, workers=((W, 2),)) as c:
        yield c


def cli(c, *args, **kw):
    return hpcq(*args, redis_url=c.redis_url, **kw)


def submit(c, *words) -> str:
    p = cli(c, "job", "submit", *words)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def collect(s, since, job, until):
    """Events of ``job`` after ``since`` until ``until(event)`` is true (a deadline: 30 s)."""
    out = []
    for e in s.events(since=since, job=job, block=30):
        out.append(e)
        if until(e):
            return out
    raise AssertionError(f"the stream went quiet for 30 s; got {[(e.id, e.state) for e in out]}")


def job_end(job):
    return lambda e: e.kind == "job" and e.id == str(job) and e.state in ("Finished", "Failed", "Canceled")


def test_every_move_is_an_event_with_its_state_before_node_and_message(cluster):
    s = cluster.scheduler_api()
    since = ev_api.last_cursor(s.store)
    it = s.events()                         # "now" is the call, not the first next()
    j = cli(cluster, "job", "new", "--name", "ev").stdout.strip()
    assert cli(cluster, "job", "add", j, "--", "true").returncode == 0
    assert cli(cluster, "job", "add", j, "--", "exit 3").returncode == 0
    assert cli(cluster, "job", "add", j, "--sweep", "1-2", "--", "true").returncode == 0
    assert cli(cluster, "job", "submit", j).returncode == 0
    got = collect(s, since, int(j), job_end(j))
    first = next(it)
    assert (first.kind, first.id, first.state, first.old_state) == ("job", j, "Configuring", None)

    by_id: dict[str, list] = {}
    for e in got:
        assert e.job == int(j) and e.cursor and e.time > 0
        by_id.setdefault(e.id, []).append(e)
    for evs in by_id.values():            # each move starts where the last one ended
        assert [e.old_state for e in evs[1:]] == [e.state for e in evs[:-1]]
    plain = [e.state for e in by_id[f"{j}.1"]]
    assert plain == ["Configuring", "Submitted", "Validating", "Queued", "Dispatching", "Running",
                     "Finished"]
    assert [e.node for e in by_id[f"{j}.1"]] == [None] * 4 + [W] * 3
    failed = by_id[f"{j}.2"][-1]
    assert (failed.state, failed.node, failed.message) == ("Failed", W, "The task exited with code 3.")
    assert [e.state for e in by_id[f"{j}.3.1"]] == ["Dispatching", "Running", "Finished"]
    assert by_id[j][-1].state == "Failed" and by_id[j][-1].message == "1 task(s) failed."
    # times are Redis' clock and never go back; cursors are the stream's ids, in order
    assert all(a.time <= b.time for a, b in zip(got, got[1:]))
    ids = [tuple(map(int, e.cursor.split("-"))) for e in got]
    assert ids == sorted(ids)

    # resumable: from any event's cursor, exactly the events after it, nothing missed
    k = len(got) // 2
    again = list(s.events(since=got[k].cursor, job=int(j), block=0))
    assert [e.cursor for e in again] == [e.cursor for e in got[k + 1:]]
    # "0": from the oldest kept; to_dict is what --json prints
    oldest = list(s.events(since="0", job=int(j), block=0))
    assert oldest[0].to_dict() == {"cursor": oldest[0].cursor, "time": oldest[0].time,
                                   "kind": "job", "id": j, "old_state": None,
                                   "state": "Configuring", "node": None, "message": None}


def test_watch_follows_a_job_until_it_ends_with_job_waits_exit_codes(cluster):
    s = cluster.scheduler_api()
    since = ev_api.last_cursor(s.store)
    j = cli(cluster, "job", "new").stdout.strip()
    assert cli(cluster, "job", "add", j, "--", "sleep 1").returncode == 0
    # started before the job runs: it follows live and exits by itself when the job ends
    watch = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "watch", j, "--json",
                              "--since", since, "--redis", cluster.redis_url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert cli(cluster, "job", "submit", j).returncode == 0
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["id"] == j and lines[0]["state"] == "Configuring"
    assert lines[-1] == {**lines[-1], "kind": "job", "id": j, "state": "Finished",
                         "old_state": "Running"}
    assert [d["state"] for d in lines if d["id"] == f"{j}.1"][-3:] == ["Dispatching", "Running", "Finished"]
    assert all(d["kind"] != "worker" for d in lines)

    # a plain line per event when stdout is not a terminal; a failed job exits 1
    f = submit(cluster, "--", "exit 2")
    p = cli(cluster, "watch", f, "--since", since, timeout=30)
    assert p.returncode == 1, p.stderr
    rows = p.stdout.splitlines()
    assert any(f"{f}.1" in r and "Running -> Failed" in r and f"on {W}" in r
               and "The task exited with code 2." in r for r in rows), p.stdout
    assert rows[-1] == f"job {f} Failed"
    # from now, a job that has already ended: at once, with its code
    p = cli(cluster, "watch", f, timeout=10)
    assert (p.returncode, p.stdout.strip()) == (1, f"job {f} Failed")
    p = cli(cluster, "watch", "999", timeout=10)
    assert p.returncode == 2 and "job 999 does not exist" in p.stderr
    p = cli(cluster, "watch", f, "--since", "yesterday", timeout=10)
    assert p.returncode == 2 and p.stderr.startswith("error: invalid cursor 'yesterday'")


def test_task_view_shows_the_history_of_a_canceled_task(cluster):
    j = submit(cluster, "--", "sleep 30")
    s = cluster.scheduler_api()
    wait_until(lambda: s.get_task(f"{j}.1").state.value == "Running", 20, "the task to run")
    p = cli(cluster, "task", "cancel", f"{j}.1", "--force", "--message", "enough")
    assert p.returncode == 0, p.stderr
    doc = json.loads(cli(cluster, "task", "view", f"{j}.1", "--json").stdout)
    hist = doc["history"]
    assert [h["state"] for h in hist] == ["Configuring", "Submitted", "Validating", "Queued",
                                          "Dispatching", "Running", "Canceling", "Failed"]
    assert all(a["time"] <= b["time"] for a, b in zip(hist, hist[1:]))
    msg = "The task has been canceled by the user during execution. Message: enough"
    assert hist[-2] == {**hist[-2], "node": W, "message": msg}
    assert hist[-1] == {**hist[-1], "node": W, "message": msg}
    assert hist[-1]["time"] == doc["end_time"]
    text = cli(cluster, "task", "view", f"{j}.1").stdout
    section = text[text.index("History:"):]
    assert "Running" in section and f"on {W}" in section and "Message: enough" in section
    # requeued: the history goes on (a new run), the record's results are cleared
    assert cli(cluster, "task", "requeue", f"{j}.1", "--no-wait").returncode == 0
    doc = json.loads(cli(cluster, "task", "view", f"{j}.1", "--json").stdout)
    assert [h["state"] for h in doc["history"]][8] == "Queued"


def test_workers_coming_and_going_are_events(cluster):
    s = cluster.scheduler_api()
    since = ev_api.last_cursor(s.store)
    name = "e2@hpcq-events-test"
    cluster.start_worker(name, 1)
    cluster.stop(name)
    got = collect(s, since, None, lambda e: e.kind == "worker" and e.id == name and e.state == "stopped")
    mine = [(e.old_state, e.state, e.node) for e in got if e.kind == "worker" and e.id == name]
    assert mine[0] == (None, "online", name)
    assert mine[-1][1:] == ("stopped", name)
