"""Redis going away never kills a task (issue 10).

Each test runs its own redis-server with an AOF (``appendfsync everysec``), one scheduler and two
workers of concurrency 2, takes Redis away while commands run, brings it back, and checks what
the product promises: running commands keep running, a task that ends during the outage has its
result recorded once Redis is back (once, token-checked), queued work resumes, nobody is
declared lost for silence the outage caused, no slot is leaked, and no process is left.  After a
kill -9, and after losing the AOF's tail (what ``appendfsync everysec`` may lose), the heartbeat
and the token checks reconcile: every task ends in exactly one end state and the job's counters
match its tasks."""

from __future__ import annotations

import collections
import os
import time
import uuid

import pytest
import redis

from tests.support import dump_logs, running_cluster, stays, task_processes, wait_until
from tests.support import RedisServer
from scheduler.errors import RedisUnavailable

pytestmark = pytest.mark.cluster

END_STATES = {"Finished", "Failed", "Canceled"}
#: Outage length: longer than HPCQ_WORKER_TIMEOUT, so a scheduler that counted the outage's
#: silence against the workers would declare them lost.
OUTAGE = 4.0
ENV = {
    "HPCQ_WORKER_TIMEOUT": "3",
    "HPCQ_HEARTBEAT_INTERVAL": "0.5",
    "HPCQ_TASK_CANCEL_GRACE_PERIOD": "2",
    "HPCQ_RECONCILE_GRACE": "2",
}


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path / "redis", appendonly=True)
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def outage_cluster(server, tmp_path):
    tag = uuid.uuid4().hex[:6]
    workers = ((f"w1@outage-{tag}", 2), (f"w2@outage-{tag}", 2))
    env = dict(ENV, HPCQ_RUN_DIR=str(tmp_path / "run"))
    with running_cluster(server.url, workers=workers, env=env) as c:
        c.worker_names = [w for w, _ in workers]
        print(f"\n[cluster logs in {c.logdir}; redis log {server.log_path}]")
        yield c


# --- helpers ------------------------------------------------------------------------------------

def poll(fn, timeout: float, what: str, cluster=None):
    """``wait_until`` that rides over Redis being briefly unreachable from the test itself."""
    def guarded():
        try:
            return fn()
        except (RedisUnavailable, redis.RedisError):
            return None
    try:
        return wait_until(guarded, timeout, what, interval=0.1)
    except AssertionError as exc:
        if cluster is not None:
            raise AssertionError(f"{exc}\n{snapshot(cluster)}\n{dump_logs(cluster)}") from None
        raise


def task_records(c, job_id: int) -> dict[str, dict]:
    n = int(c.r.hget(f"hpcq:job:{job_id}", "ntasks") or 0)
    return {f"{job_id}.{t}": c.r.hgetall(f"hpcq:task:{job_id}.{t}") for t in range(1, n + 1)}


def snapshot(c) -> str:
    try:
        lines = []
        for jid in c.r.zrange("hpcq:jobs", 0, -1):
            lines.append(f"job {jid}: {c.r.hgetall(f'hpcq:job:{jid}')}")
            for tid, rec in task_records(c, int(jid)).items():
                keep = {k: rec.get(k) for k in ("state", "node", "token", "exit_code", "error",
                                                "auto_requeue_count", "last_error", "unlisted")}
                lines.append(f"  {tid}: {keep}")
        for w in getattr(c, "worker_names", []):
            lines.append(f"{w} tasks: {sorted(c.r.smembers(f'hpcq:worker:{w}:tasks'))}")
        return "\n".join(lines)
    except redis.RedisError as exc:
        return f"(no snapshot: {exc})"


def submit(s, name: str, commands: list[str]):
    job = s.create_job(name=name)
    for cmd in commands:
        job.add_task(command=cmd)
    s.submit_job(job)
    return job


def marking(markdir, body: str) -> str:
    """A command that first appends a line to a file named by its task id (one line per run)."""
    return f'echo run >> "{markdir}/$HPCQ_TASK_ID"; {body}'


def running_ids(c, job_id: int) -> list[str]:
    return [t for t, rec in task_records(c, job_id).items() if rec.get("state") == "Running"]


def wait_job_end(c, job_id: int, timeout: float) -> dict[str, dict]:
    def ended():
        st = c.r.hget(f"hpcq:job:{job_id}", "state")
        return st in END_STATES and task_records(c, job_id)
    return poll(ended, timeout, f"job {job_id} to end", cluster=c)


def runs(markdir, tid: str) -> int:
    try:
        with open(os.path.join(markdir, tid)) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def assert_no_slot_leaked(c) -> None:
    poll(lambda: all(c.r.scard(f"hpcq:worker:{w}:tasks") == 0 for w in c.worker_names), 10,
         "every worker's task set to be empty (a leaked slot otherwise)", cluster=c)


def assert_counts_consistent(c, job_id: int) -> None:
    job = c.r.hgetall(f"hpcq:job:{job_id}")
    counters = {k[2:]: int(v) for k, v in job.items() if k.startswith("c:") and int(v)}
    recount = dict(collections.Counter(rec["state"] for rec in task_records(c, job_id).values()))
    assert counters == recount, f"job {job_id} counters {counters} != recount {recount}\n{snapshot(c)}"


def assert_no_task_processes(c, job_id: int) -> None:
    """The product itself stopped every command: checked while the cluster still runs (the
    cluster's teardown checks again for any process at all carrying its marker)."""
    ids = list(task_records(c, job_id))
    poll(lambda: not any(task_processes(c.marker, tid) for tid in ids), 10,
         "no process of any task to be left", cluster=c)


def outage_for(server, stop) -> float:
    """Take Redis away with ``stop`` and let OUTAGE seconds pass from that moment; returns the
    wall-clock time the outage began."""
    began, down = time.time(), time.monotonic()
    stop()
    time.sleep(max(0.0, down + OUTAGE - time.monotonic()))
    return began


def print_first_record(label: str, recs: dict[str, dict], up_wall: float) -> None:
    ends = sorted(float(r["end_time"]) for r in recs.values() if r.get("end_time"))
    if ends:
        print(f"\n[{label}] first task result recorded {ends[0] - up_wall:.2f} s after Redis "
              f"was back; last {ends[-1] - up_wall:.2f} s after")


# --- tests --------------------------------------------------------------------------------------

def test_redis_shutdown_restart_keeps_running_tasks(server, outage_cluster, tmp_path):
    c = outage_cluster
    s = c.scheduler_api()
    markdir = tmp_path / "marks"
    markdir.mkdir()
    cmd = marking(markdir, "sleep 6; echo done-$HPCQ_TASK_ID")
    job = submit(s, "outage-shutdown", [cmd] * 8)          # 8 tasks for 4 slots
    first = poll(lambda: (ids := running_ids(c, job.id)) and len(ids) == 4 and ids, 30,
                 "4 tasks to be Running", cluster=c)
    before = task_records(c, job.id)
    queued = sorted(t for t, r in before.items() if r["state"] == "Queued")
    assert len(queued) == 4, snapshot(c)

    # (server.shutdown() itself returns only seconds after Redis is gone: redis-py's retries)
    outage_for(server, server.shutdown)
    # the commands ran on through the outage
    alive = {t: bool(task_processes(c.marker, t)) for t in first}
    assert all(alive.values()), \
        f"a running command died during the outage: {alive}\n{dump_logs(c)}"
    restart_wall = time.time()
    server.restart()
    up_wall = time.time()

    recs = wait_job_end(c, job.id, 45)
    print_first_record("shutdown", {t: recs[t] for t in first}, up_wall)
    assert c.r.hget(f"hpcq:job:{job.id}", "state") == "Finished", snapshot(c)
    for tid, rec in recs.items():
        assert rec["state"] == "Finished", f"{tid}: {rec}\n{snapshot(c)}"
        assert rec.get("exit_code") == "0" and rec.get("output") == f"done-{tid}\n", (tid, rec)
        assert int(rec.get("auto_requeue_count") or 0) == 0, \
            f"{tid} was declared lost because of the outage: {rec}\n{dump_logs(c)}"
        assert runs(markdir, tid) == 1, f"{tid} ran {runs(markdir, tid)} times"
    for tid in queued:
        assert float(recs[tid]["start_time"]) >= restart_wall, \
            f"queued {tid} started before Redis came back: {recs[tid]}"
    assert "is lost" not in c.log("scheduler"), c.log("scheduler")
    assert_no_slot_leaked(c)
    assert_counts_consistent(c, job.id)
    assert_no_task_processes(c, job.id)


def test_task_ending_during_outage_is_recorded_after(server, outage_cluster, tmp_path):
    c = outage_cluster
    s = c.scheduler_api()
    markdir = tmp_path / "marks"
    markdir.mkdir()
    # each command notes when it ended, to prove it ended inside the outage
    cmd = marking(markdir, f'sleep 2; touch "{markdir}/$HPCQ_TASK_ID.end"; echo end-$HPCQ_TASK_ID')
    job = submit(s, "outage-end", [cmd] * 4)
    poll(lambda: len(running_ids(c, job.id)) == 4, 30, "4 tasks to be Running", cluster=c)

    down_wall = time.time()
    server.shutdown()
    ended = poll(lambda: all(os.path.exists(markdir / f"{job.id}.{t}.end") for t in range(1, 5)),
                 OUTAGE + 2, "every command to end during the outage", cluster=c)
    assert ended
    time.sleep(max(0.0, down_wall + OUTAGE - time.time()))   # the outage lasts OUTAGE s
    restart_wall = time.time()
    server.restart()
    up_wall = time.time()

    for t in range(1, 5):
        mtime = os.path.getmtime(markdir / f"{job.id}.{t}.end")
        assert down_wall <= mtime <= restart_wall, f"task {job.id}.{t} did not end in the outage"
    recs = wait_job_end(c, job.id, 30)
    print_first_record("ended in outage", recs, up_wall)
    assert c.r.hget(f"hpcq:job:{job.id}", "state") == "Finished", snapshot(c)
    for tid, rec in recs.items():
        assert rec["state"] == "Finished", f"{tid}: {rec}\n{snapshot(c)}"
        assert rec.get("exit_code") == "0" and rec.get("output") == f"end-{tid}\n", (tid, rec)
        assert float(rec["end_time"]) >= restart_wall, (tid, rec)   # recorded after, held until then
        assert int(rec.get("auto_requeue_count") or 0) == 0, \
            f"{tid} was declared lost because of the outage: {rec}\n{dump_logs(c)}"
        assert runs(markdir, tid) == 1, f"{tid} ran {runs(markdir, tid)} times"
    assert "is lost" not in c.log("scheduler"), c.log("scheduler")
    assert_no_slot_leaked(c)
    assert_counts_consistent(c, job.id)
    assert_no_task_processes(c, job.id)


def test_redis_kill9_loses_last_writes_and_reconciles(server, outage_cluster, tmp_path):
    c = outage_cluster
    s = c.scheduler_api()
    markdir = tmp_path / "marks"
    markdir.mkdir()
    cmd = marking(markdir, "sleep 2; echo end-$HPCQ_TASK_ID")
    job = submit(s, "outage-kill9", [cmd] * 8)             # 4 run, 4 wait in the queue
    # kill -9 as soon as the 4th start is written: the last second of writes may be lost
    poll(lambda: len(running_ids(c, job.id)) == 4, 30, "4 tasks to be Running", cluster=c)
    outage_for(server, server.kill)
    server.restart()
    up_wall = time.time()
    after = poll(lambda: task_records(c, job.id), 10, "the job's records after restart")
    print("\n[kill -9] states Redis reloaded from its AOF: "
          + str(dict(collections.Counter(r.get("state") for r in after.values()))))

    recs = wait_job_end(c, job.id, 45)
    print_first_record("kill -9", recs, up_wall)
    print("[kill -9] runs per task: " + str({t: runs(markdir, t) for t in recs}))
    for tid, rec in recs.items():
        assert rec["state"] in END_STATES, f"{tid}: {rec}\n{snapshot(c)}"
        # every command succeeds and is rerunnable: whatever was lost is rerun to the end
        assert rec["state"] == "Finished", f"{tid}: {rec}\n{snapshot(c)}\n{dump_logs(c)}"
        assert rec.get("exit_code") == "0" and rec.get("output") == f"end-{tid}\n", (tid, rec)
        assert runs(markdir, tid) >= 1
    assert c.r.hget(f"hpcq:job:{job.id}", "state") == "Finished", snapshot(c)
    # nothing stays Running/Dispatching, no slot is leaked, the counters match the tasks
    assert stays(lambda: not [t for t, r in task_records(c, job.id).items()
                              if r["state"] not in END_STATES], 0.5)
    assert_no_slot_leaked(c)
    assert_counts_consistent(c, job.id)
    assert_no_task_processes(c, job.id)


def test_lost_aof_tail_is_reconciled(server, outage_cluster, tmp_path):
    """What an fsync-level loss looks like (a kill -9 of the process alone loses nothing: the
    kernel keeps what Redis wrote): Redis comes back without the tasks' start steps, which the
    AOF had, cut off its tail, while their commands run on the workers.  Those results are stale
    (token check) and the tasks run again, so a command may run twice (at least once, never
    lost); every task still ends in exactly one end state, with nothing stuck, leaked or left."""
    c = outage_cluster
    s = c.scheduler_api()
    aof = os.path.join(server.dir, "appendonly.aof")
    markdir = tmp_path / "marks"
    markdir.mkdir()
    cmd = marking(markdir, "sleep 3; echo end-$HPCQ_TASK_ID")
    job = submit(s, "outage-aof-tail", [cmd] * 6)          # 4 run, 2 wait in the queue
    # The AOF's size sampled before reading the states: a sample whose states show no task
    # Running holds no start step (a write reaches the file before its reply).
    clean = None

    def sample():
        nonlocal clean
        size = os.path.getsize(aof)
        running = running_ids(c, job.id)
        if not running:
            clean = size
        return len(running) == 4
    poll(sample, 30, "4 tasks to be Running", cluster=c)
    assert clean is not None
    server.kill()
    lost = os.path.getsize(aof) - clean
    os.truncate(aof, clean)
    time.sleep(max(0.0, OUTAGE - 1))
    server.restart()
    up_wall = time.time()
    after = poll(lambda: task_records(c, job.id), 10, "the job's records after restart")
    print(f"\n[AOF tail] {lost} bytes cut; states reloaded: "
          + str(dict(collections.Counter(r.get("state") for r in after.values()))))
    assert not [t for t, r in after.items() if r["state"] == "Running"], "nothing was lost"

    recs = wait_job_end(c, job.id, 45)
    print_first_record("AOF tail", recs, up_wall)
    print("[AOF tail] runs per task: " + str({t: runs(markdir, t) for t in recs}))
    for tid, rec in recs.items():
        assert rec["state"] == "Finished", f"{tid}: {rec}\n{snapshot(c)}\n{dump_logs(c)}"
        assert rec.get("exit_code") == "0" and rec.get("output") == f"end-{tid}\n", (tid, rec)
        assert runs(markdir, tid) >= 1
    assert c.r.hget(f"hpcq:job:{job.id}", "state") == "Finished", snapshot(c)
    assert stays(lambda: not [t for t, r in task_records(c, job.id).items()
                              if r["state"] not in END_STATES], 0.5)
    assert_no_slot_leaked(c)
    assert_counts_consistent(c, job.id)
    assert_no_task_processes(c, job.id)
