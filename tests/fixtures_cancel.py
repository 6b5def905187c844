"""Shared pieces of the cancel / requeue / Celery-tools test modules (issue 3): a module-scoped
real cluster with a short cancel grace period, and task commands written as shell scripts that
leave evidence in files (when they started, how often they ran, when SIGTERM reached them).

Every command the tests run lives in a per-test directory ``d``:
  d/runs     one line per run of the command
  d/started  time the (latest) run started
  d/term     time a run received SIGTERM (written by its trap)
  d/gate     created by the test to let a holding command finish"""

from __future__ import annotations

import shlex
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.support import processes, running_cluster, wait_until
from tests.support.wait import stays  # noqa: F401  (the cancel test modules import it from here)
from tests.support.flower import Flower

#: The cluster's cancel grace period (setting HPCQ_TASK_CANCEL_GRACE_PERIOD), in seconds.
GRACE = 3.0

class _CancelText(str):
    """HPC Pack's cancel text: ``.format(m)`` adds " Message: m", or nothing when m is empty."""

    def format(self, message=""):
        return f"{self} Message: {message}" if message else str(self)


RUNNING_MSG = _CancelText("The task has been canceled by the user during execution.")
QUEUED_MSG = _CancelText("Canceled by user.")
TASK_REFUSED = "Tasks in the {} state cannot be canceled."
JOB_REFUSED = "Jobs in the {} state cannot be canceled."
TOO_LONG = "Cancel message should not contain more than 128 characters."
NOT_RERUNNABLE = "The task could not be requeued because it is not marked as rerunnable."


@pytest.fixture(scope="module")
def cl(redis_server):
    """A real cluster for the module: the session's Redis flushed, a scheduler and one worker
    with two slots, this family's grace period; ``cl.api`` is a Scheduler on it.  At exit
    nothing the cluster started (commands included) may be left running."""
    with running_cluster(redis_server, workers=(("w1@hpcq-cancel", 2),),
                         env={"HPCQ_TASK_CANCEL_GRACE_PERIOD": str(GRACE)}) as cluster:
        cluster.api = cluster.scheduler_api()
        yield cluster


class Box:
    """A directory of evidence for one task command."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.marker = f"hpcq-cancel-marker-{uuid.uuid4().hex[:12]}"

    def f(self, name: str) -> Path:
        return self.path / name

    def has(self, name: str) -> bool:
        return self.f(name).exists()

    def runs(self) -> int:
        p = self.f("runs")
        return len(p.read_text().splitlines()) if p.exists() else 0

    def time_of(self, name: str) -> float:
        return float(self.f(name).read_text().split()[0])

    def open_gate(self) -> None:
        self.f("gate").touch()

    def script(self, body: str, name: str = "cmd.sh") -> str:
        """Write a /bin/sh script and return the command that runs it as the task's main
        process (``exec``, so the exit status recorded is the script's own)."""
        path = self.f(name)
        path.write_text("#!/bin/sh\nD=%s\nM=%s\nPY=%s\n%s\n" % (
            shlex.quote(str(self.path)), shlex.quote(self.marker), shlex.quote(sys.executable), body))
        path.chmod(0o755)
        return f"exec /bin/sh {shlex.quote(str(path))} {self.marker}"

    # --- the commands the tests use ---------------------------------------------------------
    def hold(self, on_term: str = "exit", first_run_only: bool = False) -> str:
        """Record a run, then wait for the gate.  On SIGTERM: ``exit`` records the time and
        exits 5 at once; ``ignore`` records the time and goes on waiting (killed at the grace);
        ``none`` leaves SIGTERM's default action (the shell dies).  ``first_run_only``: a
        second run exits 0 at once (for requeue tests)."""
        trap = {
            "exit": "trap 'date +%s.%N >> \"$D/term\"; exit 5' TERM",
            "ignore": "trap 'date +%s.%N >> \"$D/term\"' TERM",
            "none": "",
        }[on_term]
        again = 'if [ -f "$D/runs" ]; then echo run >> "$D/runs"; exit 0; fi\n' if first_run_only else ""
        return self.script(f"""{trap}
{again}echo run >> "$D/runs"
date +%s.%N > "$D/started"
while [ ! -f "$D/gate" ]; do sleep 0.05; done
exit 0""")

    def quick(self, code: int = 0) -> str:
        """Record a run and exit with ``code`` at once."""
        return self.script(f'echo run >> "$D/runs"\nexit {code}')

    def fail_first(self, code: int = 3, hold_second: bool = False) -> str:
        """First run exits ``code``; a later run exits 0 (after the gate if ``hold_second``)."""
        second = 'while [ ! -f "$D/gate" ]; do sleep 0.05; done\n' if hold_second else ""
        return self.script(f"""if [ -f "$D/runs" ]; then
  echo run >> "$D/runs"
  {second}exit 0
fi
echo run >> "$D/runs"
exit {code}""")

    def tree(self) -> str:
        """A process tree carrying the marker: a child, a grandchild, a child in a session of
        its own that ignores SIGTERM, and a double-forked daemon (reparented away from the
        command).  Writes one ready-file per process, then waits for TERM (exit 5)."""
        py = "import os,signal,sys,time; {pre}open(sys.argv[2],'w').write(str(os.getpid())); time.sleep(300)"
        plain = py.format(pre="")
        deaf = py.format(pre="signal.signal(signal.SIGTERM, signal.SIG_IGN); ")
        q = shlex.quote
        return self.script(f"""trap 'date +%s.%N >> "$D/term"; exit 5' TERM
echo run >> "$D/runs"
"$PY" -c {q(plain)} "$M" "$D/ready-child" &
sh -c '"$0" -c "$1" "$2" "$3" & wait' "$PY" {q(plain)} "$M" "$D/ready-grandchild" &
setsid "$PY" -c {q(deaf)} "$M" "$D/ready-setsid" &
setsid sh -c '"$0" -c "$1" "$2" "$3" &' "$PY" {q(plain)} "$M" "$D/ready-daemon" &
while [ ! -f "$D/gate" ]; do sleep 0.05; done""")

    def alive(self) -> list[psutil.Process]:
        """Live processes with this box's marker as an argument."""
        return processes(arg=self.marker)


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path / "box")


@pytest.fixture
def boxes(tmp_path):
    made = {}

    def get(name: str) -> Box:
        if name not in made:
            made[name] = Box(tmp_path / name)
        return made[name]
    return get


def state_of(api, task_id) -> str:
    return api.get_task(task_id).state.value


def wait_state(api, task_id, states, timeout: float = 30.0):
    """Wait until task ``task_id`` is in one of ``states``; return the task."""
    states = {states} if isinstance(states, str) else set(states)
    wait_until(lambda: state_of(api, task_id) in states, timeout,
               f"task {task_id} to be {'/'.join(sorted(states))} (is {state_of(api, task_id)})")
    return api.get_task(task_id)


def wait_job(api, job_id, states, timeout: float = 30.0):
    states = {states} if isinstance(states, str) else set(states)
    wait_until(lambda: api.get_job(job_id).state.value in states, timeout,
               f"job {job_id} to be {'/'.join(sorted(states))}")
    return api.get_job(job_id)


def wait_file(box: Box, name: str, timeout: float = 30.0) -> None:
    """Until the command has written ``name``: it exists and holds something (the shell creates
    a file for ``date > f`` before ``date`` writes to it)."""
    def written():
        try:
            return box.f(name).stat().st_size > 0
        except FileNotFoundError:
            return False
    wait_until(written, timeout, f"{box.f(name)} to be written")


def submit(api, *commands, name: str = "", **task_fields):
    """A job with one task per command (a command may be a (command, fields) pair), submitted."""
    job = api.create_job(name=name)
    for c in commands:
        if isinstance(c, tuple):
            job.add_task(c[0], **c[1])
        else:
            job.add_task(c, **task_fields)
    return job.submit()


def job_hash(r, job_id) -> dict:
    return r.hgetall(f"hpcq:job:{job_id}")


def task_hash(r, task_id) -> dict:
    return r.hgetall(f"hpcq:task:{task_id}")



@pytest.fixture(scope="module")
def flower(cl):
    f = Flower(cl)
    try:
        wait_until(lambda: f.request("GET", "/healthcheck")[0] == 200, 60, "Flower to answer")
        # Flower only knows the events it received after it subscribed (its /healthcheck
        # answers before that): run probe tasks until one shows up in Flower as SUCCESS.
        deadline = time.monotonic() + 60
        while True:
            probe = Box(Path(cl.logdir) / f"flower-probe-{time.monotonic_ns()}")
            job = submit(cl.api, probe.quick())
            t = wait_state(cl.api, f"{job.id}.1", "Finished")
            try:
                f.wait_state(t.celery_id, "SUCCESS", timeout=3)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        yield f
    finally:
        f.stop()
