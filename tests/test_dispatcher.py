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
from tests.support.ports import free_port

pytestmark = pytest.mark.store


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
