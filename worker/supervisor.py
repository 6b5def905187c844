"""Holding a command's whole process tree: start it in its own session, wait for it, and stop
every process of it (SIGTERM, grace, SIGKILL) including ones that double-forked into a session of
their own.

The pool process is made a child subreaper (Linux prctl), so an orphaned descendant is
reparented to it rather than to init: "the task's processes" are then simply every descendant of
the pool process, which psutil lists."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    """Orphans of this process's descendants are reparented to it, not to init."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def die_with_parent(sig: int) -> None:
    """This process gets ``sig`` when its parent dies (Linux PR_SET_PDEATHSIG)."""
    _libc.prctl(1, int(sig), 0, 0, 0)


def _children(pid: int) -> list[int]:
    """Direct children from /proc (cheap: no scan of every process on the host)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return kids


_HAVE_PROC_CHILDREN = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def descendants(keep: int | None = None) -> list[psutil.Process]:
    """Every live process below this one.  Zombies are reaped on the way, except ``keep`` (the
    command's main process, whose exit status the supervisor collects itself)."""
    alive = []
    if _HAVE_PROC_CHILDREN:
        procs, stack = [], _children(os.getpid())
        while stack:
            pid = stack.pop()
            stack.extend(_children(pid))
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
    else:
        procs = psutil.Process().children(recursive=True)
    for p in procs:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                if p.pid != keep:
                    reap(p.pid)
            else:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def signal_tree(pgid: int | None, sig: int, keep: int | None = None) -> int:
    """Send ``sig`` to the command's process group and to every descendant; return how many
    processes were still alive."""
    if pgid:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    procs = descendants(keep)
    for p in procs:
        try:
            # Each process gets the signal once: the group's members already have it.
            if not pgid or os.getpgid(p.pid) != pgid:
                p.send_signal(sig)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    return len(procs)


def gone(keep: int | None = None) -> bool:
    """True once no process of the tree is left.  A process that exits while we walk the tree
    hands its children to us (the subreaper) only as it exits, so one walk can miss them: it
    takes two empty walks in a row to be sure."""
    if descendants(keep):
        return False
    time.sleep(0.01)
    return not descendants(keep)


def kill_all(pgid: int | None, keep: int | None = None, deadline: float = 5.0) -> None:
    """SIGKILL until nothing of the tree is left (a process may fork or exit while we kill)."""
    end = time.monotonic() + deadline
    empty = 0
    while empty < 2 and time.monotonic() < end:
        empty = empty + 1 if signal_tree(pgid, signal.SIGKILL, keep) == 0 else 0
        time.sleep(0.01)


class Waiter:
    """Wakes on the command's exit (a pidfd) or on a nudge from a signal handler (a pipe)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def nudge(self) -> None:
        try:
            os.write(self.w, b"x")
        except OSError:
            pass

    def wait(self, timeout: float, exited: bool = False) -> tuple[bool, bool]:
        """(command exited, nudged) after at most ``timeout`` seconds."""
        fds = [self.r] if exited else [self.pidfd, self.r]
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            ready = []
        nudged = self.r in ready
        if nudged:
            try:
                while os.read(self.r, 64):
                    pass
            except BlockingIOError:
                pass
        return self.pidfd in ready, nudged

    def close(self) -> None:
        for fd in (self.pidfd, self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


#: Environment markers every command of an attempt carries (and all its descendants inherit):
#: what finds an attempt's processes wherever they went (reparented, another session).
ATTEMPT_VAR = "HPCQ_ATTEMPT"
WORKER_VAR = "HPCQ_WORKER"


def marked(var: str, values, procs=None) -> list[psutil.Process]:
    """Live processes whose environment has ``var`` set to one of ``values``; among ``procs``
    (e.g. this process's descendants) or, if None, every process of the host."""
    values = set(values)
    me = os.getpid()
    found = []
    for p in procs if procs is not None else psutil.process_iter():
        if p.pid == me:
            continue
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(var) in values:
                found.append(p)
        except (psutil.Error, OSError):
            pass
    return found


def kill_marked(var: str, values, procs=None, deadline: float = 5.0) -> int:
    """SIGKILL every process marked so, until none is left; returns how many were found."""
    if not values:
        return 0
    end = time.monotonic() + deadline
    total = 0
    while time.monotonic() < end:
        procs_now = marked(var, values, procs() if callable(procs) else procs)
        if not procs_now:
            break
        total += len(procs_now)
        for p in procs_now:
            try:
                p.kill()
            except psutil.Error:
                pass
        time.sleep(0.02)
        for p in procs_now:
            reap(p.pid)       # ours if it was reparented to us; only these pids, never the pool's
    return total
