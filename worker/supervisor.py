"""Holding a command's whole process tree: start it in its own session, wait for it, and stop
every process of it, including ones that double-forked into a session of their own.

The pool process is made a child subreaper (``subreaper.py``), so an orphaned descendant is
reparented to it rather than to init: "the task's processes" are then simply every descendant of
the pool process, which a walk of ``/proc`` lists.

Stopping is one state machine, ``Stopper``, used by everything that stops processes: an attempt
(cancel, runtime limit, shutdown, fence, and the leftovers of a command that ended by itself),
the worker's main process (what a dead pool process or a previous life left: ``kill_marked``) and
``hpcq up`` for its daemons (``scheduler/local.py``).  One ladder, so one set of rules: every
process gets each signal once, a SIGKILL is repeated until the tree is confirmed gone, and a
process that leaves the tree (reparented) is still stopped."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import psutil

log = logging.getLogger("hpcq.supervisor")


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


def _walk(keep: int | None = None) -> tuple[list[psutil.Process], bool]:
    """Every live process below this one, and whether that is surely all of them.  Zombies are
    reaped on the way, except ``keep`` (a root whose exit status its owner collects).  A process
    that exits while we walk hands its children to us (the subreaper) only as it exits, so a walk
    that met a process (live or zombie) may have missed some; one that met none cannot."""
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
    return alive, not procs


def descendants(keep: int | None = None) -> list[psutil.Process]:
    """Every live process below this one (zombies reaped on the way, except ``keep``)."""
    return _walk(keep)[0]


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Rung(NamedTuple):
    """One rung of a stop ladder: send ``sig``, then give the processes up to ``wait`` seconds to
    go before the next rung.  To the whole tree, and the wait ends once all of it is gone; or, if
    ``root_only``, to the root alone, for a daemon that stops its own children when told (a
    Celery worker on SIGTERM or SIGQUIT), and the wait ends once the root has exited."""
    sig: int
    wait: float = 0.0
    root_only: bool = False


#: The last rung of every ladder: SIGKILL to the whole tree, repeated until it is gone.
KILL = Rung(signal.SIGKILL)


class Stopper:
    """The stop ladder of one process tree, as a small state machine its caller drives.

    ``begin(grace, force)`` starts it: SIGTERM to the whole tree and ``grace`` seconds for it to
    go (or straight to SIGKILL if ``force``); any other ladder is a list of ``Rung``s.  The last
    rung is always SIGKILL to the whole tree, repeated until the tree is confirmed gone (or for at
    most ``kill_for`` seconds).  ``escalate()`` goes to that last rung at once (a forced cancel
    after a graceful one, a second Ctrl-C).  The caller waits on whatever else it watches until at
    most ``next_wake()``, calls ``step(now)`` whenever it wakes, and stops once ``done()``.  It
    never sleeps and never blocks, so a supervision loop stays one ``select`` (``run()`` is the
    blocking form, for callers with nothing else to watch).

    The tree is ``root`` (whose process group is signaled too: the command leads a session of its
    own) and what ``tree()`` lists, by default every descendant of this process, which for a
    subreaper is exactly the command's processes.  A process once found stays in the tree until
    it is gone, even if a later walk cannot see it (it was reparented out of a daemon's tree, or it
    became a zombie: ours are reaped).  The root itself is never reaped here: its exit status
    belongs to whoever started it (``os.wait4`` in the attempt, ``Popen`` in ``hpcq up``)."""

    #: While the root is gone but not yet all of its tree, how often the tree is looked at.
    TICK = 0.02
    #: Two walks this far apart that find nothing confirm a tree gone (a walk can miss a process
    #: being reparented), unless the walk could not have missed one (see ``_walk``); also how
    #: often SIGKILL is repeated on the last rung.
    CONFIRM = 0.01
    #: A process that outlives SIGKILL this long (uninterruptible sleep: a hung NFS mount, a
    #: device) is logged once; the attempt still waits for it, so nothing of a task outlives it.
    WARN_AFTER = 5.0

    def __init__(self, root: int | None = None,
                 tree: Callable[[], Iterable[psutil.Process]] | None = None,
                 kill_for: float | None = None):
        self.root = root
        try:
            self._root = psutil.Process(root) if root else None
        except psutil.NoSuchProcess:
            self._root = None
        self._tree = tree
        self.kill_for = kill_for
        self.rungs: list[Rung] = []
        self.rung = -1                   # the rung being waited on; -1: not begun
        self.until = 0.0                 # when its wait is over
        self.killing_since: float | None = None
        self.wake_at: float | None = None
        self.finished = False
        self.seen: dict[int, psutil.Process] = {}   # every live process found in the tree
        self.found: set[int] = set()                # every pid ever found in the tree
        self.empty_since: float | None = None       # the first of a run of empty walks
        self.survivors: list[psutil.Process] = []   # what outlived kill_for (if it ran out)
        self._warned = False

    # --- the caller's side -------------------------------------------------------------------
    def begin(self, grace: float = 0.0, force: bool = False,
              rungs: Sequence[Rung] | None = None) -> bool:
        """Start the ladder; its first signal goes out now.  Only once: False (and nothing done)
        if it had begun already (a later, forced, stop calls ``escalate``)."""
        if self.rung >= 0:
            return False
        if rungs is None:
            rungs = [] if force else [Rung(signal.SIGTERM, grace)]
        self.rungs = [*rungs, KILL]
        self._enter(0, time.monotonic())
        return True

    def escalate(self) -> None:
        """SIGKILL the whole tree now, whatever rung the ladder is on (or begin with it)."""
        if self.rung < 0:
            self.begin(force=True)
        elif not self.finished and self.rung < len(self.rungs) - 1:
            self._enter(len(self.rungs) - 1, time.monotonic())

    def regrace(self, grace: float) -> None:
        """The first rung's wait becomes ``grace`` (counted from when it began): for a stop
        begun before its grace was known (a cancel's SIGTERM goes out before Redis is read)."""
        if self.rung != 0 or self.finished or self.rungs[0] is KILL:
            return
        began = self.until - self.rungs[0].wait
        self.rungs[0] = self.rungs[0]._replace(wait=grace)
        self.until = began + grace
        self.wake_at = self.until if self._root_alive() else min(self.wake_at or self.until,
                                                                 self.until)

    @property
    def begun(self) -> bool:
        return self.rung >= 0

    def done(self) -> bool:
        """The tree is gone (or ``kill_for`` ran out: ``survivors`` says what is left)."""
        return self.finished

    def next_wake(self) -> float | None:
        """When ``step`` has something to do at the latest (monotonic), or None: not begun, or
        done.  The caller also steps on what it watches itself (the root's exit, a signal)."""
        if self.rung < 0 or self.finished:
            return None
        return self.wake_at

    def step(self, now: float | None = None) -> None:
        """Do what is due: end a rung's wait once what it signaled is gone or its time is up,
        and on the last rung SIGKILL what is left and check that the tree is gone."""
        if self.rung < 0 or self.finished:
            return
        now = time.monotonic() if now is None else now
        rung = self.rungs[self.rung]
        if rung is KILL:
            self._sweep(signal.SIGKILL, now)
            return
        if rung.root_only:
            if self._root_alive() and now < self.until:
                return
        elif not self._root_alive():
            # The root is gone: the wait ends as soon as the rest of the tree is.
            if self._sweep(None, now):
                return
            if now < self.until:
                self.wake_at = min(self.wake_at, self.until)
                return
        elif now < self.until:
            return
        self._enter(self.rung + 1, now)

    def run(self, interrupt: Callable[[], bool] | None = None, tick: float = 0.05) -> None:
        """Drive the ladder (already begun) to its end, sleeping between steps."""
        drive([self], interrupt, tick)

    # --- the ladder --------------------------------------------------------------------------
    def _enter(self, i: int, now: float) -> None:
        """Go to rung ``i`` and send its signal (a root-only rung whose root is gone is skipped)."""
        self.rung = i
        rung = self.rungs[i]
        self.until = now + rung.wait
        if rung is KILL:
            self.killing_since = now
            self._sweep(signal.SIGKILL, now)
        elif rung.root_only:
            self._live()                 # remember the tree before the root may leave it
            if not self._root_alive():
                return self._enter(i + 1, now)
            try:
                self._root.send_signal(rung.sig)
            except psutil.Error:
                pass
            self.wake_at = self.until
        elif not self._sweep(rung.sig, now):
            # While the root lives, its caller steps on its exit (the attempt waits on a pidfd).
            self.wake_at = self.until if self._root_alive() else min(self.wake_at, self.until)

    def _sweep(self, sig: int | None, now: float) -> bool:
        """Send ``sig`` (if any) to every process of the tree, each once: the root's process group
        with one killpg (first: the quickest way to reach the command), then every process in
        another group.  Then: is the tree gone (``finished``)?"""
        group = None
        if sig is not None and self._root_unreaped():
            _killpg(self.root, sig)      # the root pins its group id: it cannot be another's
            group = self.root
        procs, settled = self._live()
        if sig is not None:
            for p in procs:
                try:
                    pgid = os.getpgid(p.pid)
                    if pgid == group:
                        continue
                    if pgid == self.root:
                        _killpg(self.root, sig)   # the root was reaped, but its group lives on
                        group = self.root
                        continue
                    p.send_signal(sig)
                except (psutil.Error, ProcessLookupError):
                    pass
        if procs:
            self.empty_since = None
        elif self.empty_since is None:
            self.empty_since = now
        if not procs and (settled or now - self.empty_since >= self.CONFIRM):
            self.finished = True
            self.wake_at = None
            return True
        self.wake_at = now + (self.CONFIRM if not procs or self.killing_since is not None
                              else self.TICK)
        if self.killing_since is not None and now - self.killing_since >= self.WARN_AFTER \
                and not self._warned:
            self._warned = True
            log.warning("%d process(es) survive SIGKILL for %g s: %s", len(procs), self.WARN_AFTER,
                        " ".join(str(p.pid) for p in procs[:20]))
        if self.kill_for is not None and self.killing_since is not None \
                and now - self.killing_since >= self.kill_for:
            self.finished = True
            self.wake_at = None
            self.survivors = procs
        return self.finished

    # --- the tree ----------------------------------------------------------------------------
    def _live(self) -> tuple[list[psutil.Process], bool]:
        """The live processes of the tree now (the root first, if alive), and whether that list
        is surely complete (see ``_walk``)."""
        if self._tree is None:
            found, settled = _walk(keep=self.root)
            live = {p.pid: p for p in found}
        else:
            found = list(self._tree())
            # A tree nothing was ever found in has nothing that could be in transit.
            settled = not found and not self.found
            live = {p.pid: p for p in found if self._alive(p)}
        for pid, p in list(self.seen.items()):
            if pid not in live:
                if self._alive(p):
                    live[pid] = p
                else:
                    del self.seen[pid]
        self.seen.update(live)
        self.found.update(live)
        if self._root is not None and self.root not in live and self._root_alive():
            live = {self.root: self._root, **live}
            settled = False
        return list(live.values()), settled

    def _alive(self, p: psutil.Process) -> bool:
        """Running and not a zombie (a zombie of ours is reaped, unless it is the root)."""
        try:
            if not p.is_running():
                return False
            if p.status() == psutil.STATUS_ZOMBIE:
                if p.pid != self.root:
                    reap(p.pid)
                return False
            return True
        except psutil.Error:
            return False

    def _root_alive(self) -> bool:
        return self._root is not None and self._alive(self._root)

    def _root_unreaped(self) -> bool:
        """The root still exists (alive or a zombie), so its pid, and group id, are still its.
        Asked of the kernel without reaping (WNOWAIT): one syscall before the first signal."""
        if self._root is None:
            return False
        try:
            os.waitid(os.P_PID, self.root, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            return True
        except ChildProcessError:    # reaped, or not our child: ask psutil (pid reuse-safe)
            pass
        try:
            return self._root.is_running()
        except psutil.Error:
            return False


def drive(stoppers: Sequence[Stopper], interrupt: Callable[[], bool] | None = None,
          tick: float = 0.05) -> None:
    """Drive begun Stoppers to their end together, sleeping between steps; ``interrupt()``
    (looked at every ``tick`` s) escalates them all."""
    if not all(s.begun for s in stoppers):
        raise ValueError("a Stopper is driven only once begun")
    while not all(s.done() for s in stoppers):
        if interrupt is not None and interrupt():
            for s in stoppers:
                s.escalate()
        now = time.monotonic()
        for s in stoppers:
            s.step(now)
        wakes = [w for s in stoppers if (w := s.next_wake()) is not None]
        delay = min([now + tick, *wakes]) - time.monotonic()
        if delay > 0 and not all(s.done() for s in stoppers):
            time.sleep(delay)


def kill_now(root: int | None = None, tree: Callable[[], Iterable[psutil.Process]] | None = None,
             kill_for: float = 5.0) -> Stopper:
    """SIGKILL a tree (by default every descendant of this process) until it is gone, for at
    most ``kill_for`` seconds; blocking."""
    s = Stopper(root, tree, kill_for=kill_for)
    s.begin(force=True)
    s.run()
    return s
