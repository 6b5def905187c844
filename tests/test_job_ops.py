"""A job's operations on all its tasks (submit, cancel, finish, fail, requeue) go in steps of
STEP_TASKS tasks (lua/lib_ops.lua), so a large job never blocks Redis for long; what must hold
between the steps: the job is marked first, nothing of it starts once a cancel began, what runs
is stopped by the first step, a step left undone is finished by whoever comes next (a client,
the leading scheduler), and the end is the one an atomic operation would have reached.

The jobs here are a few steps long (STEP_TASKS + a bit); ``python -m bench`` measures the
100,000-task case with a ping probe."""

from __future__ import annotations

import pytest

from scheduler.api.model import Msg, TaskSpec
from scheduler.core import keys, schema
from scheduler.core.schema import cancel_texts
from scheduler.core.store import Store
from scheduler.dispatcher import Dispatcher
from scheduler.errors import InvalidState
from scheduler.settings import get_settings
from tests.script_model import band, check_invariants, read_all

pytestmark = pytest.mark.store

N = schema.STEP_TASKS * 2 + 17          # three steps


def big_job(store, n=N, submit=True, **job) -> int:
    """A job of n plain tasks through new_job (built in steps past STEP_TASKS)."""
    rec = TaskSpec(command="true").to_record()
    j, created = store.new_job({"name": "big", **job}, [rec] * n, [[]] * n, band("Normal"),
                               submit=submit)
    assert created
    return j


def evals(r) -> int:
    stats = r.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


def consistent(r):
    bad = check_invariants(read_all(r))
    assert not bad, "\n".join(bad)


def states(store, j) -> dict[str, int]:
    rec = store.job(j)
    return {k[2:]: int(v) for k, v in rec.items() if k.startswith("c:") and int(v)}


def test_a_large_job_is_built_and_submitted_in_steps(store, r):
    before = evals(r)
    j = big_job(store)
    # 3 steps of new_job, then the submit op's 2 further steps
    assert evals(r) - before >= 5
    assert states(store, j) == {"Queued": N}
    ids = r.zrange(keys.QUEUE, 0, -1)
    assert ids == [f"{j}.{t}" for t in range(1, N + 1)], "queue order is submission order"
    assert not store.job_ops()
    consistent(r)


def test_a_failed_build_step_leaves_nothing(store, r, monkeypatch):
    real = Store._new_job
    calls = []

    def second_step_refused(self, key, payload):
        calls.append(payload.get("job_id"))
        if len(calls) == 2:             # the job is no longer Configuring: the step is refused
            self.call("cancel_job", [payload["job_id"], "", "", "", 0, "", 0])
        return real(self, key, payload)

    monkeypatch.setattr(Store, "_new_job", second_step_refused)
    with pytest.raises(InvalidState):
        big_job(store)
    assert store.job_ids() == []
    # (the event stream keeps what happened; no record of the job or its tasks is left)
    left = [k for k in r.keys(f"{keys.PREFIX}:*") if k.startswith((keys.job(""), keys.task(""))) and k != keys.JOB_SEQ]
    assert left == [] and r.zcard(keys.QUEUE) == 0


def test_the_key_of_a_large_job_returns_it_again(store):
    rec = TaskSpec(command="true").to_record()
    first, created = store.new_job({"name": "k"}, [rec] * N, [[]] * N, 0, key="k1")
    again, created2 = store.new_job({"name": "k"}, [rec] * N, [[]] * N, 0, key="k1")
    assert created and not created2 and again == first
    assert store.job_ids() == [first]


def test_cancel_marks_the_job_stops_what_runs_first_and_nothing_starts(rig, store, r):
    j = big_job(store)
    rig.worker(slots=8)
    got = rig.dispatch()
    running = list(got)[:4]
    for uid in running:
        rig.start(uid, got[uid])
    state, revokes = store.cancel_job(j, *cancel_texts("stop"), "stop", follow=False)
    # the job is marked and everything on the worker stopped by this first step
    assert state == "Canceling"
    assert sorted(cid for cid, mode in revokes if mode == "terminate") == sorted(
        store.task(u)["celery_id"] for u in running)
    assert len([1 for _, mode in revokes if mode == "discard"]) == 4
    assert store.job_ops() == [str(j)]
    assert 0 < states(store, j)["Queued"] < N
    # nothing of it is handed out while its op goes on, to this worker or another
    rig.worker("w2", slots=8)
    assert rig.dispatch("w2") == {} and rig.dispatch("w1") == {}
    done = False
    while not done:
        done, more = store.job_step(j)
        assert not [m for _, m in more if m == "terminate"], "what ran was stopped already"
    assert states(store, j) == {"Canceled": N - 4, "Canceling": 4}
    for uid in running:
        rig.finish(uid, got[uid], code=-15)
    assert store.job(j)["state"] == "Canceled"
    consistent(r)


def test_a_client_that_stops_midway_leaves_the_op_to_the_scheduler(store, r, redis_url):
    j = big_job(store)
    store.cancel_job(j, *cancel_texts(""), "", follow=False)
    assert store.job_ops() == [str(j)]
    d = Dispatcher(get_settings(redis_url=redis_url))
    d.resume_ops()
    assert store.job_ops() == [] and not d.more_ops
    assert store.job(j)["state"] == "Canceled"
    assert states(store, j) == {"Canceled": N}
    consistent(r)


def test_fail_on_task_failure_fails_the_job_at_once_and_stops_the_rest_in_steps(rig, store, r):
    j = big_job(store, fail_on_task_failure="1")
    rig.worker(slots=2)
    (a, ta), (b, tb) = rig.dispatch().items()
    rig.start(a, ta)
    rig.start(b, tb)
    _, _, revokes = store.finish(a, ta, "exit", 1, Msg.exit_code.format(1), retry_cap=3,
                                 follow=False)
    assert store.job(j)["state"] == "Failed"
    assert revokes == [(store.task(b)["celery_id"], "terminate")]
    assert store.job_ops() == [str(j)]
    rig.worker("w2", slots=8)
    assert rig.dispatch("w2") == {}
    while not store.job_step(j)[0]:
        pass
    stop = Msg.stopped_by_job_failure.format(a)
    assert states(store, j) == {"Failed": 1, "Canceling": 1, "Canceled": N - 2}
    assert store.task(f"{j}.{N}")["error"] == stop
    rig.finish(b, tb, code=-15)
    consistent(r)


def test_requeue_goes_in_steps_and_a_cancel_overrides_it(rig, store, r):
    j = big_job(store)
    store.cancel_job(j, *cancel_texts(""), "")
    state, _ = store.requeue_job(j, cancel_texts("")[1])
    assert state == "Queued" and states(store, j) == {"Queued": N}
    consistent(r)
    # a requeue left midway, then a cancel: the cancel's op replaces it and covers every task
    store.cancel_job(j, *cancel_texts(""), "")
    reply = store.call("requeue_job", [j, "requeued"])
    assert f"more:{j}" in reply
    store.cancel_job(j, *cancel_texts(""), "")
    assert states(store, j) == {"Canceled": N}
    assert store.job(j)["state"] == "Canceled"
    consistent(r)


def test_a_cancel_during_the_submit_op_submits_what_it_cancels(rig, store, r):
    """Tasks the submit op had not reached yet are Configuring: the cancel op gives them their
    queue score first, so a requeue later queues every task in order."""
    j = big_job(store, submit=False)
    reply = store.call("submit", [j, N, band("Normal"), ""])
    assert reply[1] == f"more:{j}"
    store.cancel_job(j, *cancel_texts(""), "")
    assert states(store, j) == {"Canceled": N}
    store.requeue_job(j, "")
    assert r.zrange(keys.QUEUE, 0, -1) == [f"{j}.{t}" for t in range(1, N + 1)]
    consistent(r)


def test_finish_job_goes_in_steps(rig, store, r):
    j = big_job(store)
    rig.worker(slots=1)
    ((uid, tok),) = rig.dispatch().items()
    rig.start(uid, tok)
    state, revokes = store.finish_job(j, "enough", None)
    assert revokes == [(store.task(uid)["celery_id"], "terminate")]
    assert states(store, j) == {"Finished": N - 1, "Canceling": 1}
    rig.finish(uid, tok, code=-15)
    assert store.job(j)["state"] == "Finished"
    consistent(r)
