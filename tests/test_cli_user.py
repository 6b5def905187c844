"""What a cluster user expects of the command line (issue 12), through the CLI on a real cluster:
commands run as typed after ``--``, the submitter's directory and (on request) environment,
the whole output with a visible cut in Redis, Ctrl-C during a cancel, HPC Pack's cancel texts
without a message, empty jobs refused, and every cancel path's effect on the job's end state
and ``job wait``'s exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from scheduler import JobState, NotFound, Scheduler
from tests.support import hpcq, running_cluster, wait_until

pytestmark = pytest.mark.cluster

LIMIT = 1000


@pytest.fixture(scope="module")
def cluster(redis_server):
    env = {"HPCQ_OUTPUT_LIMIT": str(LIMIT), "HPCQ_TASK_CANCEL_GRACE_PERIOD": "2"}
    with running_cluster(redis_server, workers=(("w1@user", 3), ("w2@user", 3)), env=env) as c:
        yield c


@pytest.fixture(scope="module")
def url(cluster):
    return cluster.redis_url


@pytest.fixture(scope="module")
def api(url):
    return Scheduler.connect(url)


def run(url, *args, code=0, **kw):
    p = hpcq(*args, redis_url=url, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    return p


def submit_and_wait(url, *args, code=0, **kw) -> str:
    """``job submit ARGS``, then ``job wait``; returns the job id."""
    job = run(url, "job", "submit", *args, **kw).stdout.strip()
    run(url, "job", "wait", job, "--timeout", "60", code=code)
    return job


def view(url, tid) -> dict:
    return json.loads(run(url, "task", "view", tid, "--json").stdout)


# --- 1. the words after -- reach the task as the user's shell gave them -----------------------

@pytest.mark.parametrize("words,expected", [
    (["python3", "-c", 'print("a  b")'], "a  b\n"),
    (["echo", "it's"], "it's\n"),
    (["printf", "%s|", "two words", "*", "$HOME"], "two words|*|$HOME|"),
    (["echo a | tr a b"], "b\n"),                 # one word: a shell command line, as before
    (["echo x > /dev/null; echo y"], "y\n"),
])
def test_words_after_dashdash_run_as_typed(url, words, expected):
    job = submit_and_wait(url, "--", *words)
    assert view(url, f"{job}.1")["output"] == expected


def test_sweep_substitution_in_quoted_words(url):
    job = submit_and_wait(url, "--sweep", "1-3", "--", "printf", "%s\\n", "v* and *")
    outs = [view(url, f"{job}.1.{i}")["output"] for i in (1, 2, 3)]
    assert outs == ["v1 and 1\n", "v2 and 2\n", "v3 and 3\n"]


# --- 2. the submitter's directory and environment ------------------------------------------------

def test_working_dir_and_relative_paths_are_the_submitters(url, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "in.txt").write_text("from stdin\n")
    job = submit_and_wait(url, "--stdout", "out.txt", "--", "pwd", cwd=sub)
    assert (sub / "out.txt").read_text() == f"{sub}\n"
    t = view(url, f"{job}.1")
    assert t["work_dir"] == str(sub) and t["stdout"] == str(sub / "out.txt")
    # job add: relative --workdir against the current directory, the files against --workdir
    j = run(url, "job", "new", cwd=tmp_path).stdout.strip()
    run(url, "job", "add", j, "--workdir", "sub", "--stdin", "in.txt", "--stderr", "err.txt",
        "--", "cat; ls missing-file", cwd=tmp_path)
    run(url, "job", "submit", j)
    run(url, "job", "wait", j, "--timeout", "60", code=1)   # ls fails
    t = view(url, f"{j}.1")
    assert (t["work_dir"], t["stdin"], t["stderr"]) == (str(sub), str(sub / "in.txt"), str(sub / "err.txt"))
    assert t["output"] == "from stdin\n"
    assert "missing-file" in (sub / "err.txt").read_text()
    text = run(url, "task", "view", f"{j}.1").stdout
    assert str(sub / "in.txt") in text and str(sub / "err.txt") in text


def test_export_env(url, tmp_path):
    env = {"HPCQ_TEST_PRIVATE": "not for tasks", "MY_SETTING": "from the submitter"}
    show = ["sh", "-c", 'echo "[$MY_SETTING][$HPCQ_TEST_PRIVATE][${HPCQ_REDIS_URL:-none}][$OVER]"']
    job = submit_and_wait(url, "--", *show, env=env)
    assert view(url, f"{job}.1")["output"] == "[][][none][]\n"         # HPC Pack: not exported
    job = submit_and_wait(url, "--export-env", "--env", "OVER=task", "--", *show,
                          env={**env, "OVER": "submitter"})
    t = view(url, f"{job}.1")
    assert t["output"] == "[from the submitter][][none][task]\n"
    assert not [k for k in t["env"] if k.startswith("HPCQ_")]
    assert url not in json.dumps(t["env"])
    j = run(url, "job", "new").stdout.strip()
    run(url, "job", "add", j, "--export-env", "--", *show, env=env)
    assert view(url, f"{j}.1")["env"]["MY_SETTING"] == "from the submitter"
    run(url, "job", "cancel", j)


# --- 3. the whole output ------------------------------------------------------------------------

def test_output_cut_with_marker_and_whole_output_printed(url):
    script = "import sys\nfor i in range(20000): print(f'line {i:05d}')\nprint('to stderr', file=sys.stderr)"
    job = submit_and_wait(url, "--", "python3", "-c", script)
    t = view(url, f"{job}.1")
    whole = "".join(f"line {i:05d}\n" for i in range(20000)) + "to stderr\n"
    kept = t["output"]
    assert kept.startswith(whole[:LIMIT // 2]) and kept.endswith(whole[-(LIMIT // 2):])
    cut = len(whole) - 2 * (LIMIT // 2)
    assert f"\n[... {cut / 1000:.1f} kB cut ...]\n" in kept, kept[LIMIT // 2 - 50:LIMIT // 2 + 80]
    p = run(url, "task", "output", f"{job}.1")
    assert p.stdout == whole
    # stdout to a file: the file is its stdout, the spool its stderr
    job2 = submit_and_wait(url, "--stdout", "/dev/null", "--", "echo out; echo err >&2")
    p = run(url, "task", "output", f"{job2}.1")
    assert (p.stdout, p.stderr) == ("", "err\n")


def test_output_follow(url, tmp_path):
    gate = tmp_path / "gate"
    job = run(url, "job", "submit", "--", f"echo first; while [ ! -e {gate} ]; do sleep 0.05; done; "
              "echo second; sleep 0.3; echo third").stdout.strip()
    follower = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "task", "output", f"{job}.1",
                                 "--follow"], env=dict(os.environ, HPCQ_REDIS_URL=url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follower.stdout.readline() == "first\n"      # live, while the task runs
        assert view(url, f"{job}.1")["state"] == "Running"
        gate.touch()
        out, err = follower.communicate(timeout=60)
        assert (out, follower.returncode) == ("second\nthird\n", 0), err
    finally:
        follower.kill()
        follower.wait()
    assert view(url, f"{job}.1")["state"] == "Finished"


def test_output_of_a_task_not_started_or_a_sweep(url):
    j = run(url, "job", "new").stdout.strip()
    run(url, "job", "add", j, "--sweep", "1-2", "--", "echo *")
    p = run(url, "task", "output", f"{j}.1.1", code=1)
    assert p.stderr.startswith("error: task") and "has not started" in p.stderr
    p = run(url, "task", "output", f"{j}.1", code=2)
    assert "is a sweep" in p.stderr
    run(url, "job", "cancel", j)


# --- 5. cancel and wait edge cases ----------------------------------------------------------------

def test_ctrl_c_while_cancel_waits(url, api):
    job = run(url, "job", "submit", "--", "trap '' TERM; echo up; sleep 60").stdout.strip()
    tid = f"{job}.1"
    wait_until(lambda: api.get_task(tid).output or api.get_task(tid).state.value == "Running"
               and api.get_task(tid).pid, 30, "the task to run")
    proc = subprocess.Popen([sys.executable, "-m", "scheduler.cli", "task", "cancel", tid,
                             "--grace", "4"], env=dict(os.environ, HPCQ_REDIS_URL=url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith(f"canceling task {tid}: 1 task still stopping"), line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, (out, err)
        assert f"cancel recorded; task {tid} is still stopping" in err
        assert "aborted" not in err
    finally:
        proc.kill()
        proc.wait()
    # the cancel went on: SIGKILL after the grace period, the task Failed
    wait_until(lambda: api.get_task(tid).state.value == "Failed", 30, "the cancel to complete")


def test_cancel_without_message_records_hpc_packs_text(url, api):
    job = run(url, "job", "submit", "--", "echo up; sleep 60").stdout.strip()
    wait_until(lambda: api.get_task(f"{job}.1").pid, 30, "the task to run")
    run(url, "task", "cancel", f"{job}.1", "--force")
    assert view(url, f"{job}.1")["error_message"] == "The task has been canceled by the user during execution."
    j = run(url, "job", "new").stdout.strip()
    run(url, "job", "add", j, "--", "true")
    run(url, "task", "cancel", f"{j}.1")
    assert view(url, f"{j}.1")["error_message"] == "Canceled by user."


def test_job_with_no_tasks_is_refused(url, api):
    j = run(url, "job", "new").stdout.strip()
    p = run(url, "job", "submit", j, code=1)
    assert p.stderr == f"error: job {j} has no tasks: add one first (hpcq job add {j} -- COMMAND)\n"
    assert api.get_job(j).state == JobState.Configuring
    run(url, "job", "cancel", j)


# --- 6. every cancel path and the job's end state -----------------------------------------------

def _running(api, tids):
    wait_until(lambda: all(api.get_task(t).pid for t in tids), 30, f"{tids} to run")


@pytest.mark.parametrize("path", ["task", "sweep master", "sweep instance", "job"])
def test_cancel_paths_end_state_and_wait_exit(url, api, path):
    """A task killed while running fails its job; so does a sweep whose instances were killed
    while running, whether its master or one instance was canceled; a job cancel cancels it.
    ``job wait`` exits 1 for each, so ``job wait && next`` stops."""
    if path == "task":
        job = run(url, "job", "submit", "--", "sleep 60").stdout.strip()
        _running(api, [f"{job}.1"])
        run(url, "task", "cancel", f"{job}.1", "--force")
        expected, task_state = "Failed", "Failed"
    elif path == "sweep instance":      # instance 2 runs long, the others end at once
        job = run(url, "job", "submit", "--sweep", "1-3", "--",
                  "if [ * = 2 ]; then sleep 60; fi").stdout.strip()
        _running(api, [f"{job}.1.2"])
        run(url, "task", "cancel", f"{job}.1.2", "--force")
        expected, task_state = "Failed", "Failed"
    else:
        job = run(url, "job", "submit", "--sweep", "1-4", "--", "sleep 60").stdout.strip()
        _running(api, [f"{job}.1.{i}" for i in (1, 2, 3, 4)])
        if path == "job":
            run(url, "job", "cancel", job, "--force")
        else:
            run(url, "task", "cancel", f"{job}.1", "--force")
        expected, task_state = ("Canceled" if path == "job" else "Failed"), "Canceled"
        for i in (1, 2, 3, 4):
            assert api.get_task(f"{job}.1.{i}").state.value == "Failed"
    p = run(url, "job", "wait", job, "--timeout", "60", code=1)
    assert f"job {job} {expected}" in p.stdout
    assert api.get_job(job).state.value == expected
    assert api.get_task(f"{job}.1").state.value == task_state
    if path == "sweep master":
        assert api.get_job(job).error_message == (
            f"The job failed because task {job}.1 was canceled with 4 failed instances.")
        # a requeue of the sweep takes the failure back: the job runs again and can finish
        run(url, "task", "requeue", f"{job}.1")
        assert api.get_job(job).state.value in ("Queued", "Running")
        assert "failed_sweeps" not in api.store.task(f"{job}.1")
        run(url, "job", "cancel", job, "--force")


def test_sweep_canceled_before_any_instance_ran_does_not_fail_the_job(url, api):
    j = run(url, "job", "new").stdout.strip()
    run(url, "job", "add", j, "--name", "gate", "--", "sleep 60")
    run(url, "job", "add", j, "--depends-on", "gate", "--sweep", "1-3", "--", "true")
    run(url, "job", "add", j, "--", "true")
    run(url, "job", "submit", j)
    _running(api, [f"{j}.1"])
    run(url, "task", "cancel", f"{j}.2")      # queued behind its dependency: nothing killed
    run(url, "task", "cancel", f"{j}.1")      # a plain task killed while running: Failed
    run(url, "job", "wait", j, "--timeout", "60", code=1)
    job = api.get_job(j)
    assert job.state == JobState.Failed and job.error_message == "1 task(s) failed."


# --- 7. reprs and ids of another job --------------------------------------------------------------

def test_reprs_and_task_of_another_job(url, api):
    job = api.submit({"command": "echo hi", "name": "greet"}, name="hello")
    job.wait(timeout=60)
    assert repr(job) == f"<Job {job.id} 'hello' Finished, 1 task: Finished 1>"
    task = job.get_task(1)
    r = repr(task)
    assert r.startswith(f"<Task {job.id}.1 'greet' Finished exit 0 on ") and r.endswith("'echo hi'>")
    other = api.submit({"command": "true"})
    with pytest.raises(NotFound) as exc:
        other.get_task(f"{job.id}.1.17")
    assert f"belongs to job {job.id}, not to job {other.id}" in str(exc.value)
    assert repr(exc.value).startswith('NotFound("task ')
    assert repr(api) == f"<Scheduler {url}>"
    other.wait(timeout=60)

