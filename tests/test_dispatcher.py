"""The scheduler's sending of attempts (``Dispatcher.fill``): every attempt a dispatch call hands
out becomes one Celery task message on its worker's queue, all of a call's in one pipeline; when
the send fails, the attempts that did not start are queued again at once."""

from __future__ import annotations

import base64
import json

import pytest
from kombu.exceptions import OperationalError

from scheduler.core import keys
from scheduler.dispatcher import Dispatcher
from scheduler.settings import get_settings
from scheduler.transport import RUN_TASK, make_celery, requeue_unsent
from tests.script_model import check_invariants, read_all
from tests.support.ports import free_port


def messages(r, worker: str) -> list[dict]:
    """The Celery messages waiting on ``worker``'s queue (a Redis list, as kombu keeps it)."""
    out = []
    for raw in r.lrange(keys.worker_queue(worker), 0, -1):
        msg = json.loads(raw)
        body = json.loads(base64.b64decode(msg["body"]))
        out.append({"task": msg["headers"]["task"], "id": msg["headers"]["id"], "args": body[0]})
    return out


def test_fill_sends_each_attempt_as_a_celery_task_on_its_workers_queue(rig, store, r, redis_url):
    j = rig.job(*[{} for _ in range(5)])
    rig.worker("w1", slots=3)
    rig.worker("w2", slots=2)
    d = Dispatcher(get_settings(redis_url=redis_url))
    assert d.fill(["w1", "w2"]) == 5
    got = messages(r, "w1") + messages(r, "w2")
    assert len(messages(r, "w1")) == 3 and len(messages(r, "w2")) == 2
    assert sorted(m["args"][0] for m in got) == [f"{j}.{t}" for t in range(1, 6)]
    for m in got:
        rec = store.task(m["args"][0])
        assert m["task"] == RUN_TASK and rec["state"] == "Dispatching"
        assert m["args"][1] == rec["token"] and m["id"] == rec["celery_id"]


def test_attempts_whose_send_failed_are_queued_again_unless_they_started(rig, store, r, redis_url):
    j = rig.job(*[{} for _ in range(3)])
    rig.worker("w1", slots=3)
    d = Dispatcher(get_settings(redis_url=redis_url))
    # a broker nobody listens on: the batch's send raises, and fill says so
    d.celery = make_celery(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(OperationalError):
        d.fill(["w1"])
    assert {store.task(f"{j}.{t}")["state"] for t in (1, 2, 3)} == {"Queued"}
    assert r.llen(keys.worker_queue("w1")) == 0
    # one of an uncertain batch that did arrive and start is left alone
    attempts = [("w1", uid, tok, store.task(uid)["celery_id"]) for uid, tok in rig.dispatch().items()]
    started = attempts[0]
    rig.start(started[1], started[2])
    requeue_unsent(store, attempts, 3)
    assert store.task(started[1])["state"] == "Running"
    assert {store.task(a[1])["state"] for a in attempts[1:]} == {"Queued"}


# --- a finish hands the slot it frees to the next queued unit (finish.lua) ------------------

TAKE = ("w1", 500, 1000, 800)


def consistent(r):
    bad = check_invariants(read_all(r))
    assert not bad, "\n".join(bad)


def run_one(rig, store):
    (uid, tok), = rig.dispatch().items()
    rig.start(uid, tok)
    return uid, tok


def test_a_finish_hands_the_freed_slot_to_the_next_unit_while_a_scheduler_leads(rig, store, r):
    j = rig.job({"command": "echo one"}, {"command": "echo two"}, {"command": "echo three"})
    rig.worker("w1", slots=1)
    assert store.take_lease("sched-1", 10)
    uid, tok = run_one(rig, store)
    r.delete(keys.WAKEUP)
    (state, _, revokes), got, heads = store.finish_then_dispatch(TAKE, uid, tok, "exit", 0)
    assert state == "Finished" and revokes == []
    (worker, nxt, token, cid), = got
    rec = store.task(nxt)
    assert (worker, nxt) == ("w1", f"{j}.2") and rec["state"] == "Dispatching"
    assert (rec["token"], rec["celery_id"], rec["node"]) == (token, cid, "w1")
    assert heads == {f"{j}.2": ("echo two", "8", "", "")}
    # the nudge for w1 is taken back: the scheduler would only have done the same dispatch
    assert r.lrange(keys.WAKEUP, 0, -1) == []
    consistent(r)


def test_without_a_leading_scheduler_a_finish_hands_out_nothing_and_nudges(rig, store, r):
    rig.job({}, {})
    rig.worker("w1", slots=1)
    uid, tok = run_one(rig, store)
    r.delete(keys.WAKEUP, keys.LEADER)
    (state, _, _), got, heads = store.finish_then_dispatch(TAKE, uid, tok, "exit", 0)
    assert state == "Finished" and got == [] and heads == {}
    assert r.lrange(keys.WAKEUP, 0, -1) == ["w1"]
    consistent(r)


@pytest.mark.parametrize("how", ["drain", "stale", "fails-the-job"])
def test_a_finish_that_drains_is_stale_or_stops_others_hands_out_nothing(rig, store, r, how):
    j = rig.job({}, {}, {}, fail_on_task_failure=how == "fails-the-job")
    rig.worker("w1", slots=2)
    assert store.take_lease("sched-1", 10)
    got = rig.dispatch("w1", 2)
    (uid, tok), (other, otok) = got.items()
    rig.start(uid, tok)
    rig.start(other, otok)
    kw = {"drain": how == "drain"}
    code = 1 if how == "fails-the-job" else 0
    (state, _, revokes), handed, _ = store.finish_then_dispatch(
        TAKE, uid, tok + "9" if how == "stale" else tok, "exit", code, **kw)
    assert handed == []
    if how == "fails-the-job":
        assert state == "Failed" and [m for _, m in revokes] == ["terminate"]
        assert store.job(j)["state"] == "Failed"
    assert store.task(f"{j}.3")["state"] == ("Canceled" if how == "fails-the-job" else "Queued")
    consistent(r)
