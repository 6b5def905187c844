"""Scheduling on a real cluster of two single-slot workers: priority order, depends_on,
fail_on_task_failure, and task and job runtime limits (HPCQ_TASK_CANCEL_GRACE_PERIOD=2)."""

from __future__ import annotations

import time

import pytest

from tests.support import running_cluster, task_processes, wait_until
from scheduler import JobState, TaskState

pytestmark = pytest.mark.cluster

WORKERS = (("w1@sched", 1), ("w2@sched", 1))
GRACE = 2.0


@pytest.fixture(scope="module")
def cluster(redis_server):
    with running_cluster(redis_server, workers=WORKERS,
                         env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": str(int(GRACE))}) as c:
        yield c


@pytest.fixture(scope="module")
def s(cluster):
    return cluster.scheduler_api()


def gate(path) -> str:
    """A command that blocks until ``path`` exists."""
    return f"while [ ! -e {path} ]; do sleep 0.05; done"


def wait_state(task, states, timeout=30):
    states = {states} if isinstance(states, TaskState) else set(states)
    wait_until(lambda: task.refresh().state in states, timeout,
               f"task {task.id} to be {'/'.join(sorted(map(str, states)))}")
    return task


def test_priority_order(s, tmp_path):
    # Fill both slots with blockers, queue one-task jobs of every priority (submitted in an order
    # unlike their priority), then free a single slot: they run one after another on it.
    blockers = s.create_job(name="blockers", priority="Highest")
    b1 = blockers.add_task(command=gate(tmp_path / "go1"))
    b2 = blockers.add_task(command=gate(tmp_path / "go2"))
    s.submit_job(blockers)
    wait_state(b1, TaskState.Running)
    wait_state(b2, TaskState.Running)

    order = [("Lowest", "lowest"), ("Normal", "normal-a"), ("Highest", "highest"),
             ("BelowNormal", "below"), ("Normal", "normal-b"), ("AboveNormal", "above")]
    jobs = {}
    for priority, name in order:
        job = s.create_job(name=name, priority=priority)
        job.add_task(command="true")
        s.submit_job(job)
        jobs[name] = job
    for job in jobs.values():
        assert job.refresh().state == JobState.Queued
        assert job.get_task_list()[0].state == TaskState.Queued

    (tmp_path / "go1").touch()
    for job in jobs.values():
        assert job.wait(timeout=60) == JobState.Finished
    tasks = {name: job.get_task_list()[0] for name, job in jobs.items()}
    started = sorted(tasks, key=lambda n: tasks[n].start_time)
    assert started == ["highest", "above", "normal-a", "normal-b", "below", "lowest"], \
        {n: tasks[n].start_time for n in tasks}
    # one slot: each started after the one before it ended
    for a, b in zip(started, started[1:]):
        assert tasks[b].start_time >= tasks[a].end_time
    assert b2.refresh().state == TaskState.Running

    (tmp_path / "go2").touch()
    assert blockers.wait(timeout=30) == JobState.Finished


def test_depends_on_order(s):
    job = s.create_job(name="deps")
    a1 = job.add_task(command="sleep 1", name="A")
    a2 = job.add_task(command="sleep 0.3", name="A")   # one name, two tasks: B waits for both
    b = job.add_task(command="true", name="B", depends_on=["A"])
    c = job.add_task(command="true", name="C", depends_on=["A", "B"])
    d = job.add_task(command="true", name="D")          # no dependencies: not held back
    assert b.depends_on == ["A"] and c.depends_on == ["A", "B"]
    s.submit_job(job)
    wait_state(a1, TaskState.Running)
    # while A runs, B and C are held in Queued, never sent to a worker
    assert b.refresh().state == TaskState.Queued and c.refresh().state == TaskState.Queued
    assert job.wait(timeout=60) == JobState.Finished
    for t in (a1, a2, b, c, d):
        t.refresh()
        assert t.state == TaskState.Finished
    assert b.start_time >= max(a1.end_time, a2.end_time)
    assert c.start_time >= b.end_time
    assert d.start_time < a1.end_time  # D ran on the slot A's second task freed


def test_depends_on_unknown_name_is_refused(s):
    from scheduler import InvalidInput
    job = s.create_job(name="bad-deps")
    job.add_task(command="true", name="x", depends_on=["nope"])
    with pytest.raises(InvalidInput):
        s.submit_job(job)
    assert job.refresh().state == JobState.Configuring


def test_fail_on_task_failure(s, cluster, tmp_path):
    job = s.create_job(name="fotf", fail_on_task_failure=True)
    long = job.add_task(command="sleep 30")
    bad = job.add_task(command=gate(tmp_path / "fail") + "; exit 4")
    queued = [job.add_task(command="true") for _ in range(3)]
    s.submit_job(job)
    wait_state(long, TaskState.Running)
    wait_state(bad, TaskState.Running)
    assert all(q.refresh().state == TaskState.Queued for q in queued)

    (tmp_path / "fail").touch()
    assert job.wait(timeout=30) == JobState.Failed
    bad.refresh()
    job.refresh()
    assert bad.state == TaskState.Failed and bad.exit_code == 4
    assert bad.error_message == "The task exited with code 4."
    # failed "at once": in the same step that recorded the task's failure
    assert job.end_time == pytest.approx(bad.end_time, abs=0.5)

    for q in queued:
        q.refresh()
        assert q.state == TaskState.Canceled
        assert q.start_time is None  # never ran
    wait_state(long, {TaskState.Failed, TaskState.Canceled}, timeout=GRACE + 15)
    assert long.state == TaskState.Failed
    assert long.end_time - bad.end_time < GRACE + 5
    wait_until(lambda: not task_processes(cluster.marker, long.id), 10, "the sleep to be gone")
    assert job.refresh().state == JobState.Failed

    # the messages name the failed task
    stopped = f"Canceled by the scheduler because task {bad.id} failed and the job fails on task failure."
    assert [q.error_message for q in queued] == [stopped] * len(queued)
    assert long.error_message == stopped
    assert job.error_message == f"The job failed because task {bad.id} failed."


def test_task_runtime_limit(s, cluster):
    msg = "Canceled by the scheduler because the task's runtime has expired."
    job = s.create_job(name="task-runtime")
    polite = job.add_task(command="sleep 30", runtime=1)
    stubborn = job.add_task(command="trap '' TERM; sleep 30; echo survived", runtime=1)
    s.submit_job(job)
    wait_state(polite, TaskState.Running)
    wait_state(stubborn, TaskState.Running)
    assert task_processes(cluster.marker, polite.id)
    assert job.wait(timeout=30) == JobState.Failed
    for t in (polite, stubborn):
        t.refresh()
        assert t.state == TaskState.Failed, t.id
        assert t.error_message == msg
        assert not task_processes(cluster.marker, t.id)
    # SIGTERM ends the first at once; the second ignores it and is killed after the grace period
    assert 1.0 <= polite.end_time - polite.start_time < 1.0 + GRACE
    assert 1.0 + GRACE - 0.3 <= stubborn.end_time - stubborn.start_time < 1.0 + GRACE + 5
    assert "survived" not in stubborn.output


def test_job_runtime_limit(s, cluster):
    msg = "Canceled by the scheduler because the job's run time expired."
    job = s.create_job(name="job-runtime", runtime=2)
    running = [job.add_task(command="sleep 30") for _ in range(2)]
    waiting = job.add_task(command="sleep 30")   # two slots: this one stays Queued
    s.submit_job(job)
    for t in running:
        wait_state(t, TaskState.Running)
    t0 = time.time()
    assert job.wait(timeout=30) == JobState.Canceled
    job.refresh()
    assert job.error_message == msg
    assert job.end_time - job.start_time >= 2.0
    assert time.time() - t0 < 2.0 + GRACE + 10
    for t in running:
        t.refresh()
        assert t.state in (TaskState.Failed, TaskState.Canceled), t.state
        assert t.error_message == msg
        assert not task_processes(cluster.marker, t.id)
    waiting.refresh()
    assert waiting.state == TaskState.Canceled
    assert waiting.start_time is None
    assert waiting.error_message == msg
    # nothing of the job is left holding a slot: a new job runs on both
    nxt = s.create_job(name="after-runtime")
    for _ in range(2):
        nxt.add_task(command="true")
    s.submit_job(nxt)
    assert nxt.wait(timeout=30) == JobState.Finished


def test_job_runtime_limit_applies_again_after_requeue(s, cluster):
    """A requeued job is a new run: its clock starts again and its runtime limit still holds."""
    job = s.create_job(name="job-runtime-requeue", runtime=2)
    task = job.add_task(command="sleep 30")
    s.submit_job(job)
    wait_state(task, TaskState.Running)
    assert job.wait(timeout=30) == JobState.Canceled
    first_end = job.refresh().end_time
    s.requeue_job(job.id)
    wait_state(task, TaskState.Running)
    t0 = time.time()
    assert job.wait(timeout=30) == JobState.Canceled
    job.refresh()
    assert job.start_time > first_end                       # the clock started again
    assert job.end_time - job.start_time >= 2.0
    assert time.time() - t0 < 2.0 + GRACE + 10
    assert task.refresh().state == TaskState.Failed
    assert not task_processes(cluster.marker, task.id)
