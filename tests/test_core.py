"""Jobs and tasks end to end on a real cluster: a scheduler and two Celery workers of two slots,
real commands, results read back through the Python API."""

from __future__ import annotations

import getpass
import os

import pytest

from tests.support import running_cluster, task_processes, wait_until
from scheduler import JobState, TaskState

pytestmark = pytest.mark.cluster

WORKERS = (("w1@core", 2), ("w2@core", 2))
NODES = {name for name, _ in WORKERS}


@pytest.fixture(scope="module")
def cluster(redis_server):
    with running_cluster(redis_server, workers=WORKERS) as c:
        yield c


@pytest.fixture(scope="module")
def s(cluster):
    return cluster.scheduler_api()


def max_overlap(intervals) -> int:
    """Most intervals [start, end) open at one time."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def test_fifty_tasks_on_two_workers(s):
    job = s.create_job(name="fifty")
    for i in range(1, 51):
        job.add_task(command=f"sleep 0.1; echo task-{i} $HPCQ_TASK_ID", name=f"t{i}")
    s.submit_job(job)
    assert job.wait(timeout=120) == JobState.Finished

    tasks = job.get_task_list()
    assert [str(t.id) for t in tasks] == [f"{job.id}.{i}" for i in range(1, 51)]
    assert job.get_task_id_list() == [f"{job.id}.{i}" for i in range(1, 51)]
    for i, t in enumerate(tasks, 1):
        assert t.state == TaskState.Finished, (t.id, t.state, t.error_message)
        assert t.exit_code == 0
        assert t.error_message == ""
        assert t.output == f"task-{i} {job.id}.{i}\n"
        assert t.name == f"t{i}"
        assert t.node in NODES
        assert t.start_time is not None and t.end_time is not None
        assert job.submit_time <= t.start_time <= t.end_time
        assert t.pid and t.pid > 0
    # both workers took work, and no worker ever ran more tasks at once than it has slots
    assert {t.node for t in tasks} == NODES
    for node in NODES:
        mine = [(t.start_time, t.end_time) for t in tasks if t.node == node]
        assert max_overlap(mine) <= 2, node
    assert max_overlap([(t.start_time, t.end_time) for t in tasks]) >= 2  # ran in parallel

    job.refresh()
    assert job.counts == {"Finished": 50}
    assert job.owner == getpass.getuser()
    assert job.error_message == ""
    assert job.start_time <= min(t.start_time for t in tasks)
    assert job.end_time >= max(t.end_time for t in tasks)
    assert s.get_job(job.id).state == JobState.Finished
    assert job.id in [j.id for j in s.get_job_list(state="Finished")]


def test_failing_command_fails_task_and_job(s):
    job = s.create_job(name="fails")
    ok = job.add_task(command="echo fine")
    bad = job.add_task(command="echo boom >&2; exit 3")
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Failed

    ok.refresh()
    bad.refresh()
    assert ok.state == TaskState.Finished and ok.exit_code == 0 and ok.output == "fine\n"
    assert bad.state == TaskState.Failed
    assert bad.exit_code == 3
    assert bad.error_message == "The task exited with code 3."
    assert bad.output == "boom\n"
    job.refresh()
    assert job.counts == {"Finished": 1, "Failed": 1}
    assert job.error_message  # says why the job failed
    assert job.end_time >= bad.end_time


def test_command_killed_by_signal_fails(s):
    job = s.create_job(name="killed")
    t = job.add_task(command="kill -9 $$")
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Failed
    t.refresh()
    assert t.state == TaskState.Failed
    assert t.exit_code == -9
    assert t.error_message == "The task was killed by signal SIGKILL."


def test_stdio_files_env_and_work_dir(s, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "in.txt").write_text("from-stdin\n")
    job = s.create_job(name="stdio")
    files = job.add_task(
        command='cat; echo "$GREETING"; echo "$HPCQ_JOB_ID $HPCQ_TASK_ID"; pwd -P; echo to-stderr >&2',
        work_dir=str(work), env={"GREETING": "hello world"}, stdin=str(tmp_path / "in.txt"),
        stdout="out.txt", stderr=str(tmp_path / "err.txt"))
    combined = job.add_task(command="echo out; echo err >&2")
    stdout_only = job.add_task(command="echo to-file; echo to-output >&2",
                               stdout=str(tmp_path / "only.txt"))
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Finished

    files.refresh()
    assert files.state == TaskState.Finished
    out = (work / "out.txt").read_text()  # a relative stdout path is under the work_dir
    assert out == f"from-stdin\nhello world\n{job.id} {job.id}.1\n{os.path.realpath(work)}\n"
    assert (tmp_path / "err.txt").read_text() == "to-stderr\n"
    assert files.output == ""  # both streams went to files
    assert files.work_dir == str(work)
    assert files.env == {"GREETING": "hello world"}

    combined.refresh()
    assert combined.output == "out\nerr\n"
    stdout_only.refresh()
    assert (tmp_path / "only.txt").read_text() == "to-file\n"
    assert stdout_only.output == "to-output\n"


def test_a_command_inherits_no_descriptor_and_no_ignored_signal_of_its_worker(s):
    """Started with posix_spawn (worker/command.py): only stdin, stdout and stderr are open in
    it, no signal is blocked or ignored, and it leads a session of its own."""
    job = s.create_job(name="clean-start")
    t = job.add_task(command="ls /proc/self/fd; grep -E '^(SigBlk|SigIgn)' /proc/self/status; "
                             "ps -o sid= -p $$; echo $$")
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Finished
    t.refresh()
    lines = t.output.split("\n")
    # ls's own directory descriptor is the 3
    assert lines[:4] == ["0", "1", "2", "3"] and lines[4].startswith("SigBlk"), t.output
    assert lines[4].split() == ["SigBlk:", "0000000000000000"], t.output
    # nothing ignored (Python ignores SIGPIPE and SIGXFSZ: reset), except glibc's two internal
    # signals (32, 33), which its posix_spawn leaves ignored, as CPython's own subprocess does
    # when it uses posix_spawn; a program of glibc's installs their handlers itself
    assert lines[5].split()[0] == "SigIgn:" and int(lines[5].split()[1], 16) & ~0x180000000 == 0, t.output
    assert lines[6].strip() == lines[7].strip(), "the command leads its own session"


def test_output_keeps_head_and_tail_with_a_marker(s):
    """Redis keeps the first and last halves of HPCQ_OUTPUT_LIMIT (16384 by default) with the
    size cut between them; a small output is kept whole."""
    job = s.create_job(name="big-output")
    t = job.add_task(command="head -c 10000 /dev/zero | tr '\\0' x; head -c 30000 /dev/zero | tr '\\0' y")
    small = job.add_task(command="head -c 16384 /dev/zero | tr '\\0' z")
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Finished
    t.refresh()
    assert t.output == "x" * 8192 + "\n[... 23.6 kB cut ...]\n" + "y" * 8192
    assert small.refresh().output == "z" * 16384


def test_missing_work_dir_fails_cleanly(s, cluster, tmp_path):
    missing = str(tmp_path / "no" / "such" / "dir")
    job = s.create_job(name="no-workdir")
    t = job.add_task(command="echo never", work_dir=missing)
    nostdin = job.add_task(command="cat", stdin=str(tmp_path / "absent-input.txt"))
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Failed
    t.refresh()
    assert t.state == TaskState.Failed
    assert missing in t.error_message, t.error_message
    assert t.exit_code is None
    assert t.output == ""
    nostdin.refresh()
    assert nostdin.state == TaskState.Failed
    assert str(tmp_path / "absent-input.txt") in nostdin.error_message, nostdin.error_message

    # The workers are still alive, still registered, and run the next tasks (on both nodes,
    # the one that failed to start the command included).
    for name in NODES:
        assert cluster.procs[name].poll() is None, f"worker {name} exited"
    failed_on = t.node
    assert failed_on in NODES
    job2 = s.create_job(name="after-no-workdir")
    for _ in range(8):
        job2.add_task(command="sleep 0.3; echo alive")
    s.submit_job(job2)
    assert job2.wait(timeout=60) == JobState.Finished
    nodes = {x.node for x in job2.get_task_list()}
    assert failed_on in nodes
    assert all(x.output == "alive\n" for x in job2.get_task_list())
    for name in NODES:
        assert cluster.procs[name].poll() is None, f"worker {name} exited"


def test_task_processes_end_with_the_task(s, cluster):
    """A command that leaves a background process behind: the task still ends when its main
    process exits, and nothing of it outlives the task."""
    job = s.create_job(name="orphans")
    t = job.add_task(command="sleep 60 & echo started")
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Finished
    t.refresh()
    assert t.output == "started\n"
    tid = str(t.id)

    wait_until(lambda: not task_processes(cluster.marker, tid), 10, f"the processes of task {tid} to be gone")
