"""``hpcq up``: an embedded Redis, a scheduler and a worker as child processes; a job submitted
through the API against the URL it prints finishes; SIGTERM or SIGINT stops everything, a task
still running included, and no process of it is left."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import redis

from tests.support.procs import cmdlines
from tests.support.up import Up
from tests.support import MARKER_VAR, assert_no_leftovers, describe, free_port, new_marker, wait_until
from scheduler import JobState, Scheduler, TaskState

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_up_runs_a_job_and_stops_leaving_nothing(sig, tmp_path):
    marker = new_marker()
    port = free_port()
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCQ_")}
    env.update({MARKER_VAR: marker, "PYTHONUNBUFFERED": "1", "HPCQ_TASK_CANCEL_GRACE_PERIOD": "2"})
    up = Up([sys.executable, "-m", "scheduler.cli", "up", "--port", str(port), "--state-dir", str(state_dir), "--workers", "1",
             "--concurrency", "2"], env)
    try:
        url = wait_until(up.url, 60, "hpcq up to print the Redis URL")
        assert url == f"redis://127.0.0.1:{port}/0"
        assert any(f"HPCQ_REDIS_URL={url}" in line for line in up.out), up.out

        s = Scheduler.connect(url)
        job = s.create_job(name="up")
        t1 = job.add_task(command="echo up-$HPCQ_TASK_ID")
        t2 = job.add_task(command="echo second")
        s.submit_job(job)
        assert job.wait(timeout=90) == JobState.Finished
        assert t1.refresh().output == f"up-{job.id}.1\n"
        assert t2.refresh().output == "second\n"

        # a task still running when up is stopped must not survive it either
        busy = s.create_job(name="still-running")
        sleeper = busy.add_task(command="sleep 300")
        s.submit_job(busy)
        wait_until(lambda: sleeper.refresh().state == TaskState.Running, 30, "the sleep to run")
        # Running is recorded just before the command is spawned: wait for the process itself
        wait_until(lambda: "sleep 300" in " ".join(cmdlines(up.tree())), 30, "the sleep process")

        tree = up.tree()
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        assert "redis-server" in names, describe(tree)
        assert "scheduler" in names and "worker" in names, describe(tree)
        assert any(p.cmdline()[:1] == ["sleep"] or "sleep 300" in " ".join(p.cmdline()) for p in tree), \
            describe(tree)
        assert any(x.name.startswith("appendonly") for x in state_dir.iterdir()), \
            list(state_dir.iterdir())   # the embedded Redis keeps its data as AOF there

        t0 = time.monotonic()
        up.proc.send_signal(sig)
        code = up.proc.wait(timeout=90)
        stopped_in = time.monotonic() - t0
        assert code == 0, "".join(up.err)
        assert_no_leftovers(marker, timeout=10, extra=tree)
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        print(f"stopped in {stopped_in:.1f}s")
        assert stopped_in < 60
    finally:
        up.kill()
        assert_no_leftovers(marker, timeout=5)


def test_up_in_a_directory_with_a_scheduler_folder_runs_the_installed_hpcq(tmp_path):
    """``hpcq up`` started where a ``scheduler/`` and a ``worker/`` folder lie (a clone of the
    repository, say) runs the installed hpcq: its daemons do not import what is in the working
    directory (issue 23, item 3)."""
    cwd = tmp_path / "clone"
    tripped = tmp_path / "imported-from-the-working-directory"
    for pkg in ("scheduler", "scheduler/cli", "worker"):
        (cwd / pkg).mkdir(parents=True)
        (cwd / pkg / "__init__.py").write_text(
            f"open({str(tripped)!r}, 'a').write({pkg!r} + '\\n')\n"
            f"raise SystemExit('the {pkg} of the working directory was imported')\n")
    marker = new_marker()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCQ_") and k != "PYTHONPATH"}
    env.update({MARKER_VAR: marker, "PYTHONUNBUFFERED": "1"})
    hpcq_bin = os.path.join(os.path.dirname(sys.executable), "hpcq")
    up = Up([hpcq_bin, "up", "--port", str(free_port()), "--state-dir", str(tmp_path / "state"),
             "--workers", "1", "--concurrency", "1"], env, cwd=cwd)
    try:
        url = wait_until(up.url, 60, "hpcq up to print the Redis URL")
        s = Scheduler.connect(url)
        job = s.create_job(name="cwd")
        task = job.add_task(command="pwd")
        s.submit_job(job)
        assert job.wait(timeout=90) == JobState.Finished, "".join(up.err)
        assert task.refresh().output == f"{os.getcwd()}\n"   # the submitter's directory
        assert not tripped.exists(), tripped.read_text()
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=90) == 0, "".join(up.err)
        assert_no_leftovers(marker, timeout=10, extra=up.tree())
    finally:
        up.kill()
        assert_no_leftovers(marker, timeout=5)
