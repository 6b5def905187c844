"""Child processes that are always cleaned up, and the one family of process finders.

``Proc`` starts a child in its own session (and so its own process group) with a unique marker
in its environment.  Its "family" is every live process that is a descendant of it, is in its
process group or session, or carries its marker (that last one finds descendants that were
orphaned and reparented, or that moved to a session of their own), so ``stop()`` and the
``procs`` fixture (conftest) can prove nothing it started is left behind.

The finders (``processes`` and its named uses) find processes by a marker in their environment
or command line, by attempt or by task, wherever they were reparented; ``assert_gone`` waits
for a finder to come back empty and kills and reports what did not go."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
import time
import uuid

import psutil

#: Environment variable carrying each Proc's marker (inherited by all its descendants).
PROC_MARKER_VAR = "HPCQ_TEST_PROC"


def die_with_parent() -> None:
    """``preexec_fn``: in the child before exec, get SIGKILL when the test process dies without
    its teardown (survives the exec of ``ip netns exec`` and of the command it runs)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdlines(procs) -> list[str]:
    """Command lines of the processes still there: a short-lived one may exit, or be a zombie,
    while we look."""
    out = []
    for p in procs:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.Error:
            pass
    return out


def describe(procs) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(f"  pid {p.pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            lines.append(f"  pid {p.pid}: (gone)")
    return "\n".join(lines)


class Proc:
    """One child process with its output in a log file, in a session and process group of its
    own.  ``env`` is added to (not a replacement of) this process's environment."""

    def __init__(self, argv, env: dict | None = None, cwd=None, logdir=None, name: str | None = None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.marker = f"hpcq-proc-{uuid.uuid4().hex[:12]}"
        self.logdir = str(logdir) if logdir else tempfile.mkdtemp(prefix="hpcq-proc-")
        os.makedirs(self.logdir, exist_ok=True)
        self.log_path = os.path.join(self.logdir, f"{self.name}-{self.marker}.log")
        full_env = dict(os.environ)
        full_env.update({str(k): str(v) for k, v in (env or {}).items()})
        full_env[PROC_MARKER_VAR] = self.marker
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self.popen.pid
        self._seen: dict[int, psutil.Process] = {}
        self._created = None
        try:
            root = psutil.Process(self.pid)
            self._seen[self.pid] = root
            self._created = root.create_time()
        except psutil.NoSuchProcess:
            pass

    # -- introspection -------------------------------------------------------------------------

    @property
    def returncode(self):
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def family(self) -> list[psutil.Process]:
        """Live (non-zombie) processes that belong to this Proc, itself included."""
        found: dict[int, psutil.Process] = {}
        for pid, p in list(self._seen.items()):
            if alive(p):
                found[pid] = p
        root = self._seen.get(self.pid)
        if root is not None and alive(root):
            try:
                for c in root.children(recursive=True):
                    found.setdefault(c.pid, c)
            except psutil.Error:
                pass
        me = os.getpid()
        # Our session/group id is our pid; trust it unless that pid now names another process.
        by_group = self._created is not None
        try:
            holder = psutil.Process(self.pid)
            if holder.create_time() != self._created:
                by_group = False
        except psutil.Error:
            pass
        for p in psutil.process_iter(["pid", "status", "create_time"]):
            if p.pid == me or p.pid in found:
                continue
            try:
                if p.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if (by_group and p.info["create_time"] >= self._created
                        and (os.getpgid(p.pid) == self.pid or os.getsid(p.pid) == self.pid)):
                    found[p.pid] = p
                    continue
                if p.environ().get(PROC_MARKER_VAR) == self.marker:
                    found[p.pid] = p
            except (psutil.Error, OSError):
                pass
        for pid, p in found.items():
            self._seen.setdefault(pid, p)
        return [p for p in found.values() if alive(p)]

    # -- stopping ------------------------------------------------------------------------------

    def send_signal(self, sig) -> None:
        try:
            self.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self, sig=signal.SIGTERM, timeout: float = 20):
        """Send ``sig`` to the process and wait up to ``timeout`` s for it to exit; then SIGKILL
        its whole process group and every process of its family.  Returns the exit code."""
        self.family()  # remember the descendants while the tree is still intact
        if self.popen.poll() is None:
            self.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL the process group and every process of the family, and reap the child."""
        for _ in range(3):
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            fam = self.family()
            for p in fam:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass
            psutil.wait_procs([p for p in fam if p.pid != self.pid], timeout=5)
            if not self.family():
                break

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} rc={self.popen.poll()}>"


class Procs:
    """What the ``procs`` fixture gives: ``procs.start(argv, env=None)`` returns a started Proc;
    ``stop_all()`` stops them all (newest first) and ``assert_clean()`` proves nothing is left."""

    def __init__(self, logdir=None):
        self.logdir = str(logdir) if logdir else tempfile.mkdtemp(prefix="hpcq-procs-")
        os.makedirs(self.logdir, exist_ok=True)
        self.started: list[Proc] = []

    def start(self, argv, env: dict | None = None, cwd=None, name: str | None = None) -> Proc:
        p = Proc(argv, env=env, cwd=cwd, logdir=self.logdir, name=name)
        self.started.append(p)
        return p

    def stop_all(self, timeout: float = 20) -> None:
        for p in reversed(self.started):
            p.stop(timeout=timeout)

    def leftovers(self) -> list[psutil.Process]:
        left: dict[int, psutil.Process] = {}
        for p in self.started:
            for q in p.family():
                left.setdefault(q.pid, q)
        return list(left.values())

    def assert_clean(self, timeout: float = 10) -> None:
        assert_gone(self.leftovers, timeout)

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (pid {p.pid})\n{p.log()[-4000:]}" for p in self.started)


# -- finders -------------------------------------------------------------------------------------

def processes(*, env: dict | None = None, has_env=(), cmdline: str | None = None,
              arg: str | None = None) -> list[psutil.Process]:
    """Live processes (not zombies, not this one) that match any criterion given: ``cmdline``
    is in their command line (joined by spaces), ``arg`` is one of its arguments, or their
    environment has every item of ``env`` (and every variable of ``has_env``)."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.pid == me:
            continue
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            argv = p.info["cmdline"] or []
            if cmdline is not None and cmdline in " ".join(argv):
                found.append(p)
            elif arg is not None and arg in argv:
                found.append(p)
            elif env or has_env:
                penv = p.environ()
                if (all(penv.get(k) == v for k, v in (env or {}).items())
                        and all(k in penv for k in has_env)):
                    found.append(p)
        except psutil.Error:
            pass
    return found


def no_task_processes(marker: str, env_var: str | None = None) -> list[psutil.Process]:
    """Live processes whose command line contains ``marker``, or whose environment has
    ``env_var=marker``; a test asserts this is empty to prove no task command was orphaned."""
    return processes(cmdline=marker, env={env_var: marker} if env_var else None)


def attempt_processes(celery_id: str) -> list[psutil.Process]:
    """Live processes of one attempt (the worker puts ``HPCQ_ATTEMPT=<celery id>`` in the
    command's environment), wherever they were reparented."""
    return processes(env={"HPCQ_ATTEMPT": celery_id})


def descendants(pid: int) -> list[psutil.Process]:
    """Live descendants of ``pid`` (empty if it is gone)."""
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if alive(p)]
    except psutil.Error:
        return []


def assert_gone(find, timeout: float = 10.0) -> None:
    """Wait up to ``timeout`` s for ``find()`` to return no process; what is still there is
    killed (it is ours: the finder says so) and reported in an AssertionError."""
    deadline = time.monotonic() + timeout
    left = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = find()
    if left:
        report = describe(left)
        for q in left:
            try:
                q.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)
        raise AssertionError(f"processes left behind:\n{report}")
