"""Canceling tasks (issue 3, "Rules for a task"): HPC Pack's CancelTask / CancelTask_2 /
CancelTask_3 on a real cluster, every row of the table, checked with real processes.

One module-scoped cluster (scheduler + a worker with two slots, grace period 3 s); the
Dispatching case gets a cluster of its own in another Redis database (see there why)."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.fixtures_cancel import (GRACE, QUEUED_MSG, RUNNING_MSG, TASK_REFUSED, TOO_LONG, Box, box,  # noqa: F401
                             boxes, cl, job_hash, state_of, stays, submit, task_hash, wait_file,
                             wait_job, wait_state)
from tests.support import running_cluster, wait_until, with_db
from tests.support import hpcq
from scheduler.errors import InvalidId, InvalidInput, InvalidState, NotFound

pytestmark = pytest.mark.cluster


def running(cl, box: Box, command: str, **fields):
    """Submit one task running ``command`` and wait until its command has started."""
    job = submit(cl.api, (command, fields))
    tid = f"{job.id}.1"
    wait_file(box, "runs")
    wait_state(cl.api, tid, "Running")
    wait_until(lambda: cl.api.get_task(tid).pid, 10, f"task {tid}'s pid")
    return job, tid


def fill_slots(cl, box: Box, n: int = 2):
    """A job of ``n`` holding tasks occupying the worker's slots; returns it once all run."""
    job = submit(cl.api, *[box.hold() for _ in range(n)])
    for t in range(1, n + 1):
        wait_state(cl.api, f"{job.id}.{t}", "Running")
    return job


# --- not yet running: Canceled at once, the command never starts ------------------------------

def test_cancel_configuring_task(cl, box):
    job = cl.api.create_job(name="configuring")
    job.add_task(box.quick())
    job.add_task(box.quick())
    t = cl.api.cancel_task(f"{job.id}.1", message="not needed")
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("not needed")
    t2 = job.cancel_task(2)                      # CancelTask without a message: ""
    assert t2.state.value == "Canceled"
    assert t2.error_message == QUEUED_MSG.format("")
    assert box.runs() == 0


def test_job_with_a_task_canceled_while_configuring_can_be_submitted(cl, boxes):
    """A task canceled while its job is Configuring stays Canceled.  Submitting the job then
    either works (the canceled task never runs, the others do) or is refused and changes
    nothing; it must not leave the job half-submitted."""
    gone, kept = boxes("gone"), boxes("kept")
    job = cl.api.create_job(name="configuring-cancel")
    job.add_task(gone.quick())
    job.add_task(kept.quick())
    cl.api.cancel_task(f"{job.id}.1", message="drop")
    before = job_hash(cl.r, job.id), task_hash(cl.r, f"{job.id}.1"), task_hash(cl.r, f"{job.id}.2")
    try:
        job.submit()
    except (InvalidState, InvalidInput) as exc:
        after = job_hash(cl.r, job.id), task_hash(cl.r, f"{job.id}.1"), task_hash(cl.r, f"{job.id}.2")
        assert after == before, f"the refused submit ({exc}) changed the job: {after[0]}"
        return
    assert wait_state(cl.api, f"{job.id}.2", ["Finished", "Failed"]).state.value == "Finished"
    t1 = cl.api.get_task(f"{job.id}.1")
    assert t1.state.value == "Canceled"
    assert t1.error_message == QUEUED_MSG.format("drop")
    assert stays(lambda: gone.runs() == 0, 0.5)


def test_cancel_queued_task_never_starts(cl, boxes):
    blockers = fill_slots(cl, boxes("blocker"))
    target = boxes("target")
    job = submit(cl.api, target.quick())
    tid = f"{job.id}.1"
    # both slots are taken: the task waits in hpcq's queue, not in Celery
    assert stays(lambda: state_of(cl.api, tid) == "Queued", 0.5)
    assert cl.r.zscore("hpcq:queue", tid) is not None
    assert "celery_id" not in task_hash(cl.r, tid)

    t = cl.api.cancel_task(tid, message="queued cancel")
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("queued cancel")
    assert t.end_time is not None
    assert cl.r.zscore("hpcq:queue", tid) is None

    boxes("blocker").open_gate()
    wait_job(cl.api, blockers.id, "Finished")
    # slots are free again: the canceled task must still never start
    assert stays(lambda: target.runs() == 0 and state_of(cl.api, tid) == "Canceled", 1.0)


def test_cancel_task_waiting_on_dependency_never_starts(cl, boxes):
    first, second = boxes("first"), boxes("second")
    job = cl.api.create_job(name="deps")
    job.add_task(first.hold(), name="first")
    job.add_task(second.quick(), name="second", depends_on=["first"])
    job.submit()
    wait_state(cl.api, f"{job.id}.1", "Running")
    assert state_of(cl.api, f"{job.id}.2") == "Queued"

    t = job.cancel_task(2, message="no longer wanted")
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("no longer wanted")

    first.open_gate()
    wait_state(cl.api, f"{job.id}.1", "Finished")
    assert stays(lambda: second.runs() == 0 and state_of(cl.api, f"{job.id}.2") == "Canceled", 1.0)


@pytest.fixture
def bare(redis_server):
    """A cluster with a scheduler and no worker, in a Redis database of its own: no live worker
    hears the revoke a Dispatching cancel broadcasts, so nothing but hpcq's own start check
    (and no Celery mingle of revoked ids) can stop the command."""
    url = with_db(redis_server, 3)
    import redis as _redis
    _redis.Redis.from_url(url).flushdb()
    with running_cluster(url, workers=(), flush=False,
                         env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": str(GRACE)}) as c:
        c.api = c.scheduler_api()
        yield c


def test_cancel_dispatching_task_never_starts(bare, box):
    ghost = "ghost@hpcq-cancel"
    queue = f"hpcq.w.{ghost}"
    # a worker registered in Redis with a free slot but no process behind it (yet)
    bare.r.hset(f"hpcq:worker:{ghost}", mapping={"slots": 1, "queue": queue})
    bare.r.zadd("hpcq:workers", {ghost: time.time()})

    job = submit(bare.api, box.quick())
    tid = f"{job.id}.1"
    t = wait_state(bare.api, tid, "Dispatching")
    assert t.node == ghost
    cid = t.celery_id
    assert cid and cid.startswith(f"hpcq-{tid}-")
    # the attempt really was sent: its Celery message waits in the ghost's queue
    wait_until(lambda: bare.r.llen(queue) == 1, 10, "the attempt's Celery message")

    t = bare.api.cancel_task(tid, message="before it started")
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("before it started")
    assert tid not in bare.r.smembers(f"hpcq:worker:{ghost}:tasks")
    before = task_hash(bare.r, tid)

    # now the worker comes up and receives the message of the canceled attempt
    bare.start_worker(ghost, concurrency=1)
    wait_until(lambda: bare.r.llen(queue) == 0, 30, "the worker to take the message")
    wait_until(lambda: f"hpcq.run[{cid}] ignored" in bare.log(ghost), 30,
               "the worker to drop the canceled attempt")
    assert stays(lambda: box.runs() == 0, 1.0), "the command of a canceled task ran"
    after = task_hash(bare.r, tid)
    assert after == before
    assert "start_time" not in after and "pid" not in after


# --- Running: SIGTERM, grace, SIGKILL, then Failed -----------------------------------------------

def test_cancel_running_task_that_exits_on_term(cl, box):
    job, tid = running(cl, box, box.hold(on_term="exit"))
    t0 = time.time()
    t = cl.api.cancel_task(tid, message="stop it")
    elapsed = time.time() - t0
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("stop it")
    assert t.exit_code == 5                      # the script's own exit status, from its trap
    assert t.end_time is not None
    assert box.has("term"), "the command never received SIGTERM"
    assert t0 - 0.5 <= box.time_of("term") <= t0 + 2.0
    assert elapsed < GRACE - 1, f"a command that exits on SIGTERM took {elapsed:.2f}s to stop"
    assert box.alive() == []


@pytest.mark.parametrize("grace", [None, 1.0], ids=["setting", "per-cancel"])
def test_cancel_running_task_that_ignores_term_is_killed_at_grace(cl, box, grace):
    job, tid = running(cl, box, box.hold(on_term="ignore"))
    t0 = time.time()
    t = cl.api.cancel_task(tid, message="ignored", grace=grace)
    elapsed = time.time() - t0
    want = GRACE if grace is None else grace
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("ignored")
    assert box.has("term"), "SIGTERM was not sent first"
    assert want - 0.5 <= elapsed < want + 5, f"killed after {elapsed:.2f}s, grace {want}"
    assert t.exit_code == -9                     # SIGKILL
    assert box.alive() == []


def test_forced_cancel_kills_at_once(cl, box):
    job, tid = running(cl, box, box.hold(on_term="exit"))
    t0 = time.time()
    t = job.cancel_task(1, message="now", force=True)
    elapsed = time.time() - t0
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("now")
    assert t.exit_code == -9
    assert not box.has("term"), "a forced cancel sent SIGTERM first"
    assert elapsed < 2.0
    assert box.alive() == []


def test_cancel_kills_whole_tree_including_setsid_children(cl, box):
    job, tid = running(cl, box, box.tree())
    for name in ("ready-child", "ready-grandchild", "ready-setsid", "ready-daemon"):
        wait_file(box, name)
    # psutil.Process remembers each process's start time, so a reused pid is not mistaken
    # for a survivor
    tree = [psutil.Process(int(box.f(n).read_text()))
            for n in ("ready-child", "ready-grandchild", "ready-setsid", "ready-daemon")]
    assert len(box.alive()) >= 5                # the script + four python processes (+ shells)
    t0 = time.time()
    t = cl.api.cancel_task(tid, message="tree", grace=1.0)
    elapsed = time.time() - t0
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("tree")
    # the moment the task is Failed, nothing of it is alive
    left = box.alive()
    assert left == [], f"processes of a Failed task survive: {[p.pid for p in left]}"
    for p in tree:
        try:
            assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, f"pid {p.pid} survives"
        except psutil.NoSuchProcess:
            pass
    assert box.has("term")
    # the setsid child ignores SIGTERM: only the SIGKILL at the end of the grace stops it
    assert 0.5 <= elapsed < 6


def test_cancel_racing_the_task_own_exit(cl, box):
    """``sleep 0.2`` canceled around the moment it exits by itself (aimed from its recorded
    start time): whichever wins, the task has exactly one end state, Finished (and the cancel is
    refused) or Failed with the cancel message, and the job's counts agree."""
    outcomes = []
    for k, delta in enumerate([-0.05, -0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03, 0.05, 0.08]):
        job = submit(cl.api, f"sleep 0.2 # race {k}")
        tid = f"{job.id}.1"
        start = wait_until(lambda: task_hash(cl.r, tid).get("start_time"), 10, f"{tid} to start")
        time.sleep(max(0.0, float(start) + 0.2 + delta - time.time()))
        try:
            t = cl.api.cancel_task(tid, message="race")
        except InvalidState as exc:
            assert str(exc) == TASK_REFUSED.format("Finished")
            t = cl.api.get_task(tid)
            assert t.state.value == "Finished"
            assert t.error_message == ""
            assert t.exit_code == 0
        else:
            assert t.state.value == "Failed"
            assert t.error_message == RUNNING_MSG.format("race")
        outcomes.append((delta, t.state.value, t.exit_code))
        # exactly one end state, and it stays; the job's counts agree
        final = t.state.value
        assert stays(lambda: state_of(cl.api, tid) == final, 0.3)
        counts = cl.api.get_job(job.id).counts
        assert counts == {final: 1}, counts
    print("race outcomes:", outcomes)


def test_cancel_right_after_submit_never_runs_a_canceled_task(cl, boxes):
    """Cancels racing the dispatcher and the worker's start (Queued, Dispatching or just
    Running): a task that ends Canceled never ran its command; one that ran ends Failed (or
    Finished, and the cancel was refused)."""
    results = []
    for k in range(16):
        b = boxes(f"r{k}")
        job = submit(cl.api, b.quick())
        if k % 4:
            time.sleep(0.005 * (k % 4))
        try:
            t = cl.api.cancel_task(f"{job.id}.1", message="quick")
        except InvalidState as exc:
            assert str(exc) == TASK_REFUSED.format("Finished")
            t = cl.api.get_task(f"{job.id}.1")
        results.append((b, f"{job.id}.1", t.state.value))
    # an ended task stays as it ended (a cancel that lost the race changed nothing)
    assert stays(lambda: all(state_of(cl.api, tid) == state for _, tid, state in results), 0.5), \
        [(tid, state, state_of(cl.api, tid)) for _, tid, state in results]
    for b, tid, state in results:
        assert state_of(cl.api, tid) == state
        if state == "Canceled":
            assert b.runs() == 0, f"{tid} ran although it was Canceled"
            assert cl.api.get_task(tid).error_message == QUEUED_MSG.format("quick")
        elif state == "Failed":
            assert cl.api.get_task(tid).error_message == RUNNING_MSG.format("quick")
        else:
            assert state == "Finished" and b.runs() == 1
    print("states:", [s for _, _, s in results])


def test_cancel_does_not_trigger_fail_on_task_failure(cl, boxes):
    """A task stopped by a cancel ends Failed, but that is not the task failure that fails a
    job with fail_on_task_failure: its other tasks go on."""
    a, b = boxes("a"), boxes("b")
    job = cl.api.create_job(name="fotf", fail_on_task_failure=True)
    job.add_task(a.hold())
    job.add_task(b.hold())
    job.submit()
    wait_file(a, "started")
    wait_file(b, "started")
    t = job.cancel_task(1, message="just this one")
    assert t.state.value == "Failed"
    assert stays(lambda: state_of(cl.api, f"{job.id}.2") == "Running", 0.5)
    assert cl.api.get_job(job.id).state.value == "Running"
    assert not b.has("term")
    b.open_gate()
    assert wait_state(cl.api, f"{job.id}.2", ["Finished", "Failed", "Canceled"]).state.value == "Finished"


def test_second_cancel_accepted_and_force_escalates_during_grace(cl, box):
    job, tid = running(cl, box, box.hold(on_term="ignore"))
    t = cl.api.cancel_task(tid, message="first", grace=30, wait=False)
    assert t.state.value == "Canceling"
    wait_file(box, "term")
    t = cl.api.cancel_task(tid, message="second", wait=False)   # accepted again
    assert t.state.value == "Canceling"
    assert stays(lambda: state_of(cl.api, tid) == "Canceling", 0.5)
    assert box.alive(), "the command stopped before its grace period ran out"
    t0 = time.time()
    t = cl.api.cancel_task(tid, message="third", force=True)
    elapsed = time.time() - t0
    assert t.state.value == "Failed"
    assert elapsed < 3.0, f"force during a 30 s grace took {elapsed:.2f}s"
    assert t.exit_code == -9
    assert t.error_message.startswith(RUNNING_MSG.format(""))
    assert box.alive() == []


def test_cancel_recorded_without_broadcast_is_still_honored(cl, box):
    """A worker that missed the revoke broadcast still stops the task: the running attempt
    looks for a cancel in Redis at least once a second.  The cancel is recorded with the very
    step the API uses, and no revoke is published."""
    job, tid = running(cl, box, box.hold(on_term="exit"))
    t0 = time.time()
    state, revokes = cl.api.store.cancel_task(tid, QUEUED_MSG.format("quiet"),
                                              RUNNING_MSG.format("quiet"))
    assert state == "Canceling" and revokes      # (a revoke the API would have published)
    wait_file(box, "term", timeout=10)
    assert box.time_of("term") - t0 < 1.5, "the cancel was not noticed within a second"
    t = wait_state(cl.api, tid, ["Failed", "Finished"], timeout=10)
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("quiet")
    assert t.exit_code == 5
    assert box.alive() == []


def test_process_exiting_by_itself_while_canceling_still_fails(cl, box):
    job, tid = running(cl, box, box.hold(on_term="ignore"))
    cl.api.cancel_task(tid, message="cancel", grace=30, wait=False)
    wait_file(box, "term")
    box.open_gate()                              # the command now exits 0 on its own
    t = wait_state(cl.api, tid, ["Failed", "Finished"], timeout=10)
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("cancel")
    assert t.exit_code == 0


# --- refusals change nothing --------------------------------------------------------------------

@pytest.mark.parametrize("end", ["Finished", "Failed", "Canceled"])
def test_cancel_of_ended_task_is_refused(cl, box, end):
    if end == "Canceled":
        job = cl.api.create_job()
        job.add_task(box.quick())
        cl.api.cancel_task(f"{job.id}.1")
    else:
        job = submit(cl.api, box.quick(0 if end == "Finished" else 7))
        wait_state(cl.api, f"{job.id}.1", end)
        wait_job(cl.api, job.id, ["Finished", "Failed"])
    tid = f"{job.id}.1"
    before = task_hash(cl.r, tid), job_hash(cl.r, job.id)
    for kw in ({}, {"message": "again"}, {"force": True}):
        with pytest.raises(InvalidState) as exc:
            cl.api.cancel_task(tid, **kw)
        assert str(exc.value) == TASK_REFUSED.format(end)
    assert (task_hash(cl.r, tid), job_hash(cl.r, job.id)) == before


def test_message_over_128_characters_is_refused(cl, box):
    # a task that is not started yet ...
    job = cl.api.create_job()
    job.add_task(box.quick())
    before = task_hash(cl.r, f"{job.id}.1")
    with pytest.raises(InvalidInput) as exc:
        cl.api.cancel_task(f"{job.id}.1", message="x" * 129)
    assert str(exc.value) == TOO_LONG
    assert task_hash(cl.r, f"{job.id}.1") == before

    # ... and a running one: nothing is signaled, nothing changes
    job, tid = running(cl, box, box.hold(on_term="exit"))
    before = task_hash(cl.r, tid)
    with pytest.raises(InvalidInput) as exc:
        job.cancel_task(1, message="y" * 129, force=True)
    assert str(exc.value) == TOO_LONG
    assert stays(lambda: state_of(cl.api, tid) == "Running", 0.5)
    assert task_hash(cl.r, tid) == before
    assert not box.has("term")
    # exactly 128 is fine
    t = cl.api.cancel_task(tid, message="z" * 128)
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("z" * 128)


def test_bad_task_ids(cl, box):
    job = cl.api.create_job()
    job.add_task(box.quick())
    sweep = cl.api.create_job()
    sweep.add_task(box.quick(), sweep=(1, 3, 1))
    for bad in ["abc", "1", "1.", ".1", "0.1", "1.0", "1.1.0", "1.2.3.4", "-1.2", "1.x", ""]:
        with pytest.raises(InvalidId):
            cl.api.cancel_task(bad)
    for missing in ["999999.1", f"{job.id}.2", f"{job.id}.1.1", f"{sweep.id}.1.4", f"{sweep.id}.2"]:
        with pytest.raises(NotFound):
            cl.api.cancel_task(missing)
    with pytest.raises(NotFound):                # a task of another job, through ISchedulerJob
        job.cancel_task(f"{sweep.id}.1")
    assert state_of(cl.api, f"{job.id}.1") == "Configuring"


# --- parametric sweeps ----------------------------------------------------------------------------

def sweep_script(box: Box, quick_upto: int) -> str:
    """Instance with sweep value v records a run in runs-v; v <= quick_upto exits 0 at once,
    the others hold until the gate (exit 5 on SIGTERM)."""
    return box.script(f"""trap 'date +%s.%N >> "$D/term-$HPCQ_SWEEP_VALUE"; exit 5' TERM
echo run >> "$D/runs-$HPCQ_SWEEP_VALUE"
if [ "$HPCQ_SWEEP_VALUE" -le {quick_upto} ]; then exit 0; fi
while [ ! -f "$D/gate" ]; do sleep 0.05; done""")


def test_cancel_sweep_master(cl, box):
    job = cl.api.create_job(name="sweep")
    job.add_task(sweep_script(box, quick_upto=2), sweep=(1, 10, 1))
    job.submit()
    m = f"{job.id}.1"
    for i in (1, 2):
        wait_state(cl.api, f"{m}.{i}", "Finished")
    for i in (3, 4):
        wait_state(cl.api, f"{m}.{i}", "Running")
        wait_file(box, f"runs-{i}")
    assert cl.api.store.materialized(m) == 4    # 5..10 never dispatched: no free slot

    t = cl.api.cancel_task(m, message="sweep stop")
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("sweep stop")
    for i in (1, 2):
        assert state_of(cl.api, f"{m}.{i}") == "Finished"
    for i in (3, 4):
        ti = cl.api.get_task(f"{m}.{i}")
        assert ti.state.value == "Failed"
        assert ti.error_message == RUNNING_MSG.format("sweep stop")
        assert box.has(f"term-{i}")
    for i in range(5, 11):
        ti = cl.api.get_task(f"{m}.{i}")
        assert ti.state.value == "Canceled", i
        assert ti.error_message == QUEUED_MSG.format("sweep stop")
    assert cl.api.get_task(m).instance_counts == {"Finished": 2, "Failed": 2, "Canceled": 6}
    assert box.alive() == []
    # none of the instances that had not started ever starts
    assert stays(lambda: not any(box.has(f"runs-{i}") for i in range(5, 11)), 1.0)
    assert cl.api.get_task(m).state.value == "Canceled"
    with pytest.raises(InvalidState) as exc:
        cl.api.cancel_task(m)
    assert str(exc.value) == TASK_REFUSED.format("Canceled")
    with pytest.raises(InvalidState) as exc:
        cl.api.cancel_task(f"{m}.7")
    assert str(exc.value) == TASK_REFUSED.format("Canceled")


def test_force_on_a_canceling_sweep_master_escalates(cl, box):
    job = cl.api.create_job(name="sweep-escalate")
    job.add_task(box.script("""trap 'date +%s.%N >> "$D/term-$HPCQ_SWEEP_VALUE"' TERM
echo run >> "$D/runs-$HPCQ_SWEEP_VALUE"
while [ ! -f "$D/gate" ]; do sleep 0.05; done"""), sweep=(1, 5, 1))
    job.submit()
    m = f"{job.id}.1"
    for i in (1, 2):
        wait_state(cl.api, f"{m}.{i}", "Running")
        wait_file(box, f"runs-{i}")
    t = cl.api.cancel_task(m, message="slow", grace=30, wait=False)
    assert t.state.value == "Canceling"
    for i in (1, 2):
        wait_file(box, f"term-{i}")
        assert state_of(cl.api, f"{m}.{i}") == "Canceling"
    t0 = time.time()
    t = cl.api.cancel_task(m, force=True)
    assert time.time() - t0 < 3.0
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("slow")
    for i in (1, 2):
        ti = cl.api.get_task(f"{m}.{i}")
        assert ti.state.value == "Failed" and ti.exit_code == -9
        assert ti.error_message == RUNNING_MSG.format("slow")
    for i in (3, 4, 5):
        assert state_of(cl.api, f"{m}.{i}") == "Canceled"
    assert box.alive() == []
    assert stays(lambda: not any(box.has(f"runs-{i}") for i in (3, 4, 5)), 0.5)


def test_cancel_one_sweep_instance(cl, box):
    job = cl.api.create_job(name="sweep-instance")
    job.add_task(sweep_script(box, quick_upto=0), sweep=(1, 4, 1))
    job.submit()
    m = f"{job.id}.1"
    for i in (1, 2):
        wait_state(cl.api, f"{m}.{i}", "Running")
        wait_file(box, f"runs-{i}")

    # a running instance: Failed, its sibling untouched
    t = cl.api.cancel_task(f"{m}.1", message="one")
    assert t.state.value == "Failed"
    assert t.error_message == RUNNING_MSG.format("one")
    assert box.has("term-1") and not box.has("term-2")
    # an instance not dispatched yet: Canceled at once, never runs
    t = job.cancel_task(f"{m}.4", message="not this one")
    assert t.state.value == "Canceled"
    assert t.error_message == QUEUED_MSG.format("not this one")
    assert state_of(cl.api, f"{m}.2") == "Running"
    assert cl.api.get_task(m).state.value == "Running"

    wait_state(cl.api, f"{m}.3", "Running")      # the freed slot goes to the next instance
    wait_file(box, "runs-3")
    box.open_gate()
    for i in (2, 3):
        wait_state(cl.api, f"{m}.{i}", "Finished")
    master = wait_state(cl.api, m, ["Finished", "Failed", "Canceled"])
    assert master.state.value == "Failed"        # one instance failed
    assert stays(lambda: not box.has("runs-4"), 0.5)
    assert state_of(cl.api, f"{m}.4") == "Canceled"
    with pytest.raises(InvalidState) as exc:
        cl.api.cancel_task(f"{m}.1")
    assert str(exc.value) == TASK_REFUSED.format("Failed")
    with pytest.raises(InvalidState) as exc:
        cl.api.cancel_task(f"{m}.4")
    assert str(exc.value) == TASK_REFUSED.format("Canceled")


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_task_cancel(cl, boxes):
    a = boxes("a")
    job, tid = running(cl, a, a.hold(on_term="exit"))
    res = hpcq("task", "cancel", tid, "--message", "from the cli", redis_url=cl.redis_url)
    assert res.returncode == 0, res.stderr
    t = cl.api.get_task(tid)
    assert t.state.value == "Failed"             # the CLI returned after the end state
    assert t.error_message == RUNNING_MSG.format("from the cli")

    # --no-wait returns while the task is still Canceling
    b = boxes("b")
    job, tid = running(cl, b, b.hold(on_term="ignore"))
    res = hpcq("task", "cancel", tid, "--no-wait", "--grace", "2", redis_url=cl.redis_url)
    assert res.returncode == 0, res.stderr
    assert state_of(cl.api, tid) == "Canceling"
    t = wait_state(cl.api, tid, "Failed", timeout=15)
    assert t.exit_code == -9
    assert t.error_message == RUNNING_MSG.format("")

    # a refusal: exit 1, one line on stderr, nothing changed
    before = task_hash(cl.r, tid)
    res = hpcq("task", "cancel", tid, "--force", redis_url=cl.redis_url)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and TASK_REFUSED.format("Failed") in lines[0], res.stderr
    assert task_hash(cl.r, tid) == before

    res = hpcq("task", "cancel", tid, "--message", "m" * 129, redis_url=cl.redis_url)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and TOO_LONG in lines[0], res.stderr
    res = hpcq("task", "cancel", "nonsense", redis_url=cl.redis_url)
    assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
