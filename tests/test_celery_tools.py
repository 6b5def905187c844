"""Celery's own tools as hpcq clients (issue 3, "Mechanism"): ``celery control terminate`` /
``celery control revoke`` and a real Flower process's HTTP API cancel exactly as ``hpcq task
cancel`` does, and Flower shows the outcome hpcq recorded (SUCCESS / FAILURE / REVOKED).

Celery 5.7 has no ``control revoke --terminate``: the terminate command is
``celery -A worker.app control terminate SIGTERM <id>`` (measured: Celery 5.7's ``celery
control`` offers ``revoke`` and ``terminate SIGNAL``, no ``--terminate`` flag)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures_cancel import QUEUED_MSG, RUNNING_MSG, Box, box, boxes, cl, stays, submit, task_hash, wait_file, wait_state  # noqa: F401
from tests.fixtures_cancel import GRACE, flower  # noqa: F401
from tests.support import running_cluster, wait_until, with_db
from tests.support.flower import Flower

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent


def celery(cl, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "-b", cl.redis_url,
                           *args], env=cl.env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def running(cl, box: Box, command: str):
    job = submit(cl.api, command)
    tid = f"{job.id}.1"
    wait_file(box, "started")
    t = wait_state(cl.api, tid, "Running")
    wait_until(lambda: cl.api.get_task(tid).pid, 10, "the task's pid")
    return tid, t.celery_id


def assert_canceled_while_running(cl, box: Box, tid: str, code: int = 5, term: bool = True):
    t = wait_state(cl.api, tid, ["Failed", "Finished", "Canceled"], timeout=30)
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("")
    assert t.exit_code == code
    assert box.has("term") == term
    assert box.alive() == []
    return t


# --- celery control ------------------------------------------------------------------------------

def test_celery_control_terminate_sigterm(cl, box):
    tid, cid = running(cl, box, box.hold(on_term="exit"))
    res = celery(cl, "control", "terminate", "SIGTERM", cid)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_canceled_while_running(cl, box, tid)


def test_celery_control_revoke_running_task(cl, box):
    """A plain revoke of a running attempt is an hpcq cancel of it too (not a no-op)."""
    tid, cid = running(cl, box, box.hold(on_term="exit"))
    res = celery(cl, "control", "revoke", cid)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_canceled_while_running(cl, box, tid)


def test_celery_control_terminate_sigkill_is_a_forced_cancel(cl, box):
    tid, cid = running(cl, box, box.hold(on_term="exit"))
    t0 = time.time()
    res = celery(cl, "control", "terminate", "SIGKILL", cid)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_canceled_while_running(cl, box, tid, code=-9, term=False)
    assert time.time() - t0 < 10


def test_celery_revoke_of_stale_attempt_does_not_touch_new_one(cl, box):
    """A revoke names one attempt: after a requeue, the old attempt's id must not cancel the
    new attempt."""
    tid, old = running(cl, box, box.hold(on_term="exit", first_run_only=False))
    cl.api.requeue_task(tid)                     # stops attempt 1, queues attempt 2
    wait_until(lambda: box.runs() == 2, 30, "the second attempt")
    t = wait_state(cl.api, tid, "Running")
    assert t.celery_id != old
    terms = box.f("term").read_text()            # attempt 1's SIGTERM(s)
    res = celery(cl, "control", "revoke", old)
    assert res.returncode == 0, res.stdout + res.stderr
    assert stays(lambda: cl.api.get_task(tid).state.value == "Running", 1.0), (
        f"the stale revoke {old} touched attempt {t.celery_id}: {task_hash(cl.r, tid)}\n"
        + cl.log("w1@hpcq-cancel")[-3000:])
    assert box.f("term").read_text() == terms, "the new attempt received SIGTERM"
    box.open_gate()
    assert wait_state(cl.api, tid, ["Finished", "Failed"]).state.value == "Finished"


# --- Flower ------------------------------------------------------------------------------------

def test_flower_terminate_cancels_running_task(cl, box, flower):
    tid, cid = running(cl, box, box.hold(on_term="exit"))
    status, body = flower.request("POST", f"/api/task/revoke/{cid}?terminate=true")
    assert status == 200, body
    assert cid in json.loads(body)["message"]
    assert_canceled_while_running(cl, box, tid)
    flower.wait_state(cid, "FAILURE")            # canceled while running: never SUCCESS


def test_flower_revoke_button_cancels_running_task(cl, box, flower):
    tid, cid = running(cl, box, box.hold(on_term="exit"))
    status, body = flower.request("POST", f"/api/task/revoke/{cid}?terminate=false")
    assert status == 200, body
    assert_canceled_while_running(cl, box, tid)
    flower.wait_state(cid, "FAILURE")


def test_flower_agrees_with_hpcq(cl, boxes, flower):
    ok, canceled = boxes("ok"), boxes("canceled")
    job = submit(cl.api, ok.quick())
    t = wait_state(cl.api, f"{job.id}.1", "Finished")
    flower.wait_state(t.celery_id, "SUCCESS")

    tid, cid = running(cl, canceled, canceled.hold(on_term="exit"))
    t = cl.api.cancel_task(tid, message="flower")
    assert t.state.value == "Failed"
    flower.wait_state(cid, "FAILURE")
    assert stays(lambda: flower.state(cid) == "FAILURE", 1.0)


def test_flower_attempt_stopped_by_a_requeue_is_not_success(cl, box, flower):
    """Requeue of a running task stops its attempt (SIGTERM, exit 5; hpcq records it Failed,
    then queues the task again).  Flower must not show that stopped attempt as SUCCESS."""
    tid, cid = running(cl, box, box.hold(on_term="exit", first_run_only=True))
    cl.api.requeue_task(tid)
    t = wait_state(cl.api, tid, ["Finished", "Failed"])
    assert t.state.value == "Finished" and t.celery_id != cid
    assert box.has("term") and box.runs() == 2
    flower.wait_state(t.celery_id, "SUCCESS")     # Flower has seen the later attempt's events
    ready = ("SUCCESS", "FAILURE", "REVOKED")
    wait_until(lambda: flower.state(cid) in ready, 30, f"Flower to show an outcome for {cid}")
    # and it stays so (a REVOKED must not be overridden by a later SUCCESS)
    assert stays(lambda: flower.state(cid) in ("FAILURE", "REVOKED"), 0.5), (
        f"the attempt stopped by the requeue shows as {flower.state(cid)} in Flower")


def test_revoke_before_start_is_revoked_everywhere(cl, box, flower):
    """``celery control revoke`` of an attempt sent to a worker that has not started it: hpcq
    records Canceled (the live worker w1 records the revoke), the command never runs, and
    Flower shows REVOKED.  Here the late worker learns the revoked id from w1 through Celery's
    mingle and Celery itself discards the message; see the next test for hpcq's own check."""
    ghost = "ghost@hpcq-tools"
    queue = f"hpcq.w.{ghost}"
    cl.r.hset(f"hpcq:worker:{ghost}", mapping={"slots": 5, "queue": queue})
    cl.r.zadd("hpcq:workers", {ghost: time.time()})
    try:
        job = submit(cl.api, box.quick())
        tid = f"{job.id}.1"
        t = wait_state(cl.api, tid, "Dispatching")
        assert t.node == ghost
        cid = t.celery_id
        wait_until(lambda: cl.r.llen(queue) == 1, 10, "the attempt's Celery message")

        res = celery(cl, "control", "revoke", cid)
        assert res.returncode == 0, res.stdout + res.stderr
        t = wait_state(cl.api, tid, ["Canceled", "Failed", "Finished"], timeout=10)
        assert t.state.value == "Canceled"
        assert t.error_message == QUEUED_MSG.format("")

        cl.start_worker(ghost, concurrency=1)
        wait_until(lambda: cl.r.llen(queue) == 0, 30, "the worker to take the message")
        flower.wait_state(cid, "REVOKED")
        assert stays(lambda: box.runs() == 0 and flower.state(cid) == "REVOKED", 1.0)
        assert cl.api.get_task(tid).state.value == "Canceled"
    finally:
        cl.stop(ghost)
        cl.r.zrem("hpcq:workers", ghost)


def test_flower_shows_revoked_when_hpcq_drops_a_canceled_attempt(redis_server, box):
    """An attempt canceled while Dispatching, with no live worker to hear the revoke (a cluster
    of its own, in another Redis database): the worker that later receives the message runs
    hpcq's start check, drops the attempt without starting the command, and reports it revoked,
    so Flower shows REVOKED, not SUCCESS."""
    url = with_db(redis_server, 4)
    import redis as _redis
    _redis.Redis.from_url(url).flushdb()
    with running_cluster(url, workers=(), flush=False,
                         env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": str(GRACE)}) as c:
        api = c.scheduler_api()
        f = Flower(c)
        try:
            wait_until(lambda: f.request("GET", "/healthcheck")[0] == 200, 60, "Flower to answer")
            ghost = "ghost@hpcq-flower"
            queue = f"hpcq.w.{ghost}"
            c.r.hset(f"hpcq:worker:{ghost}", mapping={"slots": 1, "queue": queue})
            c.r.zadd("hpcq:workers", {ghost: time.time()})
            job = submit(api, box.quick())
            tid = f"{job.id}.1"
            cid = wait_state(api, tid, "Dispatching").celery_id
            wait_until(lambda: c.r.llen(queue) == 1, 10, "the attempt's Celery message")
            t = api.cancel_task(tid, message="early")
            assert t.state.value == "Canceled"
            assert t.error_message == QUEUED_MSG.format("early")

            c.start_worker(ghost, concurrency=1)
            wait_until(lambda: f"hpcq.run[{cid}] ignored" in c.log(ghost), 30,
                       "the worker to drop the canceled attempt")
            f.wait_state(cid, "REVOKED")
            assert stays(lambda: box.runs() == 0 and f.state(cid) == "REVOKED", 1.0)
            assert api.get_task(tid).state.value == "Canceled"
        finally:
            f.stop()
