"""Requeue (issue 3, "Requeue a task" / "Requeue a job"): HPC Pack's RequeueTask and job requeue
on a real cluster (scheduler + one worker with two slots, grace period 3 s)."""

from __future__ import annotations

import pytest

from tests.fixtures_cancel import (NOT_RERUNNABLE, QUEUED_MSG, Box, box, boxes, cl, job_hash,  # noqa: F401
                             state_of, stays, task_hash, wait_file, wait_job, wait_state)
from tests.support import wait_until
from tests.support import hpcq
from scheduler.errors import InvalidId, InvalidState, NotFound

pytestmark = pytest.mark.cluster

RESULT_FIELDS = ("exit_code", "end_time", "error")


def build(cl, *tasks, **job_fields):
    job = cl.api.create_job(name="requeue", **job_fields)
    for command, fields in tasks:
        job.add_task(command, **fields)
    return job.submit()


# --- tasks ----------------------------------------------------------------------------------------

def test_requeue_failed_task_runs_again(cl, box):
    job = build(cl, (box.fail_first(code=3, hold_second=True), {}))
    tid = f"{job.id}.1"
    t = wait_state(cl.api, tid, "Failed")
    assert t.exit_code == 3 and t.end_time is not None and t.error_message
    wait_job(cl.api, job.id, "Failed")

    t = cl.api.requeue_task(tid)
    assert t.requeue_count == 1
    assert t.state.value in ("Queued", "Dispatching", "Running")
    rec = task_hash(cl.r, tid)
    for f in RESULT_FIELDS:
        assert f not in rec, f"{f} not cleared: {rec.get(f)!r}"
    assert cl.api.get_job(job.id).state.value in ("Queued", "Running")
    assert cl.api.get_job(job.id).error_message == ""

    wait_until(lambda: box.runs() == 2, 30, "the second run")
    wait_state(cl.api, tid, "Running")
    assert cl.api.get_job(job.id).state.value == "Running"
    box.open_gate()
    t = wait_state(cl.api, tid, "Finished")
    assert t.exit_code == 0
    assert t.requeue_count == 1
    assert t.error_message == ""
    assert wait_job(cl.api, job.id, "Finished").state.value == "Finished"


def test_requeue_canceled_task(cl, boxes):
    first, second = boxes("first"), boxes("second")
    job = build(cl, (first.hold(), {"name": "first"}), (second.quick(), {"depends_on": ["first"]}))
    wait_state(cl.api, f"{job.id}.1", "Running")
    t = cl.api.cancel_task(f"{job.id}.2", message="for now")
    assert t.state.value == "Canceled"

    t = job.requeue_task(2)
    assert t.state.value == "Queued"
    assert t.requeue_count == 1
    assert t.error_message == "" and t.end_time is None
    assert stays(lambda: second.runs() == 0, 0.3)   # still waiting for its dependency
    first.open_gate()
    t = wait_state(cl.api, f"{job.id}.2", "Finished")
    assert second.runs() == 1
    assert t.requeue_count == 1
    wait_job(cl.api, job.id, "Finished")


def test_requeue_task_of_canceled_job_reopens_job(cl, box):
    job = build(cl, (box.hold(on_term="exit", first_run_only=True), {}))
    wait_file(box, "started")
    job = cl.api.cancel_job(job.id, message="stop")
    assert job.state.value == "Canceled"
    assert state_of(cl.api, f"{job.id}.1") == "Failed"

    t = cl.api.requeue_task(f"{job.id}.1")
    assert t.requeue_count == 1
    job = cl.api.get_job(job.id)
    assert job.state.value in ("Queued", "Running")
    assert job.end_time is None and job.error_message == ""
    wait_state(cl.api, f"{job.id}.1", "Finished")
    assert box.runs() == 2
    assert wait_job(cl.api, job.id, ["Finished", "Failed", "Canceled"]).state.value == "Finished"


def test_requeue_running_task_cancels_then_runs_again(cl, box):
    job = build(cl, (box.hold(on_term="exit", first_run_only=True), {}))
    tid = f"{job.id}.1"
    wait_file(box, "started")
    wait_state(cl.api, tid, "Running")
    t = cl.api.requeue_task(tid)
    assert box.has("term"), "the running attempt was not stopped"
    assert t.requeue_count == 1
    assert t.state.value in ("Queued", "Dispatching", "Running", "Finished")
    t = wait_state(cl.api, tid, "Finished")
    assert box.runs() == 2
    assert t.exit_code == 0 and t.error_message == ""
    assert t.requeue_count == 1
    assert box.alive() == []
    wait_job(cl.api, job.id, "Finished")


def test_requeue_canceling_task(cl, box):
    """Requeue during a cancel's grace period: queued again once its processes are gone."""
    job = build(cl, (box.hold(on_term="ignore", first_run_only=True), {}))
    tid = f"{job.id}.1"
    wait_file(box, "started")
    wait_state(cl.api, tid, "Running")
    cl.api.cancel_task(tid, message="first", grace=1.0, wait=False)
    wait_file(box, "term")
    assert state_of(cl.api, tid) == "Canceling"
    cl.api.requeue_task(tid)
    # (the API returns at once here: the attempt being stopped is not one it stops itself)
    t = wait_state(cl.api, tid, ["Finished", "Failed", "Canceled"])
    assert t.state.value == "Finished"
    assert t.requeue_count == 1
    assert box.runs() == 2
    assert box.alive() == []


def test_requeue_refusals_change_nothing(cl, boxes):
    ok, once = boxes("ok"), boxes("once")
    job = build(cl, (ok.quick(), {}), (once.quick(9), {"is_rerunnable": False}))
    wait_job(cl.api, job.id, "Failed")
    snap = lambda: (task_hash(cl.r, f"{job.id}.1"), task_hash(cl.r, f"{job.id}.2"),  # noqa: E731
                    job_hash(cl.r, job.id))
    before = snap()
    with pytest.raises(InvalidState) as exc:
        cl.api.requeue_task(f"{job.id}.1")
    assert str(exc.value) == "Tasks in the Finished state cannot be requeued."
    with pytest.raises(InvalidState) as exc:
        job.requeue_task(2)
    assert str(exc.value) == NOT_RERUNNABLE
    with pytest.raises(NotFound):
        cl.api.requeue_task(f"{job.id}.3")
    for bad in ["x", "1", "1.2.3.4", "0.1"]:
        with pytest.raises(InvalidId):
            cl.api.requeue_task(bad)
    assert snap() == before
    assert stays(lambda: ok.runs() == 1 and once.runs() == 1, 0.3)


def sweep_script(box: Box) -> str:
    """Instance v records runs-v and sleeps a little; an even v fails (exit 3) on its first run."""
    return box.script("""V=$HPCQ_SWEEP_VALUE
first=1; [ -f "$D/runs-$V" ] && first=0
echo run >> "$D/runs-$V"
sleep 0.5
if [ $first = 1 ] && [ $((V % 2)) = 0 ]; then exit 3; fi
exit 0""")


def test_requeue_sweep_instance_and_master(cl, box):
    job = cl.api.create_job(name="sweep-requeue")
    job.add_task(sweep_script(box), sweep=(1, 4, 1))
    job.submit()
    m = f"{job.id}.1"
    # instance 3 is canceled before it is dispatched (instances 1 and 2 hold both slots)
    t = cl.api.cancel_task(f"{m}.3", message="skip")
    assert t.state.value == "Canceled"
    master = wait_state(cl.api, m, ["Finished", "Failed", "Canceled"])
    assert master.state.value == "Failed"
    runs = lambda i: len(box.f(f"runs-{i}").read_text().splitlines()) if box.has(f"runs-{i}") else 0  # noqa: E731
    assert [state_of(cl.api, f"{m}.{i}") for i in range(1, 5)] == ["Finished", "Failed", "Canceled", "Failed"]
    assert [runs(i) for i in range(1, 5)] == [1, 1, 0, 1]

    # one instance: J.T.I
    t = cl.api.requeue_task(f"{m}.2")
    assert t.requeue_count == 1
    assert t.state.value in ("Queued", "Dispatching", "Running")
    assert cl.api.get_task(m).state.value in ("Queued", "Running")
    wait_state(cl.api, f"{m}.2", "Finished")
    master = wait_state(cl.api, m, ["Finished", "Failed"])
    assert master.state.value == "Failed"        # instance 4 is still Failed
    assert runs(2) == 2

    # the master: its Failed and Canceled instances, not the Finished ones
    t = cl.api.requeue_task(m)
    assert t.requeue_count >= 1
    master = wait_state(cl.api, m, ["Finished", "Failed", "Canceled"])
    assert master.state.value == "Finished"
    assert [state_of(cl.api, f"{m}.{i}") for i in range(1, 5)] == ["Finished"] * 4
    assert [runs(i) for i in range(1, 5)] == [1, 2, 1, 2]
    assert cl.api.get_task(f"{m}.4").requeue_count == 1
    assert cl.api.get_task(f"{m}.3").requeue_count == 1
    assert cl.api.get_task(f"{m}.1").requeue_count == 0
    wait_job(cl.api, job.id, "Finished")


# --- jobs -----------------------------------------------------------------------------------------

def test_requeue_failed_job(cl, boxes):
    """Finished tasks stay Finished, a task canceled on purpose before it ran stays Canceled,
    the Failed one is queued again."""
    held, dep, flaky = boxes("held"), boxes("dep"), boxes("flaky")
    job = build(cl, (held.hold(), {"name": "held"}), (dep.quick(), {"depends_on": ["held"]}),
                (flaky.fail_first(code=3), {}))
    j = job.id
    wait_state(cl.api, f"{j}.3", "Failed")
    cl.api.cancel_task(f"{j}.2", message="on purpose")
    held.open_gate()
    job = wait_job(cl.api, j, ["Failed", "Finished", "Canceled"])
    assert job.state.value == "Failed"

    job = cl.api.requeue_job(j)
    assert job.requeue_count == 1
    assert job.state.value in ("Queued", "Running", "Finished")
    job = wait_job(cl.api, j, ["Finished", "Failed", "Canceled"])
    assert job.state.value == "Finished"
    assert state_of(cl.api, f"{j}.1") == "Finished" and held.runs() == 1
    t2 = cl.api.get_task(f"{j}.2")
    assert t2.state.value == "Canceled" and dep.runs() == 0
    assert t2.error_message == QUEUED_MSG.format("on purpose")
    t3 = cl.api.get_task(f"{j}.3")
    assert t3.state.value == "Finished" and flaky.runs() == 2 and t3.requeue_count == 1


def test_requeue_canceled_job(cl, boxes):
    """Tasks the job cancel stopped (running -> Failed) or canceled (queued) run again."""
    run1, queued = boxes("run1"), boxes("queued")
    job = build(cl, (run1.hold(on_term="exit", first_run_only=True), {"name": "r"}),
                (queued.quick(), {"depends_on": ["r"]}))
    j = job.id
    wait_file(run1, "started")
    job = cl.api.cancel_job(j, message="cancel the job")
    assert job.state.value == "Canceled"
    assert [state_of(cl.api, f"{j}.{t}") for t in (1, 2)] == ["Failed", "Canceled"]

    job = cl.api.requeue_job(j)
    assert job.error_message == ""
    job = wait_job(cl.api, j, ["Finished", "Failed", "Canceled"])
    assert job.state.value == "Finished"
    assert run1.runs() == 2 and queued.runs() == 1
    for t in (1, 2):
        task = cl.api.get_task(f"{j}.{t}")
        assert task.state.value == "Finished"
        assert task.requeue_count == 1


def test_requeue_canceled_job_with_a_sweep(cl, box):
    """A job cancel cut the sweep (running instances Failed, the rest Canceled without being
    started); the job requeue runs every instance again."""
    job = cl.api.create_job(name="sweep-job-requeue")
    job.add_task(box.script("""echo run >> "$D/runs-$HPCQ_SWEEP_VALUE"
if [ -f "$D/round2" ]; then exit 0; fi
trap 'exit 5' TERM
while [ ! -f "$D/gate" ]; do sleep 0.05; done"""), sweep=(1, 5, 1))
    job.submit()
    m = f"{job.id}.1"
    for i in (1, 2):
        wait_file(box, f"runs-{i}")
        wait_state(cl.api, f"{m}.{i}", "Running")
    job = cl.api.cancel_job(job.id, message="cut")
    assert job.state.value == "Canceled"
    assert [state_of(cl.api, f"{m}.{i}") for i in range(1, 6)] == ["Failed"] * 2 + ["Canceled"] * 3

    box.f("round2").touch()
    job = cl.api.requeue_job(job.id)
    job = wait_job(cl.api, job.id, ["Finished", "Failed", "Canceled"])
    assert job.state.value == "Finished"
    assert cl.api.get_task(m).state.value == "Finished"
    assert [state_of(cl.api, f"{m}.{i}") for i in range(1, 6)] == ["Finished"] * 5
    runs = [len(box.f(f"runs-{i}").read_text().splitlines()) for i in range(1, 6)]
    assert runs == [2, 2, 1, 1, 1]


def test_requeue_running_job(cl, boxes):
    done, run1 = boxes("done"), boxes("run1")
    job = build(cl, (done.quick(), {}), (run1.hold(on_term="exit", first_run_only=True), {}))
    j = job.id
    wait_state(cl.api, f"{j}.1", "Finished")
    wait_file(run1, "started")
    assert cl.api.get_job(j).state.value == "Running"
    job = cl.api.requeue_job(j)
    assert run1.has("term")
    job = wait_job(cl.api, j, ["Finished", "Failed", "Canceled"])
    assert job.state.value == "Finished"
    assert job.requeue_count == 1
    assert done.runs() == 1 and run1.runs() == 2
    assert cl.api.get_task(f"{j}.1").requeue_count == 0
    assert cl.api.get_task(f"{j}.2").requeue_count == 1


def test_requeue_job_refusals_change_nothing(cl, box):
    job = build(cl, (box.quick(), {}))
    wait_job(cl.api, job.id, "Finished")
    before = job_hash(cl.r, job.id), task_hash(cl.r, f"{job.id}.1")
    with pytest.raises(InvalidState) as exc:
        cl.api.requeue_job(job.id)
    assert str(exc.value) == "Jobs in the Finished state cannot be requeued."
    assert (job_hash(cl.r, job.id), task_hash(cl.r, f"{job.id}.1")) == before

    conf = cl.api.create_job()
    conf.add_task(box.quick())
    before = job_hash(cl.r, conf.id)
    with pytest.raises(InvalidState) as exc:
        cl.api.requeue_job(conf.id)
    assert str(exc.value) == "Jobs in the Configuring state cannot be requeued."
    assert job_hash(cl.r, conf.id) == before
    with pytest.raises(NotFound):
        cl.api.requeue_job(999999)
    with pytest.raises(InvalidId):
        cl.api.requeue_job("1.1")
    assert box.runs() == 1


def test_cli_requeue(cl, box):
    job = build(cl, (box.fail_first(code=3), {}))
    tid = f"{job.id}.1"
    wait_state(cl.api, tid, "Failed")
    res = hpcq("task", "requeue", tid, redis_url=cl.redis_url)
    assert res.returncode == 0, res.stderr
    wait_state(cl.api, tid, "Finished")
    before = task_hash(cl.r, tid)
    res = hpcq("task", "requeue", tid, redis_url=cl.redis_url)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Tasks in the Finished state cannot be requeued." in lines[0], res.stderr
    assert task_hash(cl.r, tid) == before
    wait_job(cl.api, job.id, "Finished")
    res = hpcq("job", "requeue", str(job.id), redis_url=cl.redis_url)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Jobs in the Finished state cannot be requeued." in lines[0], res.stderr
