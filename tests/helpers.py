"""Helpers shared by the test modules: polling, child processes that are always cleaned up, and
ways to run hpcq's own daemons and CLI as real processes.

``Proc`` starts a child in its own session (and so its own process group) with a unique marker
in its environment.  Its "family" is every live process that is a descendant of it, is in its
process group or session, or carries its marker (that last one finds descendants that were
orphaned and reparented, or that moved to a session of their own), so ``stop()`` and the
``procs`` fixture (conftest) can prove nothing it started is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

#: Environment variable carrying each Proc's marker (inherited by all its descendants).
PROC_MARKER_VAR = "HPCQ_TEST_PROC"


def wait_for(predicate, timeout: float, interval: float = 0.05, message: str = ""):
    """Poll ``predicate()`` until it returns something truthy and return that value; raise
    AssertionError (with ``message``) once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s" + (f": {message}" if message else ""))
        time.sleep(interval)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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
                                          start_new_session=True)
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
            if _alive(p):
                found[pid] = p
        root = self._seen.get(self.pid)
        if root is not None and _alive(root):
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
        return [p for p in found.values() if _alive(p)]

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
        deadline = time.monotonic() + timeout
        left = self.leftovers()
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self.leftovers()
        if left:
            report = describe(left)
            for q in left:
                try:
                    q.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(left, timeout=5)
            raise AssertionError(f"processes left behind:\n{report}")

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (pid {p.pid})\n{p.log()[-4000:]}" for p in self.started)


# -- hpcq processes ----------------------------------------------------------------------------

def start_worker(procs, redis_url: str, name: str, concurrency: int = 2, extra_env: dict | None = None) -> Proc:
    env = {"HPCQ_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return procs.start([sys.executable, "-m", "scheduler.cli", "worker", "--redis", redis_url,
                        "--hostname", name, "--concurrency", str(concurrency)], env=env,
                       name=f"worker-{name}")


def start_scheduler(procs, redis_url: str, extra_env: dict | None = None) -> Proc:
    env = {"HPCQ_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return procs.start([sys.executable, "-m", "scheduler.cli", "scheduler", "--redis", redis_url], env=env,
                       name="scheduler")


def wait_worker_registered(r, name: str, timeout: float = 30):
    """Wait until worker ``name`` has heartbeated into ``hpcq:workers``; returns its score."""
    wait_for(lambda: r.zscore("hpcq:workers", name) is not None, timeout,
             message=f"worker {name} to register")
    return r.zscore("hpcq:workers", name)


def no_task_processes(marker: str, env_var: str | None = None) -> list[psutil.Process]:
    """Live processes (not zombies, not this one) whose command line contains ``marker``, or
    whose environment has ``env_var=marker``; a test asserts this is empty to prove no task
    command was orphaned."""
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.pid == me:
            continue
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
            elif env_var and p.environ().get(env_var) == marker:
                found.append(p)
        except psutil.Error:
            pass
    return found


def hpcq(*args, redis_url: str, input: str | None = None, timeout: float = 60,
         env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m scheduler.cli *args`` against ``redis_url``; text output, not checked."""
    full_env = dict(os.environ, HPCQ_REDIS_URL=redis_url, **(env or {}))
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *[str(a) for a in args]],
                          env=full_env, input=input, capture_output=True, text=True, timeout=timeout)
