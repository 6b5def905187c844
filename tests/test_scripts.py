"""The fast tier for the Lua scripts (issue 11): every script called on a bare real Redis (no
scheduler, no Celery, no worker processes), through ``scheduler.core.store.Store``'s public methods.

- ``test_refusal_changes_nothing``: every refusal every script makes (each ``fail(...)`` and
  each early return that refuses), one case each, with a DUMP (and TTL) of every key before and
  after: a refused step must change nothing, not even the event stream or the dispatcher's
  wakeup list.
- ``test_random_sequence``: a fixed-seed sequence of a few thousand random operations, valid and
  invalid, with the invariants of the Redis layout (tests/script_model.py) checked after every
  step.  ``HPCQ_SCRIPTS_SEED`` / ``HPCQ_SCRIPTS_STEPS`` replay another seed or a prefix.
- ``test_found_*``: the smallest reproductions of what the sequence found, one per cause.
"""

from __future__ import annotations

import os
import re
import time

import pytest
import redis

from scheduler.core import keys
from scheduler.api.client import Scheduler
from scheduler.errors import (CancelMessageTooLong, HpcqError, InvalidInput, InvalidState,
                              NotFound, PermissionDenied)
from scheduler.api.model import Msg, TaskSpec
from scheduler.settings import get_settings
from tests.script_model import (RETRY_CAP, Sequence, band, check_invariants, dump_keyspace,
                          read_all)

SEED = int(os.environ.get("HPCQ_SCRIPTS_SEED", "20240611"))
STEPS = int(os.environ.get("HPCQ_SCRIPTS_STEPS", "2000"))
REC = TaskSpec(command="true").to_record()


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)     # bytes: DUMP payloads are binary
    yield client
    client.close()


def assert_unchanged(before: dict, after: dict, elapsed_ms: float) -> None:
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k][0] != after[k][0])
    # a TTL only runs down while nothing touches the key
    ttls = sorted(k for k in set(before) & set(after)
                  if not ((before[k][1] < 0 and after[k][1] == before[k][1])
                          or 0 <= before[k][1] - after[k][1] <= elapsed_ms + 50))
    assert not (created or deleted or changed or ttls), (
        f"a refused step changed the keyspace: created {created}, deleted {deleted}, "
        f"changed {changed}, TTL reset {ttls}")


# --- every refusal of every script ---------------------------------------------------------------

#: name -> (setup(rig, r) -> operation, exception class or None, message regex or expected reply)
REFUSALS: dict[str, tuple] = {}


def refusal(name, raises=None, match=None, reply=None, may_accept=False):
    """A refusal case: ``setup(rig, r)`` builds the state and returns the refused operation,
    which must raise ``raises`` (its text matching ``match``) or answer ``reply`` (a value or a
    predicate).  ``may_accept``: the step may also be accepted (then nothing is compared)."""
    def deco(setup):
        assert name not in REFUSALS, name
        REFUSALS[name] = (setup, raises, match, reply, may_accept)
        return setup
    return deco


def sweep(n=3, **kw):
    return {"sweep": (1, n, 1), **kw}


def api(rig):
    return Scheduler(rig.store, get_settings(redis_url=rig.store.url))


# add_task.lua
@refusal("add_task/job-not-found", NotFound, r"^job 99 does not exist$")
def _(rig, r):
    return lambda: rig.store.add_task(99, REC)


@refusal("add_task/job-being-finished", InvalidState, r"^Tasks cannot be added to job \d+: it is being finished\.$")
def _(rig, r):
    j = rig.job({}, {})
    rig.worker()
    rig.start(*next(iter(rig.dispatch(want=1).items())))
    rig.store.finish_job(j, "done")
    return lambda: rig.store.add_task(j, REC)


@refusal("add_task/unknown-dependency", InvalidInput, r"^task \d+\.7 does not exist$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.add_task(j, REC, deps=[7])


@refusal("add_task/job-canceled-while-configuring", InvalidState, r"job \d+ is Canceled\.$")
def _(rig, r):
    j = rig.job(submit=False)
    rig.cancel_job(j)
    return lambda: rig.store.add_task(j, REC)


@refusal("add_task/job-finished", InvalidState, r"job \d+ is Finished\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.complete()
    return lambda: rig.store.add_task(j, REC)


# create_job.lua, new_job.lua: parents must exist; a key already used returns its job
@refusal("create_job/parent-not-found", NotFound, r"^parent job 42 does not exist$")
def _(rig, r):
    return lambda: rig.store.create_job({"name": "c", "parents": "42"})


@refusal("new_job/parent-not-found", NotFound, r"^parent job 42 does not exist$")
def _(rig, r):
    return lambda: rig.store.new_job({"name": "c", "parents": "42"}, [REC], [[]], band("Normal"))


@refusal("new_job/key-already-used", reply=lambda got: got[1] is False)
def _(rig, r):
    j, _ = rig.store.new_job({"name": "k"}, [REC], [[]], band("Normal"), key="k1")
    return lambda: rig.store.new_job({"name": "k"}, [REC], [[]], band("Normal"), key="k1")


@refusal("new_job/no-tasks", InvalidInput, r"^a job needs at least one task$")
def _(rig, r):
    return lambda: rig.store.new_job({"name": "e"}, [], [], band("Normal"))


# release.lua: nothing due
@refusal("release/nothing-due", reply=0)
def _(rig, r):
    j = rig.job(submit=False)
    r.hset(keys.job(j), "hold_until", time.time() + 3600)
    rig.store.submit(j, band("Normal"), [[]])
    return rig.store.release


# modify_job.lua
@refusal("modify_job/job-not-found", NotFound, r"^job 99 does not exist$")
def _(rig, r):
    return lambda: rig.store.modify_job(99, "0")


@refusal("modify_job/job-running", InvalidState, r"^Only Configuring or Queued jobs can be modified; job \d+ is Running\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.run()
    return lambda: rig.store.modify_job(j, "0", "Highest", band("Highest"))


# finish_task.lua, finish_job.lua
@refusal("finish_task/not-found", NotFound, r"^task 99\.1 does not exist$")
def _(rig, r):
    return lambda: rig.store.finish_task("99.1", "m")


@refusal("finish_task/finished", InvalidState, r"^Tasks in the Finished state cannot be finished\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.complete()
    return lambda: rig.store.finish_task(f"{j}.1", "m")


@refusal("finish_task/configuring", InvalidState, r"^Tasks in the Configuring state cannot be finished\.$")
def _(rig, r):
    j = rig.job(submit=False)
    return lambda: rig.store.finish_task(f"{j}.1", "m")


@refusal("finish_job/configuring", InvalidState, r"^Jobs in the Configuring state cannot be finished\.$")
def _(rig, r):
    j = rig.job(submit=False)
    return lambda: rig.store.finish_job(j, "m")


@refusal("finish_job/failed", InvalidState, r"^Jobs in the Failed state cannot be finished\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.complete(code=3)
    return lambda: rig.store.finish_job(j, "m")


# submit.lua
@refusal("submit/job-not-found", NotFound, r"^job 99 does not exist$")
def _(rig, r):
    return lambda: rig.store.submit(99, band("Normal"), [[]])


@refusal("submit/job-queued", InvalidState,
         r"^Only jobs in the Configuring state can be submitted; job \d+ is Queued\.$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.submit(j, band("Normal"), [[]])


@refusal("submit/job-canceled-while-configuring", InvalidState, r"job \d+ is Canceled\.$")
def _(rig, r):
    j = rig.job(submit=False)
    rig.cancel_job(j)
    return lambda: rig.store.submit(j, band("Normal"), [[]])


@refusal("submit/task-added-meanwhile", InvalidState, r"changed while it was being submitted")
def _(rig, r):
    j = rig.job({}, {}, submit=False)
    return lambda: rig.store.submit(j, band("Normal"), [[]])   # the caller validated one task


@refusal("submit/task-not-configuring-by-hand", InvalidState,
         r"job \d+: 1 of its 3 tasks are neither Configuring nor Canceled")
def _(rig, r):
    # No script leaves a task of a Configuring job in another state than Configuring or
    # Canceled; the record and the job's counts are written by hand to reach this check.
    j = rig.job({}, {}, {}, submit=False)
    r.hset(keys.task(f"{j}.2"), "state", "Queued")
    r.hincrby(keys.job(j), "c:Configuring", -1)
    r.hincrby(keys.job(j), "c:Queued", 1)
    return lambda: rig.store.submit(j, band("Normal"), [[], [], []])


# dispatch.lua: the early returns (a worker that gets nothing)
# job_step.lua: nothing to do (no op, or no job)
@refusal("job_step/no-op", reply=["done"])
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.call("job_step", [j, 10])


@refusal("job_step/job-not-found", reply=["done"])
def _(rig, r):
    return lambda: rig.store.call("job_step", [99, 10])


@refusal("dispatch/unknown-worker", reply=[])
def _(rig, r):
    rig.job()
    return lambda: rig.store.dispatch("nobody", 4)


@refusal("dispatch/worker-lost", reply=[])
def _(rig, r):
    rig.worker()
    rig.job()
    rig.lose_worker()
    return lambda: rig.store.dispatch("w1", 4)


@refusal("dispatch/worker-stopped", reply=[])
def _(rig, r):
    rig.worker()
    rig.job()
    rig.store.unregister_worker("w1")
    return lambda: rig.store.dispatch("w1", 4)


@refusal("dispatch/worker-draining", reply=[])
def _(rig, r):
    rig.worker(state="draining")
    rig.job()
    return lambda: rig.store.dispatch("w1", 4)


@refusal("dispatch/worker-full", reply=[])
def _(rig, r):
    rig.worker(slots=1)
    rig.job({}, {})
    assert len(rig.dispatch()) == 1
    return lambda: rig.store.dispatch("w1", 4)


@refusal("dispatch/slots-held-by-stale-attempts", reply=[])
def _(rig, r):
    j = rig.job()
    stale, _ = rig.worker(slots=1, held=[(f"{j}.1", "123")])
    assert stale == [(f"{j}.1", "123")]
    return lambda: rig.store.dispatch("w1", 4)


@refusal("dispatch/want-zero", reply=[])
def _(rig, r):
    rig.worker()
    rig.job()
    return lambda: rig.store.dispatch("w1", 0)


@refusal("dispatch/queue-empty", reply=[])
def _(rig, r):
    rig.worker()
    rig.job({"name": "a"}, {"depends_on": ["a"]})
    assert len(rig.run()) == 1           # the second waits for the first
    return lambda: rig.store.dispatch("w1", 4)


# start.lua: {'no', state}
def no(state):
    return lambda got: got == (False, "", state)


@refusal("start/task-gone", reply=no("gone"))
def _(rig, r):
    return lambda: rig.store.start("9.9", "1", 1000)


@refusal("start/instance-not-dispatched", reply=no("gone"))
def _(rig, r):
    j = rig.job(sweep())
    return lambda: rig.store.start(f"{j}.1.2", "1", 1000)


@refusal("start/wrong-token", reply=no("Dispatching"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.dispatch().items()
    return lambda: rig.store.start(uid, "1" + tok, 1000)


@refusal("start/superseded-attempt", reply=no("Dispatching"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, old), = rig.dispatch().items()
    rig.finish(uid, old, outcome="lost")          # never started: queued again
    (uid, new), = rig.dispatch().items()
    assert new != old
    return lambda: rig.store.start(uid, old, 1000)


@refusal("start/canceled-while-dispatching", reply=no("Canceled"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.dispatch().items()
    rig.cancel_task(uid)
    return lambda: rig.store.start(uid, tok, 1000)


def job_marked(field, value):
    """A dispatched attempt whose job then has ``field`` = ``value`` (its cancel or finish op
    has not reached the attempt yet: lib_ops.lua; the op's first step stops what is on a worker,
    so the job's record is written by hand to reach start.lua's check)."""
    def setup(rig, r):
        j = rig.job()
        rig.worker()
        (uid, tok), = rig.dispatch().items()
        r.hset(keys.job(j), field, value)
        return lambda: rig.store.start(uid, tok, 1000)
    return setup


refusal("start/job-being-canceled", reply=no("Canceling"))(job_marked("state", "Canceling"))
refusal("start/job-finishing", reply=no("Queued"))(job_marked("finish", "1"))


@refusal("start/queued-again-after-lost", reply=no("Queued"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.dispatch().items()
    rig.finish(uid, tok, outcome="lost")
    return lambda: rig.store.start(uid, tok, 1000)


@refusal("start/running-in-another-process", reply=no("Running"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    return lambda: rig.store.start(uid, tok, 2000)


@refusal("start/canceling", reply=no("Canceling"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    rig.cancel_task(uid)
    return lambda: rig.store.start(uid, tok, 1000)


@refusal("start/asked-again-by-the-same-process", reply=lambda got: got[0] is True)
def _(rig, r):
    # not a refusal: the same answer again (the first reply was lost), and no write
    rig.job(sweep())
    rig.worker()
    uid, tok = next(iter(rig.run().items()))
    return lambda: rig.store.start(uid, tok, 1000)


# finish.lua (end_attempt): {'stale', state}
def stale(state):
    return lambda got: got == (state, "", [])


@refusal("finish/task-gone", reply=stale("gone"))
def _(rig, r):
    return lambda: rig.store.finish("9.9", "1", "exit", 0, retry_cap=RETRY_CAP)


@refusal("finish/wrong-token", reply=stale("Running"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    return lambda: rig.store.finish(uid, "1" + tok, "exit", 0, retry_cap=RETRY_CAP)


@refusal("finish/lost-wrong-token", reply=stale("Running"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    return lambda: rig.store.finish(uid, "1" + tok, "lost", None, "x", retry_cap=RETRY_CAP)


@refusal("finish/twice", reply=stale("Finished"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.complete().items()
    return lambda: rig.store.finish(uid, tok, "exit", 0, retry_cap=RETRY_CAP)


@refusal("finish/ended-by-cancel-while-dispatching", reply=stale("Canceled"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.dispatch().items()
    rig.cancel_task(uid)                    # Canceled; the token is still the current one
    return lambda: rig.store.finish(uid, tok, "exit", 0, retry_cap=RETRY_CAP)


@refusal("finish/after-lost-and-queued-again", reply=stale("Queued"))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    rig.lose_worker()
    return lambda: rig.store.finish(uid, tok, "exit", 0, retry_cap=RETRY_CAP)


@refusal("finish/stale-with-drain", reply=stale("Running"))
def _(rig, r):
    # a stale attempt of a worker shutting down must not mark the worker draining
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    return lambda: rig.store.finish(uid, "1" + tok, "lost", None, Msg.worker_stopped.format("w1"),
                                    retry_cap=RETRY_CAP, drain=True)


@refusal("finish/instance-superseded", reply=stale("Running"))
def _(rig, r):
    rig.job(sweep(2))
    rig.worker()
    uid, old = next(iter(rig.run().items()))
    rig.finish(uid, old, outcome="lost")           # rerun (rerunnable)
    got = rig.run()
    assert uid in got and got[uid] != old
    return lambda: rig.store.finish(uid, old, "exit", 0, retry_cap=RETRY_CAP)


# cancel_task.lua
@refusal("cancel_task/task-not-found", NotFound, r"^task \d+\.9 does not exist$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.cancel_task(f"{j}.9")


@refusal("cancel_task/job-not-found", NotFound, r"^task 99\.1 does not exist$")
def _(rig, r):
    return lambda: rig.cancel_task("99.1")


@refusal("cancel_task/not-the-owner", PermissionDenied,
         r"^only the job's owner or an administrator can cancel task \d+\.1 \(it belongs to "
         r"nobody; you are mallory\)$")
def _(rig, r):
    j = rig.job()
    r.set(keys.ADMINS, "root, alice")
    return lambda: rig.store.cancel_task(f"{j}.1", "", "", user="mallory")


@refusal("cancel_job/not-the-owner", PermissionDenied,
         r"^only the job's owner or an administrator can cancel job \d+ \(it belongs to nobody; "
         r"you are mallory\)$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.cancel_job(j, "", "", "", user="mallory")


@refusal("requeue_task/not-the-owner", PermissionDenied, r"^only the job's owner .* can requeue task ")
def _(rig, r):
    j = rig.job()
    rig.cancel_task(f"{j}.1")
    return lambda: rig.store.requeue_task(f"{j}.1", "", user="mallory")


@refusal("requeue_job/not-the-owner", PermissionDenied, r"^only the job's owner .* can requeue job ")
def _(rig, r):
    j = rig.job()
    rig.cancel_job(j)
    return lambda: rig.store.requeue_job(j, "", user="mallory")


@refusal("modify_job/not-the-owner", PermissionDenied, r"^only the job's owner .* can modify job ")
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.modify_job(j, "", "Highest", band("Highest"), user="mallory")


@refusal("finish_task/not-the-owner", PermissionDenied, r"^only the job's owner .* can finish task ")
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.finish_task(f"{j}.1", "done", user="mallory")


@refusal("finish_job/not-the-owner", PermissionDenied, r"^only the job's owner .* can finish job ")
def _(rig, r):
    j = rig.job()
    return lambda: rig.store.finish_job(j, "done", user="mallory")


@refusal("cancel_task/no-such-job-for-a-user", NotFound, r"^job 99 does not exist$")
def _(rig, r):
    return lambda: rig.store.cancel_task("99.1", "", "", user="alice")


@refusal("cancel_task/instance-beyond-the-sweep", NotFound, r"^task \d+\.1\.4 does not exist$")
def _(rig, r):
    j = rig.job(sweep(3))
    return lambda: rig.cancel_task(f"{j}.1.4")


@refusal("cancel_task/instance-of-a-plain-task", NotFound, r"^task \d+\.1\.1 does not exist$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.cancel_task(f"{j}.1.1")


@refusal("cancel_task/finished", InvalidState, r"^Tasks in the Finished state cannot be canceled\.$")
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, _), = rig.complete().items()
    return lambda: rig.cancel_task(uid)


@refusal("cancel_task/failed", InvalidState, r"^Tasks in the Failed state cannot be canceled\.$")
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, _), = rig.complete(code=1).items()
    return lambda: rig.cancel_task(uid)


@refusal("cancel_task/canceled", InvalidState, r"^Tasks in the Canceled state cannot be canceled\.$")
def _(rig, r):
    j = rig.job()
    rig.cancel_task(f"{j}.1")
    return lambda: rig.cancel_task(f"{j}.1", force=True)


@refusal("cancel_task/finished-sweep", InvalidState, r"^Tasks in the Finished state cannot be canceled\.$")
def _(rig, r):
    j = rig.job(sweep(2))
    rig.worker()
    rig.complete()
    return lambda: rig.cancel_task(f"{j}.1")


@refusal("cancel_task/finished-instance", InvalidState, r"^Tasks in the Finished state cannot be canceled\.$")
def _(rig, r):
    j = rig.job(sweep(2))
    rig.worker()
    rig.complete()
    return lambda: rig.cancel_task(f"{j}.1.2")


@refusal("cancel_task/instance-cut-off-by-the-sweep-cancel", InvalidState,
         r"^Tasks in the Canceled state cannot be canceled\.$")
def _(rig, r):
    j = rig.job(sweep(3))
    rig.cancel_task(f"{j}.1")
    return lambda: rig.cancel_task(f"{j}.1.2")


@refusal("cancel_task/instance-of-a-canceling-sweep", InvalidState,
         r"^Tasks in the Canceled state cannot be canceled\.$")
def _(rig, r):
    j = rig.job(sweep(3))
    rig.worker()
    rig.start(*next(iter(rig.dispatch(want=1).items())))
    assert rig.cancel_task(f"{j}.1")[0] == "Canceling"
    return lambda: rig.cancel_task(f"{j}.1.3")


@refusal("cancel_task/revoke-of-another-attempt", reply=("Running", []))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    return lambda: rig.cancel_task(uid, mode="revoke", token="1" + tok)


@refusal("cancel_task/revoke-of-a-canceling-attempt", reply=("Canceling", []))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    rig.cancel_task(uid)
    return lambda: rig.cancel_task(uid, mode="revoke", token=tok)


@refusal("cancel_task/revoke-of-an-ended-attempt", reply=("Finished", []))
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, tok), = rig.complete().items()
    return lambda: rig.cancel_task(uid, mode="revoke", token=tok)


@refusal("cancel_task/revoke-of-an-instance-not-dispatched", reply=("Queued", []))
def _(rig, r):
    j = rig.job(sweep(3))
    return lambda: rig.cancel_task(f"{j}.1.2", mode="revoke", token="1")


# cancel_job.lua
@refusal("cancel_job/job-not-found", NotFound, r"^job 99 does not exist$")
def _(rig, r):
    return lambda: rig.cancel_job(99)


@refusal("cancel_job/finished", InvalidState, r"^Jobs in the Finished state cannot be canceled\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.complete()
    return lambda: rig.cancel_job(j)


@refusal("cancel_job/failed", InvalidState, r"^Jobs in the Failed state cannot be canceled\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.complete(code=2)
    return lambda: rig.cancel_job(j)


@refusal("cancel_job/canceled", InvalidState, r"^Jobs in the Canceled state cannot be canceled\.$")
def _(rig, r):
    j = rig.job()
    rig.cancel_job(j)
    return lambda: rig.cancel_job(j, force=True)


# requeue_task.lua
@refusal("requeue_task/task-not-found", NotFound, r"^task \d+\.9 does not exist$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.requeue_task(f"{j}.9")


@refusal("requeue_task/job-not-found", NotFound, r"^task 99\.1 does not exist$")
def _(rig, r):
    return lambda: rig.requeue_task("99.1")


@refusal("requeue_task/instance-beyond-the-sweep", NotFound, r"^task \d+\.1\.4 does not exist$")
def _(rig, r):
    j = rig.job(sweep(3))
    return lambda: rig.requeue_task(f"{j}.1.4")


@refusal("requeue_task/instance-not-dispatched", reply=("Queued", []))
def _(rig, r):
    j = rig.job(sweep(3))
    return lambda: rig.requeue_task(f"{j}.1.2")


@refusal("requeue_task/instance-cut-off-by-the-sweep-cancel", InvalidState,
         r"^Sweep instance \d+\.1\.2 was canceled with its master; requeue the master \d+\.1\.$")
def _(rig, r):
    j = rig.job(sweep(3))
    rig.cancel_task(f"{j}.1")
    return lambda: rig.requeue_task(f"{j}.1.2")


@refusal("requeue_task/not-rerunnable", InvalidState, "^" + Msg.not_rerunnable.replace(".", r"\.") + "$")
def _(rig, r):
    rig.job({"is_rerunnable": False})
    rig.worker()
    (uid, _), = rig.complete(code=1).items()
    return lambda: rig.requeue_task(uid)


@refusal("requeue_task/instance-of-a-not-rerunnable-sweep", InvalidState,
         "^" + Msg.not_rerunnable.replace(".", r"\.") + "$")
def _(rig, r):
    j = rig.job(sweep(2, is_rerunnable=False))
    rig.worker()
    rig.complete(code=1)
    return lambda: rig.requeue_task(f"{j}.1.1")


@refusal("requeue_task/finished", InvalidState, r"^Tasks in the Finished state cannot be requeued\.$")
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, _), = rig.complete().items()
    return lambda: rig.requeue_task(uid)


@refusal("requeue_task/dispatching", InvalidState, r"^Tasks in the Dispatching state cannot be requeued\.$")
def _(rig, r):
    rig.job()
    rig.worker()
    (uid, _), = rig.dispatch().items()
    return lambda: rig.requeue_task(uid)


@refusal("requeue_task/configuring", InvalidState, r"^Tasks in the Configuring state cannot be requeued\.$")
def _(rig, r):
    j = rig.job(submit=False)
    return lambda: rig.requeue_task(f"{j}.1")


@refusal("requeue_task/canceling-sweep", InvalidState, r"^Tasks in the Canceling state cannot be requeued\.$")
def _(rig, r):
    j = rig.job(sweep(3))
    rig.worker()
    rig.start(*next(iter(rig.dispatch(want=1).items())))
    assert rig.cancel_task(f"{j}.1")[0] == "Canceling"
    return lambda: rig.requeue_task(f"{j}.1")


@refusal("requeue_task/task-of-a-canceling-job", InvalidState,
         r"^Tasks of a job in the Canceling state cannot be requeued\.$")
def _(rig, r):
    j = rig.job({}, {})
    rig.worker()
    got = rig.run()
    rig.finish(f"{j}.1", got[f"{j}.1"], code=1)        # Failed
    assert rig.cancel_job(j, graceful=True)[0] == "Canceling"   # j.2 still runs
    return lambda: rig.requeue_task(f"{j}.1")


@refusal("requeue_task/task-of-a-configuring-job", InvalidState,
         r"^Tasks of a job in the Configuring state cannot be requeued\.$")
def _(rig, r):
    j = rig.job(submit=False)
    rig.cancel_task(f"{j}.1")
    return lambda: rig.requeue_task(f"{j}.1")


# requeue_job.lua
@refusal("requeue_job/job-not-found", NotFound, r"^job 99 does not exist$")
def _(rig, r):
    return lambda: rig.requeue_job(99)


@refusal("requeue_job/configuring", InvalidState, r"^Jobs in the Configuring state cannot be requeued\.$")
def _(rig, r):
    j = rig.job(submit=False)
    return lambda: rig.requeue_job(j)


@refusal("requeue_job/queued", InvalidState, r"^Jobs in the Queued state cannot be requeued\.$")
def _(rig, r):
    j = rig.job()
    return lambda: rig.requeue_job(j)


@refusal("requeue_job/finished", InvalidState, r"^Jobs in the Finished state cannot be requeued\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.complete()
    return lambda: rig.requeue_job(j)


@refusal("requeue_job/canceling", InvalidState, r"^Jobs in the Canceling state cannot be requeued\.$")
def _(rig, r):
    j = rig.job()
    rig.worker()
    rig.run()
    assert rig.cancel_job(j)[0] == "Canceling"
    return lambda: rig.requeue_job(j)


# lease.lua and lose_worker.lua
@refusal("lease/held-by-another-scheduler", reply=False)
def _(rig, r):
    assert rig.store.take_lease("a", 60)
    return lambda: rig.store.take_lease("b", 5)


@refusal("lose_worker/already-lost-and-holding-nothing", reply=([], []))
def _(rig, r):
    rig.worker()
    rig.lose_worker()
    return lambda: rig.lose_worker()


@pytest.mark.store
def test_lose_worker_names_what_had_started_with_its_reason(rig, r):
    """What Flower is told of a lost worker (scheduler/celery_events.py): the attempts that had
    started there, each with the reason recorded; not one that was only sent (Celery may never
    have seen it).  A second call (it is lost already) names nothing."""
    j = rig.job({}, {"is_rerunnable": False}, {}, {})
    rig.worker()
    got = rig.dispatch(want=4)
    for uid in (f"{j}.1", f"{j}.2", f"{j}.3"):
        rig.start(uid, got[uid])
    assert rig.cancel_task(f"{j}.3", "stop it")[0] == "Canceling"
    cid = {uid: f"hpcq-{uid}-{tok}" for uid, tok in got.items()}
    revokes, ended = rig.lose_worker()
    lost = Msg.worker_lost.format("w1")
    assert sorted(ended) == sorted([(cid[f"{j}.1"], lost), (cid[f"{j}.2"], lost),
                                    (cid[f"{j}.3"], rig.store.task(f"{j}.3")["error"])])
    assert "stop it" in dict(ended)[cid[f"{j}.3"]]
    assert rig.store.task(f"{j}.1")["state"] == "Queued"          # rerun: not Failed in hpcq,
    assert rig.store.task(f"{j}.2")["error"] == lost              # but that attempt did end
    assert rig.store.task(f"{j}.4")["state"] == "Queued" and revokes == []
    assert rig.lose_worker() == ([], [])
    assert_consistent(r)


# the API's own checks, made before it calls a script
@refusal("api/cancel_task-message-too-long", CancelMessageTooLong, "^" + Msg.message_too_long + "$")
def _(rig, r):
    j = rig.job()
    return lambda: api(rig).cancel_task(f"{j}.1", message="m" * 129, wait=False)


@refusal("api/cancel_job-message-too-long", CancelMessageTooLong, "^" + Msg.message_too_long + "$")
def _(rig, r):
    j = rig.job()
    return lambda: api(rig).cancel_job(j, message="m" * 129, wait=False)


@refusal("api/cancel_job-forced-and-graceful", InvalidInput, "both forced and graceful")
def _(rig, r):
    j = rig.job()
    return lambda: api(rig).cancel_job(j, force=True, graceful=True, wait=False)


@refusal("api/submit-queued-job", InvalidState, r"job \d+ is Queued\.$")
def _(rig, r):
    j = rig.job()
    return lambda: api(rig).submit_job(j)


@refusal("api/submit-unknown-dependency", InvalidInput, "which no task of the job is named")
def _(rig, r):
    j = rig.job({"depends_on": ["nope"]}, submit=False)
    return lambda: api(rig).submit_job(j)


@refusal("api/submit-task-runtime-over-job-runtime", InvalidInput, "greater than the job's runtime")
def _(rig, r):
    job = api(rig).create_job(runtime=10)
    job.add_task("true", runtime=20)
    return lambda: api(rig).submit_job(job.id)


# Reachable refusals by enter()'s own re-check of the transition table (HPCQ-BUG, "a script
# skipped its check"): a Queued sweep master whose last live instance is canceled before it
# started cannot end (the table has no Queued -> Finished/Failed), and the refusal comes after
# the script's first writes.  Whether such a step should be refused at all is
# test_found_queued_sweep_cannot_end's business; here: if it is refused, it changes nothing.
@refusal("cancel_task/ILLEGAL-queued-sweep-cannot-end", HpcqError, "cannot go from Queued to",
         may_accept=True)
def _(rig, r):
    rig.job(sweep(1))
    rig.worker()
    (uid, _), = rig.dispatch().items()
    return lambda: rig.cancel_task(uid)


@refusal("cancel_task/ILLEGAL-revoke-queued-sweep-cannot-end", HpcqError, "cannot go from Queued to",
         may_accept=True)
def _(rig, r):
    rig.job(sweep(1))
    rig.worker()
    (uid, tok), = rig.dispatch().items()
    return lambda: rig.cancel_task(uid, mode="revoke", token=tok)


@refusal("purge_job/STATE-queued-job", InvalidState, "Only Finished, Failed or Canceled jobs can be purged")
def _(rig, r):
    j = rig.job({})
    return lambda: rig.store.purge_job(j, 1000)


@refusal("purge_job/NOTFOUND", NotFound, "does not exist")
def _(rig, r):
    return lambda: rig.store.purge_job(999, 1000)


@refusal("purge_job/young", None, None, reply=("young", 0))
def _(rig, r):
    j = rig.job({})
    rig.store.cancel_job(j, "q", "r", "e")
    return lambda: rig.store.purge_job(j, 1000, ended_before=0.0)


@refusal("requeue_task/NOTFOUND-purged-job", NotFound, r"^job \d+ does not exist$")
def _(rig, r):
    j = rig.job({}, {})
    rig.store.cancel_job(j, "q", "r", "e")
    rig.store.purge_job(j, 1)      # the job record is gone at once; task 1's record is not yet
    return lambda: rig.store.requeue_task(f"{j}.1", "m")


@pytest.mark.store
@pytest.mark.parametrize("name", list(REFUSALS))
def test_refusal_changes_nothing(name, rig, r, raw):
    setup, raises, match, reply, may_accept = REFUSALS[name]
    op = setup(rig, r)
    before = dump_keyspace(raw)
    t0 = time.monotonic()
    if raises is not None:
        try:
            got = op()
        except raises as exc:
            assert re.search(match, str(exc)), f"refused with {type(exc).__name__}: {exc}"
        else:
            assert may_accept, f"not refused: {got!r}"
            return                       # accepted (see the note on the ILLEGAL cases)
    else:
        got = op()
        assert reply(got) if callable(reply) else got == reply, f"answered {got!r}"
    after = dump_keyspace(raw)
    assert_unchanged(before, after, (time.monotonic() - t0) * 1000)


@pytest.mark.unit
def test_every_script_has_refusal_cases():
    """Each script that can refuse has cases above (heartbeat, create_job, leave never refuse): a
    new script needs its refusals listed here."""
    from scheduler.core.scripts import SCRIPTS
    covered = {name.split("/")[0] for name in REFUSALS}
    assert not set(SCRIPTS) - covered - {"heartbeat", "create_job", "leave"}


# --- the randomized sequence -----------------------------------------------------------------

@pytest.mark.store
def test_random_sequence(store, r):
    seq = Sequence(store, r, SEED)
    t0 = time.monotonic()
    seq.run(STEPS)
    took = time.monotonic() - t0
    print(f"seed {SEED}: {STEPS} steps in {took:.1f} s; {dict(seq.stats)}")
    # the mix reached every kind of step, and refusals among them
    assert all(seq.stats[name] > 0 for name, _ in Sequence.OPS), seq.stats
    assert seq.stats["refused"] > STEPS // 20


# --- what the sequence found, reduced --------------------------------------------------------

def assert_consistent(r):
    bad = check_invariants(read_all(r))
    assert not bad, "\n".join(bad)


@pytest.mark.store
def test_found_queued_sweep_cannot_end(rig, r):
    """A sweep whose only dispatched instance is canceled before it starts: the master is still
    Queued (it becomes Running when an instance starts), every instance has ended, and
    master_refresh enters Finished from Queued, which TASK_TRANSITIONS does not allow: enter()
    raises HPCQ-BUG after the cancel's first writes (the instance Canceled, out of its worker's
    set, counted, its event), which Redis keeps: the sweep stays Queued for ever.  The same with
    a revoke of the attempt, or with Failed when another instance had failed."""
    rig.job(sweep(1))
    rig.worker()
    (uid, _), = rig.dispatch().items()
    rig.cancel_task(uid)
    assert_consistent(r)


@pytest.mark.store
def test_found_requeue_of_a_job_canceled_while_configuring(rig, r, raw):
    """cancel_job of a Configuring job ends it Canceled with its tasks Canceled; they were never
    submitted, so they have no queue score.  requeue_job (Canceled is requeueable) reopens the
    job, moves the task to Queued and then fails in EFFECT.place -> enqueue (ZADD with a nil
    score: a Lua error) after those writes.  requeue_task of such a task fails the same way."""
    j = rig.job(submit=False)
    rig.cancel_job(j)
    before = dump_keyspace(raw)
    try:
        rig.requeue_job(j)
    except HpcqError as exc:
        assert type(exc) is not HpcqError, f"the script failed: {exc}"
        assert_unchanged(before, dump_keyspace(raw), 1000)
    assert_consistent(r)


@pytest.mark.store
def test_found_requeue_pending_survives_a_cancel(rig, r):
    """requeue_task of a Running task marks it Canceling with cancel_requeue=1; a job cancel
    after that keeps the mark, so when the worker reports the stop the task is queued again
    inside the Canceling job (and would be dispatched)."""
    j = rig.job()
    rig.worker()
    (uid, tok), = rig.run().items()
    assert rig.requeue_task(uid)[0] == "Canceling"
    assert rig.cancel_job(j)[0] == "Canceling"
    rig.finish(uid, tok, code=-15)
    assert_consistent(r)
    assert rig.store.job(j)["state"] == "Canceled"


@pytest.mark.store
def test_found_graceful_job_cancel_reruns_a_lost_task(rig, r):
    """A graceful job cancel lets running tasks finish and starts nothing new; but a running
    rerunnable task whose worker is lost is queued again inside the Canceling job (end_attempt
    reruns it without looking at the job) and would be dispatched."""
    j = rig.job()
    rig.worker()
    rig.run()
    assert rig.cancel_job(j, graceful=True)[0] == "Canceling"
    rig.lose_worker()
    assert_consistent(r)


@pytest.mark.store
def test_found_sweep_cancel_leaves_it_waiting(rig, r):
    """A sweep waiting for its dependencies (Queued, in the job's waiting set) is canceled:
    cancel_master moves it to Canceling, then Canceled, and EFFECT.unplace acts only on a move
    from a pending state, so it stays in the waiting set (a plain task goes Queued -> Canceled and
    is unplaced).  A requeue of the sweep then also puts it in the queue (requeue_master does not
    look at nwait): its instances run before the task it depends on has ended."""
    j = rig.job({"name": "a"}, sweep(2, depends_on=["a"]))
    rig.cancel_task(f"{j}.2")
    assert_consistent(r)


@pytest.mark.store
def test_found_instance_requeue_skips_the_dependencies(rig, r):
    """An instance of a sweep that waits for its dependencies can be canceled on its own and
    requeued; EFFECT.place then puts the master in the queue without looking at its nwait, and
    dispatch hands the instance out before the task the sweep depends on has ended."""
    j = rig.job({"name": "a"}, sweep(2, depends_on=["a"]))
    rig.cancel_task(f"{j}.2.1")
    rig.requeue_task(f"{j}.2.1")
    assert_consistent(r)
    rig.worker()
    assert f"{j}.2.1" not in rig.dispatch(), "dispatched before the task it depends on ended"


@pytest.mark.store
def test_found_sweep_canceled_before_submit_never_ends(rig, r):
    """Instances canceled one by one while the job is Configuring: submit moves the sweep to
    Queued without looking at them, so a sweep whose every instance was canceled stays Queued
    (and its job Queued) for ever: nothing is left to dispatch and nothing ever refreshes it."""
    j = rig.job(sweep(1), submit=False)
    rig.cancel_task(f"{j}.1.1")
    rig.store.submit(j, band("Normal"), [[]])
    rig.worker()
    rig.dispatch()
    assert_consistent(r)


@pytest.mark.store
def test_found_requeue_of_an_instance_of_a_canceling_sweep(rig, r):
    """requeue_task refuses a Canceling sweep master but not an instance of one: the instance
    goes back to redo and the master into the queue while it is Canceling, and dispatch hands the
    instance out again."""
    j = rig.job(sweep(3))
    rig.worker()
    got = rig.dispatch(want=2)
    rig.start(f"{j}.1.1", got[f"{j}.1.1"])           # 1 Running, 2 Dispatching
    assert rig.cancel_task(f"{j}.1")[0] == "Canceling"  # 1 Canceling, 2 Canceled, 3 cut off
    try:
        rig.requeue_task(f"{j}.1.2")
    except InvalidState:
        pass                        # refused, as the requeue of the sweep itself is
    assert_consistent(r)


@pytest.mark.store
def test_found_deferred_requeue_in_a_failed_job(rig, r):
    """fail_on_task_failure: the first failure fails the job and stops the other running task
    (Canceling).  A requeue of that task is accepted (the job is Failed, not Canceling) and
    deferred; when the stop is recorded end_attempt queues the task again but does not reopen
    the job (requeue_task does, for a Failed or Canceled task): a Queued task in a Failed job,
    dispatched and run while the job stays Failed."""
    j = rig.job({}, {}, fail_on_task_failure=True)
    rig.worker()
    got = rig.run()
    rig.finish(f"{j}.1", got[f"{j}.1"], code=1)
    assert rig.store.job(j)["state"] == "Failed"
    assert rig.requeue_task(f"{j}.2")[0] == "Canceling"
    rig.finish(f"{j}.2", got[f"{j}.2"], code=-15)
    assert_consistent(r)


@pytest.mark.store
def test_found_requeue_of_a_sweep_whose_tail_was_canceled_one_by_one(rig, r, raw):
    """A sweep canceled while its not yet dispatched instances had all been canceled one by one:
    cancel_master still sets ``cut`` (total > next) with nothing to count (rest = 0).
    requeue_master then runs HINCRBY i:Canceled -rest = -0, which Lua passes as "-0" and Redis
    refuses as not an integer: the script fails after it rewrote ``next`` and dropped ``cut``."""
    j = rig.job(sweep(2))
    rig.worker()
    (uid, tok), = rig.dispatch(want=1).items()
    rig.start(uid, tok)
    rig.cancel_task(f"{j}.1.2")                     # canceled before its turn (pre = 1)
    assert rig.cancel_task(f"{j}.1")[0] == "Canceling"
    rig.finish(uid, tok, code=-15)                   # the sweep is Canceled
    before = dump_keyspace(raw)
    try:
        rig.requeue_task(f"{j}.1")
    except HpcqError as exc:
        assert type(exc) is not HpcqError, f"the script failed: {exc}"
        assert_unchanged(before, dump_keyspace(raw), 1000)
    assert_consistent(r)


@pytest.mark.store
def test_found_sweep_canceled_while_configuring_keeps_its_instances_queued(rig, r):
    """A sweep canceled while its job is Configuring goes Canceled without cutting its
    instances off (cancel_master sets ``cut`` only from Queued or Running): by implicit_state
    every instance of it is then Queued for ever (what ``task view J.T.I`` shows), a cancel of
    one is accepted and a requeue of one answers Queued; nothing will ever run them."""
    j = rig.job(sweep(3), submit=False)
    rig.cancel_task(f"{j}.1")
    assert_consistent(r)


@pytest.mark.store
def test_finish_records_a_pid_only_for_the_current_attempt(rig, r):
    """A command that ended in its first moments has its pid and spool recorded by the finish
    step, token-checked: a stale attempt's finish writes nothing, and a requeue clears the pid."""
    rig.job({}, {})
    rig.worker()
    (a, tok_a), (b, tok_b) = sorted(rig.run().items())
    state, _, _ = rig.store.finish(a, tok_a, "exit", 0, pid=4321, spool="/spool/a.out")
    assert state == "Finished"
    assert r.hmget(keys.task(a), "pid", "spool") == ["4321", "/spool/a.out"]
    assert rig.store.finish(a, tok_a, "exit", 0, pid=99, spool="/x")[0] == "Finished"  # stale
    assert r.hmget(keys.task(a), "pid", "spool") == ["4321", "/spool/a.out"]
    # a lost attempt of a rerunnable task goes back to the queue without the pid it gave
    assert rig.store.finish(b, tok_b, "lost", pid=777, spool="/spool/b.out")[0] == "Queued"
    assert r.hget(keys.task(b), "pid") is None
    assert rig.store.finish(b, "0", "exit", 0, pid=5, spool="/y")[0] == "Queued"      # stale
    assert r.hget(keys.task(b), "pid") is None


@pytest.mark.store
def test_cancel_nudges_the_dispatcher_only_when_it_gives_it_something(rig, r):
    """A queued task canceled frees no slot and queues nothing: no scheduler pass for it.  One
    whose dependent it releases into the queue, or a Dispatching one (its slot), does nudge."""
    j = rig.job({"name": "a"}, {"name": "b"}, {"name": "c", "depends_on": ["b"]}, {"name": "d"})
    r.delete(keys.WAKEUP)
    rig.cancel_task(f"{j}.1")
    assert r.llen(keys.WAKEUP) == 0
    rig.cancel_task(f"{j}.2")              # c waited on b: now it is in the queue
    assert r.lrange(keys.WAKEUP, 0, -1) == ["*"]
    rig.worker()
    got = rig.dispatch(want=1)
    r.delete(keys.WAKEUP)
    rig.cancel_task(next(iter(got)))       # Dispatching: its slot comes free
    assert r.lrange(keys.WAKEUP, 0, -1) == ["*"]


@pytest.mark.store
def test_dispatch_reads_what_a_worker_holds_from_its_sums(rig, r):
    """dispatch.lua takes what a worker's tasks hold from the sums kept beside its task set
    (u_cores, u_memory, worker_jobs, worker_special), not by reading every task on it; the sums
    match the set after every step (check_invariants), a heartbeat recounts them, and a lost
    worker leaves none.  (The placements are those a read of every task gave: compared on 4 x
    60 random steps with cores, memory, GPUs and exclusive tasks when this was built.)"""
    def ok():
        bad = check_invariants(read_all(r))
        assert not bad, bad

    res = {"cores": 8, "memory": 4000, "gpus": [0, 1]}
    beat = lambda held: rig.store.heartbeat("w1", 8, keys.worker_queue("w1"), {"pid": 1}, held,
                                            1000, RETRY_CAP, resources=res)
    beat([])
    j = rig.job({"cores": 4, "memory": 3000}, {"cores": 2, "gpus": 2}, {"cores": 4},
                {"memory": 2000}, {"gpus": 1}, {"exclusive": True}, {})
    got = rig.dispatch()
    ok()
    # 4 cores + 3000 MB, then 2 cores + both GPUs; 4 more cores do not fit (2 left) and reserve
    # the worker, so nothing after them fits beside
    assert sorted(got) == [f"{j}.1", f"{j}.2"]
    assert r.hmget(keys.worker("w1"), "u_cores", "u_memory") == ["6", "3000"]
    assert r.smembers(keys.key("worker_special", "w1")) == {f"{j}.2"}
    assert r.hgetall(keys.key("worker_jobs", "w1")) == {str(j): "2"}
    for uid, tok in got.items():
        rig.start(uid, tok)
    rig.finish(f"{j}.2", got[f"{j}.2"])              # its 2 cores and GPUs come free
    ok()
    more = rig.dispatch()
    assert sorted(more) == [f"{j}.3"]                # 4 cores now fit; 2000 MB do not (1000 left)
    ok()
    r.hset(keys.worker("w1"), "u_cores", 99)         # a drift: the next heartbeat recounts
    beat([(f"{j}.1", got[f"{j}.1"]), (f"{j}.3", more[f"{j}.3"])])
    assert r.hget(keys.worker("w1"), "u_cores") == "8"
    ok()
    rig.store.lose_worker("w1", "lost", "never started", RETRY_CAP)
    ok()
    assert r.hget(keys.worker("w1"), "u_cores") == "0"
    assert not r.exists(keys.key("worker_jobs", "w1"), keys.key("worker_special", "w1"))


@pytest.mark.store
def test_found_a_gpu_task_waiting_for_busy_gpus_broke_dispatch(rig, r):
    """The first task that fits nowhere reserves the worker nearest to fitting it; one asking
    for GPUs that are all busy took them from an empty list, and the script failed ("wrong
    number of arguments to 'insert'"): no dispatch at all while such a task waited."""
    rig.store.heartbeat("w1", 4, keys.worker_queue("w1"), {"pid": 1}, [], 1000, RETRY_CAP,
                        resources={"cores": 4, "gpus": [0, 1]})
    j = rig.job({"gpus": 2}, {"gpus": 2}, {})
    # the second waits (reserving the worker); the plain task fits beside it
    assert sorted(rig.dispatch()) == [f"{j}.1", f"{j}.3"]
    assert rig.dispatch() == {}                      # still waiting, not an error
    assert_consistent(r)
