"""Canceling jobs (issue 3, "Job cancel"): HPC Pack's CancelJob(id, message, isForced,
isGraceful) on a real cluster (scheduler + one worker with two slots, grace period 3 s)."""

from __future__ import annotations

import time

import pytest

from tests.fixtures_cancel import (GRACE, JOB_REFUSED, QUEUED_MSG, RUNNING_MSG, TOO_LONG, box, boxes,  # noqa: F401
                             cl, job_hash, state_of, stays, task_hash, wait_file, wait_job,
                             wait_state)
from tests.support import hpcq
from scheduler.errors import InvalidId, InvalidInput, InvalidState, NotFound

pytestmark = pytest.mark.cluster


def build(cl, *tasks):
    """A job of (command, fields) tasks, submitted."""
    job = cl.api.create_job(name="job-cancel")
    for command, fields in tasks:
        job.add_task(command, **fields)
    return job.submit()


def test_cancel_job(cl, boxes):
    """Finished stays Finished, running tasks get SIGTERM and the grace, queued ones (waiting for
    a slot or for a dependency) are Canceled and never start; the job ends Canceled."""
    done, polite, deaf, queued, dep = (boxes(n) for n in ("done", "polite", "deaf", "queued", "dep"))
    job = build(cl,
                (done.quick(), {}),
                (polite.hold(on_term="exit"), {"name": "polite"}),
                (deaf.hold(on_term="ignore"), {}),
                (queued.quick(), {}),
                (dep.quick(), {"depends_on": ["polite"]}))
    j = job.id
    wait_state(cl.api, f"{j}.1", "Finished")
    wait_state(cl.api, f"{j}.2", "Running")
    wait_state(cl.api, f"{j}.3", "Running")
    wait_file(polite, "started")
    wait_file(deaf, "started")
    assert stays(lambda: state_of(cl.api, f"{j}.4") == "Queued", 0.3)
    assert state_of(cl.api, f"{j}.5") == "Queued"

    t0 = time.time()
    job = cl.api.cancel_job(j, message="plain cancel")
    elapsed = time.time() - t0
    assert job.state.value == "Canceled"
    assert job.error_message == "plain cancel"
    assert job.end_time is not None
    assert state_of(cl.api, f"{j}.1") == "Finished"
    for t, code in ((2, 5), (3, -9)):
        task = cl.api.get_task(f"{j}.{t}")
        assert task.state.value == "Failed"
        assert task.error_message == RUNNING_MSG.format("plain cancel")
        assert task.exit_code == code
    assert polite.has("term") and deaf.has("term")
    # the grace period is honored: the task ignoring SIGTERM is killed only at its end
    assert GRACE - 0.5 <= elapsed < GRACE + 5
    for t in (4, 5):
        task = cl.api.get_task(f"{j}.{t}")
        assert task.state.value == "Canceled"
        assert task.error_message == QUEUED_MSG.format("plain cancel")
    assert polite.alive() == [] and deaf.alive() == []
    assert stays(lambda: queued.runs() == 0 and dep.runs() == 0, 1.0)
    assert done.runs() == 1


def test_forced_job_cancel_skips_grace(cl, boxes):
    a, b, c = boxes("a"), boxes("b"), boxes("c")
    job = build(cl, (a.hold(on_term="ignore"), {}), (b.hold(on_term="exit"), {}), (c.quick(), {}))
    j = job.id
    wait_file(a, "started")
    wait_file(b, "started")
    wait_state(cl.api, f"{j}.2", "Running")
    t0 = time.time()
    job = cl.api.cancel_job(j, message="forced", force=True)
    elapsed = time.time() - t0
    assert job.state.value == "Canceled"
    assert job.error_message == "forced"
    assert elapsed < 2.0, f"a forced job cancel took {elapsed:.2f}s"
    for t in (1, 2):
        task = cl.api.get_task(f"{j}.{t}")
        assert task.state.value == "Failed"
        assert task.exit_code == -9
        assert task.error_message == RUNNING_MSG.format("forced")
    assert not a.has("term") and not b.has("term"), "a forced cancel sent SIGTERM first"
    assert state_of(cl.api, f"{j}.3") == "Canceled"
    assert a.alive() == [] and b.alive() == []
    assert stays(lambda: c.runs() == 0, 0.5)


def test_job_cancel_with_per_cancel_grace(cl, box):
    job = build(cl, (box.hold(on_term="ignore"), {}))
    wait_file(box, "started")
    wait_state(cl.api, f"{job.id}.1", "Running")
    t0 = time.time()
    job = cl.api.cancel_job(job.id, message="short grace", grace=1.0)
    elapsed = time.time() - t0
    assert job.state.value == "Canceled"
    assert 0.5 <= elapsed < 5, f"killed after {elapsed:.2f}s, grace 1 s"
    task = cl.api.get_task(f"{job.id}.1")
    assert task.exit_code == -9 and box.has("term")
    assert box.alive() == []


def test_force_on_a_canceling_job_escalates(cl, box):
    job = build(cl, (box.hold(on_term="ignore"), {}))
    wait_file(box, "started")
    wait_state(cl.api, f"{job.id}.1", "Running")
    job = cl.api.cancel_job(job.id, message="slow", grace=30, wait=False)
    assert job.state.value == "Canceling"
    wait_file(box, "term")
    assert stays(lambda: cl.api.get_job(job.id).state.value == "Canceling", 0.3)
    t0 = time.time()
    job = cl.api.cancel_job(job.id, message="now", force=True)
    assert time.time() - t0 < 3.0
    assert job.state.value == "Canceled"
    assert job.error_message == "slow"            # the cancel that started it
    task = cl.api.get_task(f"{job.id}.1")
    assert task.state.value == "Failed" and task.exit_code == -9
    assert box.alive() == []


def test_forced_job_cancel_with_a_sweep(cl, box):
    job = cl.api.create_job(name="job-sweep")
    job.add_task(box.script("""trap 'exit 5' TERM
echo run >> "$D/runs-$HPCQ_SWEEP_VALUE"
while [ ! -f "$D/gate" ]; do sleep 0.05; done"""), sweep=(1, 6, 1))
    job.submit()
    m = f"{job.id}.1"
    for i in (1, 2):
        wait_state(cl.api, f"{m}.{i}", "Running")
        wait_file(box, f"runs-{i}")
    job = cl.api.cancel_job(job.id, message="whole sweep", force=True)
    assert job.state.value == "Canceled"
    master = cl.api.get_task(m)
    assert master.state.value == "Canceled"
    for i in (1, 2):
        t = cl.api.get_task(f"{m}.{i}")
        assert t.state.value == "Failed"
        assert t.error_message == RUNNING_MSG.format("whole sweep")
    for i in range(3, 7):
        assert state_of(cl.api, f"{m}.{i}") == "Canceled", i
    assert box.alive() == []
    assert stays(lambda: not any(box.has(f"runs-{i}") for i in range(3, 7)), 1.0)


def test_graceful_job_cancel_lets_running_tasks_finish(cl, boxes):
    a, b, c = boxes("a"), boxes("b"), boxes("c")
    job = build(cl, (a.hold(on_term="exit"), {}), (b.hold(on_term="exit"), {}), (c.quick(), {}))
    j = job.id
    wait_file(a, "started")
    wait_file(b, "started")
    assert stays(lambda: state_of(cl.api, f"{j}.3") == "Queued", 0.3)

    job = cl.api.cancel_job(j, message="graceful", graceful=True, wait=False)
    assert job.state.value == "Canceling"
    task3 = cl.api.get_task(f"{j}.3")
    assert task3.state.value == "Canceled"
    assert task3.error_message == QUEUED_MSG.format("graceful")
    # running tasks are left alone: no signal, still Running
    assert stays(lambda: state_of(cl.api, f"{j}.1") == "Running"
                 and state_of(cl.api, f"{j}.2") == "Running", 1.0)
    assert not a.has("term") and not b.has("term")
    assert cl.api.get_job(j).state.value == "Canceling"

    a.open_gate()
    b.open_gate()
    job = wait_job(cl.api, j, ["Canceled", "Finished", "Failed"])
    assert job.state.value == "Canceled"
    assert job.error_message == "graceful"
    for t in (1, 2):
        task = cl.api.get_task(f"{j}.{t}")
        assert task.state.value == "Finished"
        assert task.exit_code == 0
    assert c.runs() == 0                         # nothing new started


def test_graceful_job_cancel_with_a_sweep(cl, boxes):
    """Graceful: the running sweep instance finishes, the instances not started are Canceled and
    never start, the master ends Canceled."""
    a, sw = boxes("a"), boxes("sweep")
    job = cl.api.create_job(name="graceful-sweep")
    job.add_task(a.hold())
    job.add_task(sw.script("""echo run >> "$D/runs-$HPCQ_SWEEP_VALUE"
while [ ! -f "$D/gate" ]; do sleep 0.05; done"""), sweep=(1, 4, 1))
    job.submit()
    j, m = job.id, f"{job.id}.2"
    wait_file(a, "started")
    wait_state(cl.api, f"{m}.1", "Running")
    wait_file(sw, "runs-1")
    job = cl.api.cancel_job(j, message="wind down", graceful=True, wait=False)
    assert job.state.value == "Canceling"
    for i in (2, 3, 4):
        assert state_of(cl.api, f"{m}.{i}") == "Canceled"
    assert stays(lambda: state_of(cl.api, f"{m}.1") == "Running"
                 and state_of(cl.api, f"{j}.1") == "Running", 0.5)
    a.open_gate()
    sw.open_gate()
    job = wait_job(cl.api, j, ["Canceled", "Finished", "Failed"])
    assert job.state.value == "Canceled"
    assert state_of(cl.api, f"{j}.1") == "Finished"
    assert state_of(cl.api, f"{m}.1") == "Finished"
    assert cl.api.get_task(m).state.value == "Canceled"
    assert not any(sw.has(f"runs-{i}") for i in (2, 3, 4))


def test_cancel_configuring_job(cl, box):
    job = cl.api.create_job()
    job.add_task(box.quick())
    job = cl.api.cancel_job(job.id, message="never submitted")
    assert job.state.value == "Canceled"
    assert job.error_message == "never submitted"
    task = cl.api.get_task(f"{job.id}.1")
    assert task.state.value == "Canceled"
    assert task.error_message == QUEUED_MSG.format("never submitted")


@pytest.mark.parametrize("end", ["Canceled", "Finished", "Failed"])
def test_cancel_of_ended_job_is_refused(cl, box, end):
    if end == "Canceled":
        job = cl.api.create_job()
        job.add_task(box.quick())
        cl.api.cancel_job(job.id, message="first")
    else:
        job = build(cl, (box.quick(0 if end == "Finished" else 4), {}))
        wait_job(cl.api, job.id, end)
    j = job.id
    before = job_hash(cl.r, j), task_hash(cl.r, f"{j}.1")
    for kw in ({}, {"message": "again"}, {"force": True}, {"graceful": True}):
        with pytest.raises(InvalidState) as exc:
            cl.api.cancel_job(j, **kw)
        assert str(exc.value) == JOB_REFUSED.format(end)
    assert (job_hash(cl.r, j), task_hash(cl.r, f"{j}.1")) == before


def test_job_cancel_input_errors(cl, box):
    job = cl.api.create_job()
    job.add_task(box.quick())
    before = job_hash(cl.r, job.id)
    with pytest.raises(InvalidInput) as exc:
        cl.api.cancel_job(job.id, message="x" * 129)
    assert str(exc.value) == TOO_LONG
    with pytest.raises(InvalidInput):
        cl.api.cancel_job(job.id, force=True, graceful=True)
    for bad in ["x", "1.2", "0", "-3", ""]:
        with pytest.raises(InvalidId):
            cl.api.cancel_job(bad)
    with pytest.raises(NotFound):
        cl.api.cancel_job(999999)
    assert job_hash(cl.r, job.id) == before


def test_cli_job_cancel(cl, boxes):
    a, b = boxes("a"), boxes("b")
    job = build(cl, (a.hold(on_term="exit"), {}), (b.quick(), {"depends_on": []}))
    wait_file(a, "started")
    res = hpcq("job", "cancel", str(job.id), "--message", "cli stop", redis_url=cl.redis_url)
    assert res.returncode == 0, res.stderr
    job = cl.api.get_job(job.id)
    assert job.state.value == "Canceled"
    assert job.error_message == "cli stop"
    assert cl.api.get_task(f"{job.id}.1").error_message == RUNNING_MSG.format("cli stop")

    before = job_hash(cl.r, job.id)
    res = hpcq("job", "cancel", str(job.id), redis_url=cl.redis_url)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and JOB_REFUSED.format("Canceled") in lines[0], res.stderr
    assert job_hash(cl.r, job.id) == before
    res = hpcq("job", "cancel", str(job.id), "--force", "--graceful", redis_url=cl.redis_url)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
