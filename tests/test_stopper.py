"""``worker.supervisor.Stopper``, the one stop ladder (SIGTERM, grace, SIGKILL, confirm gone),
on real processes and without Redis or Celery.

Each scenario runs in a forked child that is a subreaper, as a worker's pool process is (so an
orphan comes back to it and the default tree, "every descendant of this process", is the
command's tree), and reports what it saw as JSON; the test then checks that no process carrying
the scenario's marker is left anywhere on the host."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
import traceback
import uuid

import psutil
import pytest

from worker import markers, subreaper, supervisor
from worker.supervisor import Rung, Stopper

pytestmark = pytest.mark.cluster

MARK = "HPCQ_TEST_STOPPER"


def in_subreaper(scenario, timeout: float = 30.0) -> dict:
    """Run ``scenario(marker)`` in a forked subreaper child; return the dict it returned."""
    marker = uuid.uuid4().hex
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child: never returns
        code = 0
        try:
            os.close(r)
            subreaper.die_with_parent(signal.SIGKILL)
            subreaper.become_subreaper()
            try:
                out = {"ok": scenario(marker)}
            except BaseException:
                out = {"error": traceback.format_exc()}
                code = 1
            supervisor.kill_now()                     # nothing may outlive the scenario
            with os.fdopen(w, "w") as f:
                json.dump(out, f)
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"the scenario took over {timeout} s")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    out = json.loads(data or b'{"error": "the scenario died"}')
    assert "error" not in out, out["error"]
    left = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == marker and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.Error:
            pass
    for p in left:
        p.kill()
    assert not left, f"processes left: {[p.pid for p in left]}"
    return out["ok"]


def spawn(marker: str, script: str, **kw) -> subprocess.Popen:
    """``sh -c script`` in a session of its own, as ``worker.command.spawn`` starts a command."""
    return subprocess.Popen(["/bin/sh", "-c", script], env=dict(os.environ, **{MARK: marker}),
                            start_new_session=True, **kw)


def wait_file(path: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                text = f.read()
            if text.endswith("\n"):
                return text.strip()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError(f"{path} never written")


def supervise(proc: subprocess.Popen, stopper: Stopper, begin=None, at: float = 0.0) -> dict:
    """The attempt's loop in small: wait on the root's pidfd and on ``next_wake()``, reap the
    root when it exits, call ``begin(stopper)`` once ``at`` seconds have passed, step, until the
    root is reaped and ``done()``.  Returns the exit status and how long it took."""
    fd = os.pidfd_open(proc.pid)
    t0 = time.monotonic()
    status = None
    try:
        while status is None or not stopper.done():
            wakes = [w for w in (stopper.next_wake(), t0 + at if begin else None) if w]
            timeout = max(0.0, min(wakes) - time.monotonic()) if wakes else 5.0
            ready, _, _ = select.select([] if status is not None else [fd], [], [], timeout)
            if ready:
                _, status = os.waitpid(proc.pid, 0)
            if begin and time.monotonic() >= t0 + at:
                begin(stopper)
                begin = None
            stopper.step()
            assert time.monotonic() - t0 < 20, "the ladder never ended"
    finally:
        os.close(fd)
    return {"code": os.waitstatus_to_exitcode(status), "took": time.monotonic() - t0}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- the attempt's ladder: SIGTERM to the whole tree, grace, SIGKILL ------------------------------

def test_a_shell_that_traps_term_exits_on_it_within_the_grace(tmp_path):
    def scenario(marker):
        f = str(tmp_path / "term")
        proc = spawn(marker, f"trap 'echo term > {f}; exit 3' TERM; "
                             f"echo up > {f}.up; while :; do sleep 0.05; done")
        wait_file(f + ".up")
        got = supervise(proc, Stopper(proc.pid), lambda s: s.begin(grace=10))
        return {**got, "term": wait_file(f, 1)}

    out = in_subreaper(scenario)
    assert out["term"] == "term"
    assert out["code"] == 3                   # its own exit, not a SIGKILL
    assert out["took"] < 3                    # well before the 10 s grace


def test_a_process_that_ignores_term_is_killed_when_the_grace_is_up(tmp_path):
    def scenario(marker):
        proc = spawn(marker, f"trap '' TERM; echo up > {tmp_path}/up; sleep 30")
        wait_file(f"{tmp_path}/up")
        return supervise(proc, Stopper(proc.pid), lambda s: s.begin(grace=0.5))

    out = in_subreaper(scenario)
    assert out["code"] == -signal.SIGKILL
    assert 0.5 <= out["took"] < 3


def test_a_double_fork_into_its_own_session_is_stopped_too(tmp_path):
    """The grandchild leaves the command's session and process group, and its parent exits, so
    it is an orphan reparented to the subreaper: it is still stopped, with SIGKILL once the grace
    is up since it ignores SIGTERM."""
    def scenario(marker):
        d = str(tmp_path)
        proc = spawn(marker, f"(setsid sh -c 'trap \"\" TERM; echo $$ > {d}/daemon; exec sleep 30' &); "
                             f"trap 'exit 0' TERM; echo up > {d}/up; while :; do sleep 0.05; done")
        wait_file(f"{d}/up")
        daemon = int(wait_file(f"{d}/daemon"))
        p = psutil.Process(daemon)
        before = {"sid": os.getsid(daemon), "ppid": p.ppid()}
        got = supervise(proc, Stopper(proc.pid), lambda s: s.begin(grace=0.5))
        return {**got, **before, "root": proc.pid, "me": os.getpid(), "left": alive(daemon)}

    out = in_subreaper(scenario)
    assert out["sid"] != out["root"]          # it is in a session of its own
    assert out["ppid"] == out["me"]           # and was reparented to the subreaper
    assert out["code"] == 0                   # the shell itself exited on SIGTERM
    assert not out["left"]
    assert 0.5 <= out["took"] < 3             # the daemon kept the ladder to the grace


def test_a_forced_stop_sends_no_sigterm(tmp_path):
    def scenario(marker):
        f = str(tmp_path / "term")
        proc = spawn(marker, f"trap 'echo term > {f}' TERM; echo up > {f}.up; "
                             "while :; do sleep 0.05; done")
        wait_file(f + ".up")
        got = supervise(proc, Stopper(proc.pid), lambda s: s.begin(grace=10, force=True))
        return {**got, "term": os.path.exists(f)}

    out = in_subreaper(scenario)
    assert out["code"] == -signal.SIGKILL
    assert not out["term"]
    assert out["took"] < 2


def test_escalate_during_the_grace_kills_at_once(tmp_path):
    def scenario(marker):
        proc = spawn(marker, f"trap '' TERM; echo up > {tmp_path}/up; sleep 30")
        wait_file(f"{tmp_path}/up")
        s = Stopper(proc.pid)
        assert s.begin(grace=30)
        assert not s.begin(grace=0, force=True)    # begins once; a later stop escalates
        time.sleep(0.2)
        assert not s.done() and alive(proc.pid)
        t0 = time.monotonic()
        s.escalate()
        got = supervise(proc, s)
        return {**got, "after_escalate": time.monotonic() - t0}

    out = in_subreaper(scenario)
    assert out["code"] == -signal.SIGKILL
    assert out["after_escalate"] < 2


@pytest.mark.parametrize("grace", [0.5, 2.5])
def test_a_grace_learned_after_the_sigterm_counts_from_it(tmp_path, grace):
    """A cancel's SIGTERM goes out before its grace is read (the attempt's worker said so):
    ``regrace`` then sets the wait, shorter or longer than the one it began with, counted from
    the SIGTERM."""
    def scenario(marker):
        proc = spawn(marker, f"trap '' TERM; echo up > {tmp_path}/up; sleep 30")
        wait_file(f"{tmp_path}/up")
        s = Stopper(proc.pid)
        t0 = time.monotonic()
        s.begin(grace=1.5)
        time.sleep(0.2)
        s.regrace(grace)
        got = supervise(proc, s)
        return {**got, "since_term": time.monotonic() - t0}

    out = in_subreaper(scenario)
    assert out["code"] == -signal.SIGKILL
    assert grace <= out["since_term"] < grace + 1.0


def test_a_process_that_exits_at_once(tmp_path):
    """Nothing to signal: the ladder ends at its first look, with no SIGKILL rung and no wait."""
    def scenario(marker):
        proc = spawn(marker, "exit 7")
        _, status = os.waitpid(proc.pid, 0)
        s = Stopper(proc.pid)
        assert s.next_wake() is None and not s.done()    # not begun
        t0 = time.monotonic()
        s.begin(grace=1.0)
        return {"done": s.done(), "took": time.monotonic() - t0, "rung": s.rung,
                "code": os.waitstatus_to_exitcode(status)}

    out = in_subreaper(scenario)
    assert out == {**out, "done": True, "rung": 0, "code": 7}
    assert out["took"] < 0.5                  # not the grace (a load's preemption is no wait)


def test_a_root_that_exits_while_being_stopped_is_not_reaped_by_the_stopper(tmp_path):
    """The root's exit status belongs to whoever started it (the attempt collects it with
    wait4): the Stopper sees it as a zombie, never reaps it."""
    def scenario(marker):
        proc = spawn(marker, f"trap 'exit 4' TERM; echo up > {tmp_path}/up; "
                             "while :; do sleep 0.05; done")
        wait_file(f"{tmp_path}/up")      # its trap is set (not a sleep: a shell may start late)
        s = Stopper(proc.pid)
        s.begin(grace=5)
        s.run()
        zombie = psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
        _, status = os.waitpid(proc.pid, 0)
        return {"zombie": zombie, "code": os.waitstatus_to_exitcode(status)}

    out = in_subreaper(scenario)
    assert out == {"zombie": True, "code": 4}


def test_what_the_main_process_left_behind_is_stopped_after_it_exits(tmp_path):
    """A command that ended by itself with a background process still running (the attempt then
    begins the ladder with a short grace): the leftover gets SIGTERM and is gone at once."""
    def scenario(marker):
        f = str(tmp_path / "term")
        proc = spawn(marker, f"sh -c 'trap \"echo term > {f}; exit 0\" TERM; "
                             f"echo up > {f}.up; while :; do sleep 0.05; done' & "
                             f"while [ ! -e {f}.up ]; do sleep 0.01; done; exit 0")
        _, status = os.waitpid(proc.pid, 0)
        t0 = time.monotonic()
        s = Stopper(proc.pid)
        s.begin(grace=5)
        s.run()
        return {"took": time.monotonic() - t0, "term": wait_file(f, 1),
                "code": os.waitstatus_to_exitcode(status)}

    out = in_subreaper(scenario)
    assert out["term"] == "term" and out["code"] == 0
    assert out["took"] < 2.5                  # well before the grace of 5


# --- hpcq up's ladder: root-only rungs, then SIGKILL of the whole tree -----------------------

def test_root_only_rungs_signal_the_root_alone_and_its_leftovers_get_sigkill(tmp_path):
    """A daemon that exits on SIGTERM leaving a child behind (which would note a SIGTERM): only
    the daemon gets SIGTERM, and once it has exited the child, which left the daemon's tree
    (reparented to us), is remembered and killed at once, long before the rung's wait is up."""
    def scenario(marker):
        f = str(tmp_path / "child")
        proc = spawn(marker, f"sh -c 'trap \"echo term > {f}.term\" TERM; echo $$ > {f}; "
                             f"while :; do sleep 0.05; done' & "
                             f"trap 'exit 0' TERM; echo up > {f}.up; while :; do sleep 0.05; done")
        child = int(wait_file(f))
        wait_file(f + ".up")             # the root's trap is set too

        def tree():
            try:
                return psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return []

        s = Stopper(proc.pid, tree=tree, kill_for=5)
        t0 = time.monotonic()
        s.begin(rungs=[Rung(signal.SIGTERM, 20, root_only=True),
                       Rung(signal.SIGQUIT, 20, root_only=True)])
        s.run()
        took = time.monotonic() - t0
        _, status = os.waitpid(proc.pid, 0)
        return {"took": took, "code": os.waitstatus_to_exitcode(status), "child_left": alive(child),
                "child_termed": os.path.exists(f + ".term"), "survivors": len(s.survivors)}

    out = in_subreaper(scenario)
    assert out["code"] == 0                   # the root exited on its SIGTERM (no SIGQUIT)
    assert not out["child_termed"]            # the SIGTERM went to the root alone
    assert not out["child_left"] and out["survivors"] == 0
    assert out["took"] < 3


def pending(pid: int) -> set[int]:
    """The signals sent to ``pid`` that it has not taken (it blocks them), from /proc: seen the
    moment they are sent, however late the process itself would get to run."""
    mask = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("SigPnd:", "ShdPnd:")):
                mask |= int(line.split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_a_root_that_ignores_its_rungs_gets_each_then_sigkill():
    """Each root-only rung's signal goes to the root as its rung begins, the next not before
    the rung's wait is up, then SIGKILL.  The root blocks SIGTERM and SIGQUIT, so each stays
    pending where /proc shows it, read after every step: a shell's trap noting them had to be
    scheduled within the 0.4 s before the next rung, and under load it sometimes was not
    (['TERM'] == ['TERM', 'QUIT'], issue 23)."""
    block = {signal.SIGTERM, signal.SIGQUIT}

    def scenario(marker):
        proc = subprocess.Popen(["sleep", "30"], env=dict(os.environ, **{MARK: marker}),
                                start_new_session=True,
                                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, block))
        s = Stopper(proc.pid, tree=lambda: [], kill_for=5)
        t0 = time.monotonic()
        s.begin(rungs=[Rung(signal.SIGTERM, 0.4, root_only=True),
                       Rung(signal.SIGQUIT, 0.4, root_only=True)])
        got = []                 # [signal, the rung it showed on, seconds since begin()]
        while True:
            for name in sorted(signal.Signals(n).name for n in pending(proc.pid) & block):
                if name not in (g[0] for g in got):
                    got.append([name, s.rung, time.monotonic() - t0])
            if s.done():
                break
            time.sleep(max(0.0, s.next_wake() - time.monotonic()))
            s.step()
        took = time.monotonic() - t0
        _, status = os.waitpid(proc.pid, 0)
        return {"took": took, "code": os.waitstatus_to_exitcode(status), "got": got}

    out = in_subreaper(scenario)
    assert [g[:2] for g in out["got"]] == [["SIGTERM", 0], ["SIGQUIT", 1]], out
    assert out["got"][1][2] >= 0.4               # SIGQUIT once SIGTERM's wait was up
    assert out["code"] == -signal.SIGKILL
    assert 0.8 <= out["took"] < 3


def test_an_interrupt_skips_the_remaining_waits(tmp_path):
    """``hpcq up``'s second Ctrl-C: every Stopper it drives goes to SIGKILL at once."""
    def scenario(marker):
        procs = [spawn(marker, f"trap '' TERM QUIT; echo up > {tmp_path}/up{n}; exec sleep 30")
                 for n in range(2)]
        for n in range(2):       # its traps are set (not a sleep: a shell may start late)
            wait_file(f"{tmp_path}/up{n}")
        stoppers = [Stopper(p.pid, tree=lambda: [], kill_for=5) for p in procs]
        for s in stoppers:
            s.begin(rungs=[Rung(signal.SIGTERM, 30, root_only=True)])
        t0 = time.monotonic()
        supervisor.drive(stoppers, interrupt=lambda: time.monotonic() > t0 + 0.3)
        took = time.monotonic() - t0
        return {"took": took, "codes": [os.waitstatus_to_exitcode(os.waitpid(p.pid, 0)[1])
                                        for p in procs]}

    out = in_subreaper(scenario)
    assert out["codes"] == [-signal.SIGKILL] * 2
    assert 0.3 <= out["took"] < 2


# --- the worker's main process: kill by marker -------------------------------------------------

def test_kill_marked_finds_processes_wherever_they_went(tmp_path):
    def scenario(marker):
        d = str(tmp_path)
        spawn(marker, f"(setsid sh -c 'echo $$ > {d}/a; exec sleep 30' &); "
                      f"echo $$ > {d}/b; exec sleep 30")
        pids = [int(wait_file(f"{d}/{n}")) for n in ("a", "b")]
        n = markers.kill_marked(MARK, [marker])
        none = markers.kill_marked(MARK, ["no-such-marker"])
        return {"n": n, "none": none, "left": [alive(p) for p in pids]}

    out = in_subreaper(scenario)
    assert out == {"n": 2, "none": 0, "left": [False, False]}
