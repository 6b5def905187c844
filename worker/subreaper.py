"""The pool process (and ``hpcq up``) as a Linux child subreaper: every orphan among its
descendants is reparented to it, so "the task's processes" are simply its descendants, and
"nothing is left" is a question one syscall answers (``childless``)."""

from __future__ import annotations

import ctypes
import os

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    """prctl(2): the only wrapper of it (the worker and ``hpcq up`` both use it).  Loaded once at
    import, so calling it in a forked child before exec (``preexec_fn``) loads nothing there.
    A failure is ignored: on a kernel without the option there is nothing better to do."""
    try:
        _libc.prctl(option, int(arg), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def become_subreaper() -> None:
    """Orphans of this process's descendants are reparented to it, not to init."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int) -> None:
    """This process gets ``sig`` when its parent dies (Linux PR_SET_PDEATHSIG)."""
    _prctl(PR_SET_PDEATHSIG, sig)


def childless() -> bool:
    """This process has no child left, not even a zombie: then a subreaper has no descendant
    either (the kernel hands a dying process's children to the nearest subreaper before the
    dying one can be reaped).  One syscall, where a walk of the tree reads /proc: a command
    that ended by itself leaves nothing behind, usually."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False
