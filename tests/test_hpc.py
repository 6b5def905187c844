"""HPC scheduling (issue 14) through the CLI on one real cluster of workers of different
capacities and node groups: placement by cores, GPUs, memory, group and exclusivity, what the
task's process sees (CCP_*, CUDA_VISIBLE_DEVICES), no starvation of a large task, retries and
valid exit codes, job dependencies, holds, modify, adding to a running job, idempotent submit,
finish, and owner checks."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from tests.support import hpcq, running_cluster, wait_until

pytestmark = pytest.mark.cluster

#: name, concurrency, what it advertises
WORKERS = (
    ("small@hpc", 4, ("--cores", "2", "--memory", "1000")),
    ("gpu@hpc", 4, ("--cores", "8", "--gpus", "2", "--group", "gpu")),
    ("bigmem@hpc", 2, ("--cores", "4", "--memory", "64000", "--group", "bigmem")),
    ("quad@hpc", 4, ("--cores", "4", "--group", "quad")),
)
ADMIN = "hpcq-admin"


@pytest.fixture(scope="module")
def cluster(redis_server):
    env = {"HPCQ_TASK_CANCEL_GRACE_PERIOD": "2", "HPCQ_ADMINS": f"{ADMIN},root-not"}
    with running_cluster(redis_server, workers=WORKERS, env=env) as c:
        yield c


@pytest.fixture(scope="module")
def url(cluster):
    return cluster.redis_url


def run(url, *args, code=0, user=None, **kw):
    env = dict(kw.pop("env", {}))
    if user:
        env.update(USER=user, LOGNAME=user)
    p = hpcq(*args, redis_url=url, env=env, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    return p


def submit(url, *args, **kw) -> str:
    return run(url, "job", "submit", *args, **kw).stdout.strip()


def wait(url, job, code=0):
    run(url, "job", "wait", job, "--timeout", "60", code=code)


def view(url, tid) -> dict:
    return json.loads(run(url, "task", "view", str(tid), "--json").stdout)


def job_view(url, job) -> dict:
    return json.loads(run(url, "job", "view", str(job), "--json").stdout)


@contextlib.contextmanager
def gate(tmp_path, name: str = "gate"):
    """A command that runs until the test opens its gate, and the opener (also called as the
    block ends, so a failing test leaves nothing holding the module's workers).  A task that must
    still be running at some point of a test waits on this, never on a ``sleep N``: under load
    the test's own CLI calls take seconds each and outlast any N (issue 23)."""
    path = tmp_path / name
    try:
        yield f"until [ -e {path} ]; do sleep 0.05; done", path.touch
    finally:
        path.touch()


def dispatch_passes(url) -> list[str]:
    """Two jobs, each submitted once the previous one has ended: once this returns, a full
    dispatch pass (every worker, the whole queue) has run that began after everything queued
    before the call - the condition a test means by "the scheduler had its chance to start it",
    instead of a sleep.  Each submission wakes a full pass; only the one pass under way when the
    first was queued (over one worker's freed slot, say) can start a probe without being one, so
    the second probe starts in a full pass at the earliest.  Returns the probes' job ids."""
    probes = []
    for _ in range(2):
        probes.append(submit(url, "--", "true"))
        wait(url, probes[-1])
    return probes


def env_of(url, tid) -> dict:
    """The task printed its environment (``env``) as its output."""
    return dict(line.split("=", 1) for line in view(url, tid)["output"].splitlines() if "=" in line)


# --- resources and placement -------------------------------------------------------------------

def test_nodes_show_what_they_advertise(url):
    nodes = {n["name"]: n for n in json.loads(run(url, "node", "list", "--json").stdout)}
    assert nodes["gpu@hpc"]["cores"] == 8 and nodes["gpu@hpc"]["gpus"] == ["0", "1"]
    assert nodes["gpu@hpc"]["groups"] == ["gpu"] and nodes["bigmem@hpc"]["memory"] == 64000
    assert nodes["small@hpc"]["cores"] == 2 and nodes["small@hpc"]["memory"] == 1000


def test_a_task_runs_only_where_all_it_asks_fits_and_sees_what_it_got(url):
    job = run(url, "job", "new", "--name", "place", "--env", "FROM_JOB=yes").stdout.strip()
    run(url, "job", "add", job, "--name", "eight", "--cores", "8", "--", "env")
    run(url, "job", "add", job, "--name", "mem", "--memory", "32000", "--", "env")
    run(url, "job", "add", job, "--name", "grp", "--group", "quad", "--env", "FROM_JOB=task", "--", "env")
    run(url, "job", "add", job, "--sweep", "1-2", "--gpus", "1", "--", "sleep 1; env")
    run(url, "job", "submit", job)
    wait(url, job)
    eight, mem, grp = (env_of(url, f"{job}.{t}") for t in (1, 2, 3))
    assert view(url, f"{job}.1")["node"] == "gpu@hpc" and eight["CCP_NUMCPUS"] == "8"
    assert eight["CCP_NODES"] == "1 gpu@hpc 8" and eight["CUDA_VISIBLE_DEVICES"] == ""
    assert eight["CCP_JOBID"] == job and eight["CCP_TASKID"] == "1" and eight["CCP_TASKINSTANCEID"] == "0"
    assert eight["CCP_JOBNAME"] == "place" and eight["CCP_TASKNAME"] == "eight"
    assert eight["HPCQ_TASK_ID"] == f"{job}.1" and eight["FROM_JOB"] == "yes"
    assert view(url, f"{job}.2")["node"] == "bigmem@hpc"
    assert view(url, f"{job}.3")["node"] == "quad@hpc" and grp["FROM_JOB"] == "task"
    # two one-GPU instances that ran at once got distinct GPUs
    a, b = (view(url, f"{job}.4.{i}") for i in (1, 2))
    assert a["node"] == b["node"] == "gpu@hpc"
    ga, gb = (env_of(url, f"{job}.4.{i}")["CUDA_VISIBLE_DEVICES"] for i in (1, 2))
    assert {ga, gb} == {"0", "1"}
    assert env_of(url, f"{job}.4.2")["CCP_TASKINSTANCEID"] == "2"
    assert a["allocation"]["gpus"] in (["0"], ["1"])


def test_a_task_larger_than_every_worker_waits_with_a_reason_or_is_refused_when_strict(url):
    job = submit(url, "--cores", "16", "--", "true")
    dispatch_passes(url)
    t = view(url, f"{job}.1")
    assert t["state"] == "Queued" and t["reason"] == "needs 16 cores; the largest worker has 8"
    nope = submit(url, "--group", "nope", "--", "true")
    t = view(url, nope + ".1")
    assert t["reason"] == "needs node group nope; no online worker is in it"
    gpu = submit(url, "--group", "bigmem", "--gpus", "1", "--", "true")
    t = view(url, gpu + ".1")
    assert t["reason"] == "needs 1 GPU; the most any worker in group bigmem has is 0"
    before = json.loads(run(url, "job", "list", "--all", "--json").stdout)
    p = run(url, "job", "submit", "--strict", "--cores", "16", "--", "true", code=1)
    assert p.stderr == "error: task 1 needs 16 cores; the largest worker has 8\n"
    assert json.loads(run(url, "job", "list", "--all", "--json").stdout) == before
    for j in (job, nope, gpu):
        run(url, "job", "cancel", j)


def test_exclusive_task_runs_alone_on_its_worker(url, tmp_path):
    marks = tmp_path / "marks"
    job = run(url, "job", "new").stdout.strip()
    for n in range(3):
        run(url, "job", "add", job, "--group", "quad", "--",
            f"echo start {n} $(date +%s.%N) >> {marks}; sleep 0.6; echo end {n} $(date +%s.%N) >> {marks}")
    run(url, "job", "add", job, "--group", "quad", "--exclusive", "--",
        f"echo start X $(date +%s.%N) >> {marks}; sleep 0.6; echo end X $(date +%s.%N) >> {marks}")
    run(url, "job", "submit", job)
    wait(url, job)
    times = {}
    for line in marks.read_text().split("\n"):
        if line:
            what, n, ts = line.split()
            times.setdefault(n, {})[what] = float(ts)
    x = times.pop("X")
    for t in times.values():   # nothing else ran while X ran
        assert t["end"] <= x["start"] or t["start"] >= x["end"], (t, x)


def test_an_exclusive_job_keeps_other_jobs_off_its_workers(url, tmp_path):
    """While an exclusive job's two tasks hold 2 of quad's 4 cores, another job's 1-core task for
    group quad stays Queued through full dispatch passes and starts only once the exclusive
    job's last task has left.  (Its tasks used to be ``sleep 5``: under load the CLI calls
    between seeing them run and looking at the other task took longer, the job had ended, and
    the other task had rightly run: issue 23.)"""
    with gate(tmp_path) as (hold, open_gate):
        excl = run(url, "job", "new", "--exclusive", "--group", "quad").stdout.strip()
        run(url, "job", "add", excl, "--sweep", "1-2", "--", hold)
        run(url, "job", "submit", excl)
        for tid in (f"{excl}.1.1", f"{excl}.1.2"):
            wait_until(lambda: view(url, tid)["state"] == "Running", 60, "the exclusive job to run")
            assert view(url, tid)["node"] == "quad@hpc"
        other = submit(url, "--group", "quad", "--", "true")
        for probe in dispatch_passes(url):      # other jobs too, free to go anywhere else
            assert view(url, f"{probe}.1")["node"] != "quad@hpc"
        assert view(url, f"{other}.1")["state"] == "Queued"   # 2 of 4 cores free, but not for it
        open_gate()
        wait(url, excl)
        wait(url, other)
    ended = max(view(url, f"{excl}.1.{i}")["end_time"] for i in (1, 2))
    assert view(url, f"{other}.1")["start_time"] >= ended


def test_a_large_task_is_not_starved_by_later_small_ones(url):
    """The queue head's reservation: once a 4-core task is the first that fits nowhere, the
    quad worker takes no later 1-core task that would delay it."""
    first = run(url, "job", "new", "--group", "quad").stdout.strip()
    run(url, "job", "add", first, "--sweep", "1-6", "--", "sleep 0.5")
    big = run(url, "job", "new", "--group", "quad", "--cores", "4").stdout.strip()
    run(url, "job", "add", big, "--", "sleep 0.2")
    later = run(url, "job", "new", "--group", "quad").stdout.strip()
    run(url, "job", "add", later, "--sweep", "1-6", "--", "sleep 0.5")
    for j in (first, big, later):
        run(url, "job", "submit", j)
    for j in (first, big, later):
        wait(url, j)
    big_start = view(url, f"{big}.1")["start_time"]
    later_starts = [view(url, f"{later}.1.{i}")["start_time"] for i in range(1, 7)]
    assert big_start < min(later_starts), (big_start, later_starts)


# --- retries and success rules -----------------------------------------------------------------

def test_retry_runs_a_failing_command_n_plus_one_times_each_recorded(url, tmp_path):
    count = tmp_path / "count"
    job = submit(url, "--retry", "2", "--retry-delay", "1", "--",
                 f"echo x >> {count}; date +%s.%N >> {tmp_path}/times; exit 3")
    wait(url, job, code=1)
    assert count.read_text().count("x") == 3
    times = [float(x) for x in (tmp_path / "times").read_text().split()]
    assert all(b - a >= 0.9 for a, b in zip(times, times[1:])), times
    t = view(url, f"{job}.1")
    assert t["state"] == "Failed" and t["exit_code"] == 3 and t["retry_count"] == 2
    assert t["error_message"] == ("Attempt 3: The task exited with code 3. It was retried 2 times "
                                  "(--retry), so it is not retried again.")
    retries = [m["message"] for m in t["history"] if m["state"] == "Queued" and m["message"]]
    assert retries == [f"Attempt {n}: The task exited with code 3. Retry {n} of 2 in 1 s." for n in (1, 2)]
    assert [m["state"] for m in t["history"]].count("Running") == 3


def test_valid_exit_codes_count_as_success(url):
    job = submit(url, "--valid-exit-codes", "0,10..20", "--", "exit 12")
    wait(url, job)
    assert view(url, f"{job}.1")["state"] == "Finished"
    job = submit(url, "--valid-exit-codes", "0,10..20", "--", "exit 9")
    wait(url, job, code=1)


def test_a_sweep_may_allow_some_failed_instances(url):
    ok = submit(url, "--sweep", "1-4", "--max-failed-instances", "1", "--", "test * -ne 2")
    wait(url, ok)
    bad = submit(url, "--sweep", "1-4", "--max-failed-instances", "1", "--", "test * -lt 3")
    wait(url, bad, code=1)
    assert view(url, f"{bad}.1")["error_message"] == "2 instance(s) failed."


# --- jobs depending on jobs, holds, modify, adding work, keys, finish -------------------------

def test_dependent_jobs_wait_for_their_parents_and_fail_with_a_failed_one(url, tmp_path):
    with gate(tmp_path) as (hold, open_gate):
        parent = run(url, "job", "new", "--name", "parent").stdout.strip()
        run(url, "job", "add", parent, "--", f"{hold}; exit 1")
        child = submit(url, "--depends-on-job", parent, "--", "true")
        anyway = submit(url, "--depends-on-job", parent, "--run-on-parent-failure", "--", "true")
        run(url, "job", "submit", parent)
        wait_until(lambda: job_view(url, parent)["state"] == "Running", 60, "the parent to run")
        dispatch_passes(url)
        v = job_view(url, child)
        assert v["state"] == "Queued" and v["reason"] == f"waiting for job {parent} to end"
        open_gate()
        wait(url, parent, code=1)
    wait(url, child, code=1)
    v = job_view(url, child)
    assert v["error_message"] == f"The job failed without starting because its parent job {parent} is Failed."
    assert view(url, f"{child}.1")["start_time"] is None
    wait(url, anyway)
    ok = submit(url, "--", "true")
    wait(url, ok)
    after_ok = submit(url, "--depends-on-job", f"{ok}", "--", "true")
    wait(url, after_ok)
    assert run(url, "job", "new", "--depends-on-job", "99999", code=1).stderr == \
        "error: parent job 99999 does not exist\n"


def test_hold_until_and_modify(url):
    """(A hold's reason is looked at only on an hour-long hold: a few seconds' one may be over
    before the CLI call looking at it reads Redis, under load.)"""
    hold = time.time() + 3.0
    job = submit(url, "--hold-until", iso(hold)[:-5], "--", "true")    # local, no offset
    wait(url, job)
    assert view(url, f"{job}.1")["start_time"] >= hold - 0.05
    # modify while Queued: a priority, then a nearer hold
    job = submit(url, "--hold-until", iso(time.time() + 3600)[:-5], "--", "true")
    assert job_view(url, job)["reason"].startswith("held until ")
    run(url, "job", "modify", job, "--priority", "Highest")
    v = job_view(url, job)
    assert v["priority"] == "Highest" and v["reason"].startswith("held until ")
    dispatch_passes(url)
    assert view(url, f"{job}.1")["state"] == "Queued"
    soon = time.time() + 1.0
    run(url, "job", "modify", job, "--hold-until", iso(soon))
    wait(url, job)
    assert view(url, f"{job}.1")["start_time"] >= soon - 0.05
    assert "can be modified" in run(url, "job", "modify", job, "--priority", "Lowest", code=1).stderr
    run(url, "job", "modify", job, "--priority", "Low", code=2)
    # a hold put on a queued job takes its tasks out of the queue
    job = submit(url, "--group", "nope", "--", "true")
    run(url, "job", "modify", job, "--hold-until", iso(time.time() + 3600))
    assert job_view(url, job)["reason"].startswith("held until ")
    run(url, "job", "cancel", job)


def iso(t: float) -> str:
    """``t`` as ISO 8601 local time with its offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1e6):06d}" + \
        time.strftime("%z", time.localtime(t))


def test_tasks_added_to_a_running_job_are_queued_at_once(url, tmp_path):
    with gate(tmp_path) as (hold, open_gate):
        job = run(url, "job", "new").stdout.strip()
        run(url, "job", "add", job, "--name", "first", "--", hold)
        run(url, "job", "submit", job)
        wait_until(lambda: job_view(url, job)["state"] == "Running", 60, "the job to run")
        t = run(url, "job", "add", job, "--depends-on", "first", "--", "echo added").stdout.strip()
        assert view(url, t)["state"] == "Queued"
        open_gate()
        wait(url, job)
    added = view(url, t)
    assert added["state"] == "Finished" and added["start_time"] >= view(url, f"{job}.1")["end_time"]


def test_submit_with_a_key_is_safe_to_retry(url):
    a = submit(url, "--key", f"k-{os.getpid()}", "--", "true")
    b = submit(url, "--key", f"k-{os.getpid()}", "--", "true")
    assert a == b
    wait(url, a)


def test_finish_stops_what_runs_and_ends_finished(url):
    job = run(url, "job", "new").stdout.strip()
    run(url, "job", "add", job, "--group", "bigmem", "--", "sleep 60")
    run(url, "job", "add", job, "--group", "bigmem", "--cores", "4", "--", "sleep 60")
    run(url, "job", "submit", job)
    wait_until(lambda: view(url, f"{job}.1")["state"] == "Running", 20, "task 1 to run")
    p = run(url, "job", "finish", job, "--message", "good enough", "--json")
    v = json.loads(p.stdout)
    assert v["state"] == "Finished" and v["error_message"] == "good enough"
    t1, t2 = view(url, f"{job}.1"), view(url, f"{job}.2")
    assert t1["state"] == t2["state"] == "Finished"
    assert t1["error_message"] == "good enough" and t1["exit_code"] is not None
    assert t2["start_time"] is None
    # a task of a running job
    job = submit(url, "--", "sleep 60")
    wait_until(lambda: view(url, f"{job}.1")["state"] == "Running", 20, "the task to run")
    assert run(url, "task", "finish", f"{job}.1").stdout.strip() == f"{job}.1 Finished"
    assert view(url, f"{job}.1")["error_message"] == "Finished by user."
    wait(url, job)


# --- owners ------------------------------------------------------------------------------------

def test_only_the_owner_or_an_administrator_may_change_a_job(url, tmp_path):
    """(The job runs until canceled, not ``sleep 30``, which the eight CLI calls before the
    cancel can outlast under load.)"""
    with gate(tmp_path) as (hold, _):
        job = submit(url, "--", hold, user="alice")
        assert job_view(url, job)["owner"] == "alice"
        for args in (("job", "cancel", job), ("job", "requeue", job), ("job", "finish", job),
                     ("job", "modify", job, "--priority", "Highest"), ("task", "cancel", f"{job}.1"),
                     ("task", "requeue", f"{job}.1"), ("task", "finish", f"{job}.1")):
            p = run(url, *args, code=1, user="bob", env={"HPCQ_ADMINS": "bob"})
            assert p.stderr.startswith(
                f"error: only the job's owner or an administrator can {args[1]} {args[0]} {args[2]}"), p.stderr
        assert job_view(url, job)["state"] in ("Queued", "Running")
        run(url, "job", "cancel", job, user=ADMIN)
        assert job_view(url, job)["state"] == "Canceled"
        mine = submit(url, "--", "sleep 30", user="alice")
        run(url, "job", "cancel", mine, user="alice")
