"""Attempts that can never start are taken back: the token check makes requeuing them safe."""

from __future__ import annotations

import pytest

from tests.support import running_cluster, wait_until
from scheduler import JobState

pytestmark = pytest.mark.cluster


def test_attempt_whose_message_was_never_sent_is_queued_again(redis_server):
    """A scheduler killed between marking a task Dispatching and sending its Celery message
    leaves an attempt no worker will ever start; it is queued again after dispatch_timeout and
    runs, and the stranded attempt's token is dead."""
    env = {"HPCQ_DISPATCH_TIMEOUT": "1", "HPCQ_WORKER_TIMEOUT": "2"}
    with running_cluster(redis_server, workers=(("w1@lost-msg", 1),), schedulers=(),
                         env=env) as c:
        s = c.scheduler_api()
        job = s.create_job(name="lost-message")
        task = job.add_task(command="echo ran")
        s.submit_job(job)
        # What the dead scheduler did: the dispatch step, and no message.
        [(tid, token, _)] = s.store.dispatch("w1@lost-msg", 1)
        assert tid == str(task.id) and s.get_task(tid).state.value == "Dispatching"
        c.start_scheduler()
        assert job.wait(timeout=30) == JobState.Finished
        t = s.get_task(tid)
        assert t.output == "ran\n" and t.auto_requeue_count == 0   # it never ran: not a rerun
        assert t.token != token
        # the stranded attempt can no longer start or finish anything
        assert s.store.start(tid, token, 1)[0] is False


def test_attempt_sent_to_a_worker_that_went_away_runs_elsewhere(redis_server):
    """A worker that stops (heartbeat 0) with an attempt it never started: the attempt is queued
    again and runs on another worker."""
    import time
    env = {"HPCQ_WORKER_TIMEOUT": "2", "HPCQ_DISPATCH_TIMEOUT": "600"}
    with running_cluster(redis_server, workers=(), env=env) as c:
        s = c.scheduler_api()
        # a worker that registers, takes one task, and vanishes without starting it
        c.r.hset("hpcq:worker:ghost@reclaim", mapping={"slots": 1, "queue": "hpcq.w.ghost@reclaim"})
        c.r.zadd("hpcq:workers", {"ghost@reclaim": time.time()})
        job = s.create_job(name="orphaned-dispatch")
        task = job.add_task(command="echo rescued")
        s.submit_job(job)
        wait_until(lambda: s.get_task(task.id).state.value == "Dispatching", 20,
                   "the task to be dispatched to the ghost")
        assert s.get_task(task.id).node == "ghost@reclaim"
        c.r.zadd("hpcq:workers", {"ghost@reclaim": 0})       # what a stopping worker leaves
        c.start_worker("w2@reclaim", 1)
        assert job.wait(timeout=60) == JobState.Finished
        t = s.get_task(task.id)
        assert t.node == "w2@reclaim" and t.output == "rescued\n" and t.auto_requeue_count == 0
        # the ghost is forgotten once nothing of it is left
        wait_until(lambda: c.r.zscore("hpcq:workers", "ghost@reclaim") is None, 20,
                   "the ghost worker to be forgotten")
