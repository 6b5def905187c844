"""How much an attempt used: CPU time and peak memory, as recorded with its result (``cpu_user``,
``cpu_sys`` in seconds, ``max_rss`` in bytes; ``hpcq task view`` shows them).

CPU time is the kernel's own count: what the processes this pool process reaped during the
attempt used (``getrusage(RUSAGE_CHILDREN)`` after less before).  The pool process is a child
subreaper and runs one attempt at a time, so that is every process of the command, the ones the
command waited for and the orphans it left alike.

Peak memory is, where the worker may create one, the high-water mark of a memory cgroup of the
attempt's own (cgroup v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``): exact, even for an
allocation that lives a few milliseconds, and the sum over all the command's processes.  Like
any memory cgroup figure it counts the page cache of files the task wrote or first read, i.e.
what a memory limit on the task would count.  Elsewhere (no writable memory controller, or
``HPCQ_ACCOUNTING=sampling``) the command's process tree is sampled while it runs (a first
sample at once, then every 0.05 s up to every 0.25 s): the larger of the highest sum of its
processes' RSS and the highest single process's own high-water mark (VmHWM).  A command that is
gone before the first sample (``true``) reports 0; memory shared between processes (a forked
Python) counts once per process.

Why not ``ru_maxrss``: the command's process is forked from the pool process, and the kernel
keeps the larger of the fork-time RSS (the whole Python worker, ~50 MB) and what the program
used across the exec, so ``echo`` reported 50 MB.

How the command gets into the cgroup: the pool process joins the attempt's cgroup just for the
fork (``spawning``), so the command is born in it and everything it or its descendants allocate
is charged there from the first page (writing the pid in after the fork would race with a
command that forks at once); the pool process's own memory stays charged where it was (charges
do not move with a process).  Any cgroup error, at any step, leaves the attempt to sampling: a
task never fails to start over accounting.  The cgroup is removed when the attempt ends."""

from __future__ import annotations

import errno
import logging
import os
import re
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass

from .supervisor import _children

log = logging.getLogger("hpcq.accounting")

MODES = ("auto", "cgroup", "sampling")
#: Prefix of every cgroup a worker creates (``hpcq-<pool pid>-<attempt token>``).
PREFIX = "hpcq-"
#: Sampling: the first sample at once, then intervals doubling from FIRST up to EVERY seconds.
FIRST = 0.05
EVERY = 0.25


@dataclass(frozen=True)
class Cgroup:
    """A memory controller under which this process may create cgroups: ``parent`` is its own
    memory cgroup's directory."""
    version: int
    parent: str

    @property
    def peak_file(self) -> str:
        return "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"

    def describe(self) -> str:
        return f"cgroup v{self.version} memory at {self.parent}"


def _write(path: str, value) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _mounts() -> dict:
    """{"v1": (root, mountpoint) of the v1 memory hierarchy, "v2": (root, mountpoint)}."""
    found = {}
    try:
        lines = _read("/proc/self/mountinfo").splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = fields[3], fields[4].replace("\\040", " ")
        if tail[0] == "cgroup" and "memory" in tail[2].split(",") and "v1" not in found:
            found["v1"] = (root, point)
        elif tail[0] == "cgroup2" and "v2" not in found:
            found["v2"] = (root, point)
    return found


def _cgroup_dir(mount: tuple[str, str], path: str) -> str | None:
    root, point = mount
    if root != "/" and not (path == root or path.startswith(root + "/")):
        return None             # our cgroup is outside what this mount shows
    rel = path[len(root):] if root != "/" else path
    return os.path.join(point, rel.lstrip("/"))


def _candidates() -> list[Cgroup]:
    """Where this process's memory cgroup is, v1 first (a controller is in one hierarchy only)."""
    mounts, out = _mounts(), []
    try:
        lines = _read("/proc/self/cgroup").splitlines()
    except OSError:
        return out
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if hid != "0" and "memory" in controllers.split(",") and "v1" in mounts:
            d = _cgroup_dir(mounts["v1"], path)
            if d:
                out.insert(0, Cgroup(1, d))
        elif hid == "0" and controllers == "" and "v2" in mounts:
            d = _cgroup_dir(mounts["v2"], path)
            if d:
                out.append(Cgroup(2, d))
    return out


def _usable(cg: Cgroup) -> bool:
    """A cgroup can be made under ``cg.parent`` and has the peak figure (mkdir, look, rmdir)."""
    if cg.version == 2:
        try:    # children get the memory controller only if the parent hands it down
            if "memory" not in _read(os.path.join(cg.parent, "cgroup.subtree_control")).split():
                return False
        except OSError:
            return False
    probe = os.path.join(cg.parent, f"{PREFIX}{os.getpid()}-probe")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        return os.path.exists(os.path.join(probe, cg.peak_file))
    finally:
        try:
            os.rmdir(probe)
        except OSError:
            pass


def _sweep(cg: Cgroup) -> None:
    """Remove the empty cgroups of pool processes that died before removing theirs."""
    try:
        names = os.listdir(cg.parent)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(PREFIX) + r"(\d+)-.*", name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue                        # its pool process lives: its own business
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.rmdir(os.path.join(cg.parent, name))
        except OSError:
            pass


_detected: dict[str, Cgroup | None] = {}
#: This process's attempt cgroups that could not be removed yet (retried at each attempt).
_leftover: list[str] = []


def method(mode: str = "auto") -> Cgroup | None:
    """The memory cgroup this process's attempts use, or None: sampling.  Looked up once per
    process (and mode); ``mode`` is ``HPCQ_ACCOUNTING``: auto or cgroup (a cgroup where one can
    be made, else sampling) or sampling."""
    mode = (mode or "auto").strip().lower()
    if mode not in _detected:
        found = None
        if mode not in MODES:
            log.warning("HPCQ_ACCOUNTING=%r is not one of %s: taken as auto", mode, "|".join(MODES))
        if mode != "sampling":
            found = next((cg for cg in _candidates() if _usable(cg)), None)
            if found:
                _sweep(found)
            elif mode == "cgroup":
                log.warning("accounting: no memory cgroup can be created here; sampling instead")
        _detected[mode] = found
    return _detected[mode]


def describe(mode: str = "auto") -> str:
    cg = method(mode)
    return f"accounting: {cg.describe()}" if cg else "accounting: sampling"


def _status(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB; (0, 0) for a zombie or a process gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


class Accounting:
    """One attempt's accounting: make it before the command is started, start the command
    inside ``spawning()``, call ``sample`` whenever the supervision loop wakes (at the latest at
    ``next_wake()``), read ``usage()`` once the whole tree is gone, then ``close()``."""

    def __init__(self, mode: str, name: str):
        self.cgroup = method(mode)
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "attempt"
        self.dir: str | None = None
        self.before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.peak = 0                      # sampled, in bytes
        self.next: float | None = None     # when the next sample is due (None: not sampling)
        self.interval = FIRST

    @contextmanager
    def spawning(self):
        """Start the command inside this: it is born in the attempt's cgroup (if any)."""
        joined = False
        for d in list(_leftover):
            try:
                os.rmdir(d)
                _leftover.remove(d)
            except FileNotFoundError:
                _leftover.remove(d)
            except OSError:
                pass
        if self.cgroup is not None:
            d = os.path.join(self.cgroup.parent, f"{PREFIX}{os.getpid()}-{self.name}")
            try:
                os.mkdir(d)
                self.dir = d
                _write(os.path.join(d, "cgroup.procs"), os.getpid())
                joined = True
            except OSError as exc:
                log.warning("accounting: cgroup %s: %s; sampling this attempt", d, exc)
                self.close()
        try:
            yield
        finally:
            if joined:
                try:
                    _write(os.path.join(self.cgroup.parent, "cgroup.procs"), os.getpid())
                except OSError as exc:
                    # Stuck in the attempt's cgroup: this process accounts by sampling from now.
                    log.error("accounting: leaving cgroup %s: %s", self.dir, exc)
                    _detected.clear()
                    _detected.update({m: None for m in MODES})
            if self.dir is None:
                self.next = time.monotonic()
                self.sample(self.next)     # the first sample: the command has just exec'd

    def next_wake(self) -> float | None:
        return self.next

    def sample(self, now: float | None = None) -> None:
        """Sampling only, and only when due: the command's processes' RSS (every descendant
        of this process, a subreaper: see ``supervisor``)."""
        if self.next is None:
            return
        now = time.monotonic() if now is None else now
        if now < self.next:
            return
        total, stack = 0, _children(os.getpid())
        while stack:
            pid = stack.pop()
            stack.extend(_children(pid))
            rss, hwm = _status(pid)
            total += rss
            self.peak = max(self.peak, hwm * 1024)
        self.peak = max(self.peak, total * 1024)
        self.next = now + self.interval
        self.interval = min(self.interval * 2, EVERY)

    def usage(self) -> tuple[float, float, int]:
        """(cpu_user s, cpu_sys s, peak memory in bytes) of the attempt so far."""
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        user = max(0.0, ru.ru_utime - self.before.ru_utime)
        sys_ = max(0.0, ru.ru_stime - self.before.ru_stime)
        peak = self.peak
        if self.dir is not None:
            try:
                peak = int(_read(os.path.join(self.dir, self.cgroup.peak_file)))
            except (OSError, ValueError) as exc:
                log.warning("accounting: reading %s: %s", self.dir, exc)
        return user, sys_, peak

    def close(self) -> None:
        """Remove the attempt's cgroup (once every process of it is gone)."""
        if self.dir is None:
            return
        for _ in range(50):
            try:
                os.rmdir(self.dir)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                # EBUSY: a process of it (a zombie being reaped) is still counted for a moment
                if exc.errno != errno.EBUSY:
                    log.warning("accounting: removing cgroup %s: %s", self.dir, exc)
                    break
                time.sleep(0.01)
        else:
            log.warning("accounting: cgroup %s still has processes; removed later", self.dir)
            _leftover.append(self.dir)
        self.dir = None
