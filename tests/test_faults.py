"""The faults of a real cluster, on real processes: a pool process killed (as by the OOM killer),
a worker's main process killed and restarted under the same name, a worker stopped (SIGSTOP)
and resumed, warm and cold shutdown, the rerun cap, and start errors that say what is wrong."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.support import attempt_processes, running_cluster, task_processes, wait_until
from scheduler import JobState

pytestmark = pytest.mark.cluster

ENV = {"HPCQ_WORKER_TIMEOUT": "3", "HPCQ_HEARTBEAT_INTERVAL": "0.5", "HPCQ_RECONCILE_GRACE": "2"}


def once_then_quick(tmp_path, name: str, first: str = "sleep 120 & wait") -> str:
    """A command whose first run blocks (until killed) and whose later runs print 'again'."""
    flag = tmp_path / f"{name}.flag"
    runs = tmp_path / f"{name}.runs"
    return (f"echo run >> {runs}; if [ -e {flag} ]; then echo again; "
            f"else touch {flag}; {first}; fi")


def runs(tmp_path, name: str) -> int:
    path = tmp_path / f"{name}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def running(s, tid, timeout=30):
    return wait_until(lambda: s.get_task(tid).state.value == "Running" and s.get_task(tid),
                      timeout, f"task {tid} running")


def slots_free(c, name: str):
    return wait_until(lambda: c.r.scard(f"hpcq:worker:{name}:tasks") == 0, 20,
                      f"{name}'s slots to be free")


def test_pool_process_killed_is_noticed_at_once_and_rerun(redis_server, tmp_path):
    with running_cluster(redis_server, workers=(("w1@pool-kill", 1),), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="oom")
        task = job.add_task(command=once_then_quick(tmp_path, "oom"))
        s.submit_job(job)
        t = running(s, task.id)
        cid = t.record["celery_id"]
        wait_until(lambda: attempt_processes(cid), 10, "the command to run")
        t0 = time.monotonic()
        os.kill(int(t.record["worker_pid"]), signal.SIGKILL)          # the OOM killer
        wait_until(lambda: not attempt_processes(cid), 10, "the orphaned command to be killed")
        assert job.wait(timeout=30) == JobState.Finished
        noticed = time.monotonic() - t0
        t = s.get_task(task.id)
        assert t.output == "again\n" and t.auto_requeue_count == 1 and runs(tmp_path, "oom") == 2
        assert "died" in (t.record.get("last_error") or "")
        print(f"pool process killed -> rerun finished in {noticed:.2f} s")
        slots_free(c, "w1@pool-kill")


def test_pool_process_killed_not_rerunnable_fails_and_a_cancel_completes(redis_server, tmp_path):
    with running_cluster(redis_server, workers=(("w1@pool-kill2", 2),), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="oom-norerun")
        plain = job.add_task(command="sleep 120", is_rerunnable=False)
        stubborn = job.add_task(command="trap '' TERM; sleep 120 & wait; sleep 120")
        s.submit_job(job)
        a, b = running(s, plain.id), running(s, stubborn.id)
        os.kill(int(a.record["worker_pid"]), signal.SIGKILL)
        wait_until(lambda: s.get_task(plain.id).state.value == "Failed", 10, "plain task Failed")
        assert "supervising the task" in s.get_task(plain.id).error_message
        assert not attempt_processes(a.record["celery_id"])
        # a cancel waiting on a command that ignores SIGTERM, whose supervisor then dies
        s.cancel_task(stubborn.id, message="stop", wait=False)
        wait_until(lambda: s.get_task(stubborn.id).state.value == "Canceling", 10, "Canceling")
        os.kill(int(b.record["worker_pid"]), signal.SIGKILL)
        wait_until(lambda: s.get_task(stubborn.id).state.value == "Failed", 10,
                   "the cancel to complete")
        assert "canceled" in s.get_task(stubborn.id).error_message.lower()
        assert not attempt_processes(b.record["celery_id"])
        assert job.wait(timeout=10) == JobState.Failed
        slots_free(c, "w1@pool-kill2")


def test_rerun_cap_counts_lost_attempts(redis_server, tmp_path):
    """The job's task_retry_count (issue 14: hpcq job new --task-retry-count) wins over the
    cluster's HPCQ_TASK_RETRY_COUNT."""
    with running_cluster(redis_server, workers=(("w1@cap", 1),),
                         env={**ENV, "HPCQ_TASK_RETRY_COUNT": "5"}) as c:
        s = c.scheduler_api()
        job = s.create_job(name="cap", task_retry_count=1)
        task = job.add_task(command="sleep 120")
        s.submit_job(job)
        for n in range(2):
            t = running(s, task.id)
            assert t.auto_requeue_count == n
            os.kill(int(t.record["worker_pid"]), signal.SIGKILL)
            wait_until(lambda: s.get_task(task.id).token != t.token, 10, "the attempt to end")
        assert job.wait(timeout=20) == JobState.Failed
        t = s.get_task(task.id)
        assert t.auto_requeue_count == 1
        assert "not rerun again" in t.error_message and "died" in t.error_message
        assert "(TaskRetryCount 1)" in t.error_message


def test_worker_killed_restarted_same_name_kills_orphans_first(redis_server, tmp_path):
    env = {**ENV, "HPCQ_WORKER_TIMEOUT": "30"}     # the restart comes before it is declared lost
    with running_cluster(redis_server, workers=(("w1@restart", 1),), env=env) as c:
        s = c.scheduler_api()
        job = s.create_job(name="restart")
        # a descendant that leaves the session: found only by the worker's marker
        task = job.add_task(command=once_then_quick(tmp_path, "rs", "setsid sleep 300 & sleep 300"))
        s.submit_job(job)
        t = running(s, task.id)
        cid = t.record["celery_id"]
        wait_until(lambda: len(attempt_processes(cid)) >= 2, 10, "both processes")
        orphans = attempt_processes(cid)
        # the whole worker dies at once (main and pool processes: its process group)
        os.killpg(c.procs["w1@restart"].pid, signal.SIGKILL)
        c.procs["w1@restart"].wait(10)
        assert [p for p in orphans if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], \
            "nothing was orphaned: the test proves nothing"
        c.procs.pop("w1@restart")
        c.start_worker("w1@restart", 1)
        # registered means prepared: every process of the previous life is gone by now
        assert not attempt_processes(cid)
        assert job.wait(timeout=30) == JobState.Finished
        t = s.get_task(task.id)
        assert t.output == "again\n" and t.auto_requeue_count == 1 and runs(tmp_path, "rs") == 2


def test_worker_main_killed_its_pool_stops_the_task_and_it_reruns(redis_server, tmp_path):
    with running_cluster(redis_server, workers=(("w1@main", 1), ("w2@main", 1)), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="main-kill")
        task = job.add_task(command=once_then_quick(tmp_path, "main", "setsid sleep 300 & sleep 300"))
        s.submit_job(job)
        t = running(s, task.id)
        cid = t.record["celery_id"]
        wait_until(lambda: len(attempt_processes(cid)) >= 2, 10, "both processes")
        c.procs[t.node].send_signal(signal.SIGKILL)         # the main process alone
        wait_until(lambda: not attempt_processes(cid), 10, "the command to be stopped")
        assert job.wait(timeout=30) == JobState.Finished
        t = s.get_task(task.id)
        assert t.output == "again\n" and t.auto_requeue_count == 1


def test_dead_worker_is_declared_lost_and_its_tasks_end(redis_server, tmp_path):
    with running_cluster(redis_server, workers=(("w1@lost", 2),), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="lost")
        task = job.add_task(command=once_then_quick(tmp_path, "lost"))
        plain = job.add_task(command="sleep 120 & wait", is_rerunnable=False)
        s.submit_job(job)
        running(s, task.id), running(s, plain.id)
        cid = s.get_task(task.id).record["celery_id"]
        c.start_worker("w2@lost", 1)
        killed_at = time.monotonic()
        os.killpg(c.procs["w1@lost"].pid, signal.SIGKILL)     # the node's worker dies whole
        wait_until(lambda: s.get_task(task.id).auto_requeue_count == 1 and s.get_task(task.id),
                   15, "the lost task to be queued again")
        detected = time.monotonic() - killed_at
        assert job.wait(timeout=30) == JobState.Failed
        assert s.get_task(task.id).node == "w2@lost" and s.get_task(task.id).output == "again\n"
        assert s.get_task(plain.id).error_message.startswith("Node w1@lost became unreachable")
        print(f"worker killed -> lost and requeued in {detected:.2f} s, "
              f"rerun finished {time.monotonic() - killed_at:.2f} s after the kill")
        assert c.r.hget("hpcq:worker:w1@lost", "state") == "lost"
        assert attempt_processes(cid), "the dead worker's orphans should still be there"
        # the worker comes back under its name: it kills its previous life's orphans first
        c.procs.pop("w1@lost").wait(10)
        c.start_worker("w1@lost", 2)
        assert not attempt_processes(cid)
        slots_free(c, "w1@lost")


def test_stopped_busy_worker_loses_its_task_and_comes_back(redis_server, tmp_path):
    with running_cluster(redis_server, workers=(("w1@stop", 1), ("w2@stop", 1)), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="sigstop")
        task = job.add_task(command=once_then_quick(tmp_path, "stop"))
        s.submit_job(job)
        t = running(s, task.id)
        victim, cid = t.node, t.record["celery_id"]
        main = c.procs[victim]
        main.send_signal(signal.SIGSTOP)
        try:
            assert job.wait(timeout=30) == JobState.Finished
            t = s.get_task(task.id)
            assert t.node != victim and t.output == "again\n" and t.auto_requeue_count == 1
            # the stale copy is stopped by its own supervisor (its token is dead)
            wait_until(lambda: not attempt_processes(cid), 10, "the stale copy to be killed")
        finally:
            main.send_signal(signal.SIGCONT)
        wait_until(lambda: c.r.hget(f"hpcq:worker:{victim}", "state") == "online", 10,
                   "the worker to re-register")
        assert c.r.hget(f"hpcq:worker:{victim}", "slots") == "1"
        more = s.create_job(name="after")
        ts = [more.add_task(command="sleep 1") for _ in range(4)]
        s.submit_job(more)
        assert more.wait(timeout=30) == JobState.Finished
        assert victim in {s.get_task(x.id).node for x in ts}


def test_idle_worker_forgotten_then_resumed_gets_work(redis_server):
    env = {**ENV, "HPCQ_WORKER_TIMEOUT": "1.5"}
    with running_cluster(redis_server, workers=(("w1@idle", 2),), env=env) as c:
        s = c.scheduler_api()
        main = c.procs["w1@idle"]
        main.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: c.r.zscore("hpcq:workers", "w1@idle") is None, 20,
                       "the silent worker to be forgotten")
        finally:
            main.send_signal(signal.SIGCONT)
        wait_until(lambda: c.r.zscore("hpcq:workers", "w1@idle") is not None, 10, "re-registered")
        assert c.r.hget("hpcq:worker:w1@idle", "slots") == "2"
        job = s.create_job(name="resumed")
        job.add_task(command="echo hi")
        s.submit_job(job)
        assert job.wait(timeout=20) == JobState.Finished


@pytest.mark.parametrize("sig,how", [(signal.SIGTERM, "warm"), (signal.SIGQUIT, "cold")])
def test_shutdown_stops_and_requeues(redis_server, tmp_path, sig, how):
    env = {**ENV, "HPCQ_TASK_CANCEL_GRACE_PERIOD": "6"}
    with running_cluster(redis_server, workers=(("w1@down", 2),), env=env) as c:
        s = c.scheduler_api()
        job = s.create_job(name=how)
        # SIGTERM is ignored: warm gives the grace period, then SIGKILL; cold kills at once
        again = job.add_task(command="trap '' TERM; sleep 120 & wait; sleep 120")
        once = job.add_task(command="trap '' TERM; sleep 120 & wait; sleep 120", is_rerunnable=False)
        s.submit_job(job)
        a, b = running(s, again.id), running(s, once.id)
        t0 = time.monotonic()
        c.procs["w1@down"].send_signal(sig)
        wait_until(lambda: c.procs["w1@down"].poll() is not None, 30, "the worker to exit")
        took = time.monotonic() - t0
        # warm waits out the grace period (SIGTERM is ignored); cold does not wait for it
        assert took >= 5.5 if how == "warm" else took < 5, took
        events = c.r.xrange("hpcq:events")
        for tid in (again.id, once.id):
            assert s.get_task(tid).state.value not in ("Running", "Dispatching", "Canceling"), "\n".join(f"{e[0]} {e[1]}" for e in events)
        assert s.get_task(again.id).state.value == "Queued"
        assert s.get_task(again.id).auto_requeue_count == 1
        assert s.get_task(once.id).state.value == "Failed"
        assert "was stopped" in s.get_task(once.id).error_message
        assert not attempt_processes(a.record["celery_id"]) + attempt_processes(b.record["celery_id"])
        assert c.r.scard("hpcq:worker:w1@down:tasks") == 0
        s.cancel_job(job.id, wait=False)


def test_start_errors_say_what_is_wrong_and_long_commands_run(redis_server, tmp_path):
    with running_cluster(redis_server, workers=(("w1@start", 2),), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="start")
        notdir = job.add_task(command="true", work_dir="/etc/passwd")
        missing = job.add_task(command="true", work_dir=str(tmp_path / "nope"))
        nostdin = job.add_task(command="cat", stdin=str(tmp_path / "no-input"))
        long = job.add_task(command=": " + "x" * 300_000 + "; echo long-ok")
        env = job.add_task(command="env")
        s.submit_job(job)
        job.wait(timeout=30)
        assert "is not a directory" in s.get_task(notdir.id).error_message
        assert "does not exist" in s.get_task(missing.id).error_message
        assert "stdin file" in s.get_task(nostdin.id).error_message
        assert s.get_task(long.id).output == "long-ok\n"
        out = s.get_task(env.id).output
        assert "HPCQ_TASK_ID=" in out and "HPCQ_REDIS_URL" not in out and c.redis_url not in out
        assert not task_processes(c.marker, long.id)


def test_a_message_delivered_twice_runs_the_attempt_once(redis_server, tmp_path):
    """What redelivery (visibility timeout, a worker dying with a prefetched message) amounts
    to: the same attempt's message arrives twice; the start check lets exactly one run."""
    from scheduler.transport import send_attempt
    mark = tmp_path / "ran"
    with running_cluster(redis_server, workers=(("w1@twice", 2),), schedulers=(), env=ENV) as c:
        s = c.scheduler_api()
        job = s.create_job(name="twice")
        task = job.add_task(command=f"echo $HPCQ_ATTEMPT >> {mark}; sleep 1")
        s.submit_job(job)
        [(tid, token, cid)] = s.store.dispatch("w1@twice", 1)
        for _ in range(2):
            send_attempt(s.celery, "w1@twice", tid, token, cid)
        assert job.wait(timeout=30) == JobState.Finished
        consumed(c, s, "w1@twice")
        assert mark.read_text().splitlines() == [cid]
        # and after the end, the same message again changes nothing
        send_attempt(s.celery, "w1@twice", tid, token, cid)
        consumed(c, s, "w1@twice")
        assert mark.read_text().splitlines() == [cid] and s.get_task(tid).state.value == "Finished"


def consumed(c, s, worker: str) -> None:
    """Every message sent to the worker was taken and none is being worked on."""
    queue = f"hpcq.w.{worker}"

    def idle():
        if c.r.llen(queue) or c.r.hlen("unacked"):
            return False
        active = s.celery.control.inspect(destination=[worker], timeout=1).active() or {}
        return worker in active and not active[worker]
    wait_until(idle, 20, f"{worker} to take every message and finish it")
