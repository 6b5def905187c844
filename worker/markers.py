"""Finding a task's processes wherever they went (reparented, another session, a previous life of
the worker): every command carries environment markers that all its descendants inherit."""

from __future__ import annotations

import os

import psutil

from .supervisor import kill_now


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
    """SIGKILL every process marked so, until none is left; returns how many were found.  Only
    those processes' zombies are reaped (in the worker's main process, never a pool process)."""
    if not values:
        return 0
    return len(kill_now(tree=lambda: marked(var, values, procs() if callable(procs) else procs),
                        kill_for=deadline).found)
