"""The cluster under chaos: each worker and scheduler a process on a network-namespace host of
its own (tests/netns.py), killed with SIGKILL and restarted under the same name; what a service
manager would do for one that exits on its own; and finding the run's processes, wherever they
ended up, by the marker variable in their environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil

from bench.chaos.config import MARKER_VAR, ROOT
from scheduler.core import keys
from tests.support.procs import processes

if TYPE_CHECKING:
    from bench.chaos.run import Chaos


class Daemon:
    """A worker or scheduler process on its own host, restartable under the same name."""

    def __init__(self, chaos: Chaos, kind: str, name: str, host):
        self.chaos, self.kind, self.name, self.host = chaos, kind, name, host
        self.popen: subprocess.Popen | None = None
        self.log_path = os.path.join(chaos.logdir, f"{kind}-{name.split('@')[0]}.log")
        self.lives = 0
        self.down_since: float | None = None
        self.killed = False           # down because the chaos killed it: a restart is planned

    def argv(self) -> list[str]:
        if self.kind == "worker":
            return [sys.executable, "-m", "scheduler.cli", "worker", "--hostname", self.name,
                    "--concurrency", str(self.chaos.cfg.concurrency)]
        return [sys.executable, "-m", "scheduler.cli", "scheduler"]

    def start(self) -> None:
        self.lives += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== chaos: life {self.lives} of {self.name} at "
                      f"t={self.chaos.now():.2f}\n".encode())
            log.flush()
            self.popen = self.host.popen(self.argv(), env=self.chaos.env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT)
        self.down_since = None
        self.killed = False
        self.chaos.note(f"{self.name} life {self.lives}: pid {self.popen.pid}")

    @property
    def up(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def kill(self, whole: bool) -> None:
        """SIGKILL the main process, or (whole) its process group: main and pool processes.
        The task commands run in sessions of their own, so they are orphaned, not killed."""
        if not self.up:
            return
        try:
            if whole:
                os.killpg(self.popen.pid, signal.SIGKILL)
            else:
                os.kill(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.killed = True
        self.popen.wait(10)
        self.down_since = self.chaos.now()

    def exit_reason(self) -> str:
        """Why the process exited on its own: its exit status and the last error it logged."""
        reason = ""
        try:
            with open(self.log_path, errors="replace") as f:
                lines = f.read().split("===== chaos: life")[-1].splitlines()
            critical = [x for x in lines if "CRITICAL" in x or "Unrecoverable error" in x]
            errors = [x for x in lines if "ERROR" in x or "Traceback" in x]
            reason = (critical or errors or [""])[0].strip()[:200]
        except OSError:
            pass
        return f"exit status {self.popen.returncode}" + (f": {reason}" if reason else "")

    def stop(self, timeout: float = 25.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.chaos.note(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM: killed")
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def pool_processes(self) -> list[psutil.Process]:
        """The worker's Celery pool processes (its children that are not task commands)."""
        if not self.up:
            return []
        out = []
        try:
            for p in psutil.Process(self.popen.pid).children():
                try:
                    if "python" in p.name().lower() and "HPCQ_ATTEMPT" not in p.environ():
                        out.append(p)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return out


class Cluster:
    """Part of ``Chaos`` (bench/chaos/run.py): starting and stopping the daemons, restarting
    them, and the run's processes."""

    def start_cluster(self) -> None:
        cfg = self.cfg
        for k in range(1, cfg.schedulers + 1):
            self.daemons.append(Daemon(self, "scheduler", f"s{k}", self.net.host(f"s{k}")))
        for k in range(1, cfg.workers + 1):
            self.daemons.append(Daemon(self, "worker", f"w{k}@{self.tag}", self.net.host(f"w{k}")))
        for dmn in self.daemons:
            dmn.start()
        deadline = time.monotonic() + 90
        for w in self.workers:
            while self.r.zscore(keys.WORKERS, w.name) is None:
                if not w.up:
                    raise RuntimeError(f"worker {w.name} exited at start; see {w.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {w.name} did not register; see {w.log_path}")
                time.sleep(0.1)
        while not self.r.get(keys.LEADER):
            if time.monotonic() > deadline:
                raise RuntimeError("no scheduler took the lease")
            time.sleep(0.1)
        self.note(f"cluster up: {cfg.workers} workers x {cfg.concurrency}, {cfg.schedulers} "
                  f"schedulers, Redis {self.url} (AOF), run dir {self.workdir}")

    @property
    def workers(self) -> list[Daemon]:
        return [d for d in self.daemons if d.kind == "worker"]

    @property
    def schedulers(self) -> list[Daemon]:
        return [d for d in self.daemons if d.kind == "scheduler"]

    def stop_cluster(self) -> None:
        for w in self.workers:
            w.stop()
        for s in self.schedulers:
            s.stop()
        left = self.marked(attempts_only=False)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.marked(attempts_only=False)
        self.left_after_stop = self.describe(left)
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass

    def marked(self, attempts_only: bool) -> list[psutil.Process]:
        return processes(env={MARKER_VAR: self.tag}, has_env=("HPCQ_ATTEMPT",) if attempts_only else ())

    def describe(self, procs) -> list[str]:
        """One line per process: pid, parent, age in the run, state, attempt, kernel wait
        channel, command line."""
        out = []
        wall0 = time.time() - self.now()
        for p in procs:
            try:
                env = p.environ()
                try:
                    with open(f"/proc/{p.pid}/wchan") as f:
                        wchan = f.read().strip()
                except OSError:
                    wchan = "?"
                out.append(f"pid {p.pid} (parent {p.ppid()}, started t={p.create_time() - wall0:.2f}, "
                           f"{p.status()}, wchan {wchan}, worker {env.get('HPCQ_WORKER', '-')}, "
                           f"attempt {env.get('HPCQ_ATTEMPT', '-')}): {' '.join(p.cmdline())[:120]}")
            except psutil.Error:
                out.append(f"pid {p.pid} (gone)")
        return out

    def _restart_later(self, d: Daemon, lo: float, hi: float) -> None:
        self.at(self.now() - self.t_chaos + self.op_rng.uniform(lo, hi), "restart", d)

    def supervise(self, delay: tuple[float, float] = (0.5, 2.0)) -> None:
        """What a service manager does: a worker or scheduler that exited without being killed
        by the chaos is restarted (after ``delay``); each such exit is counted and reported."""
        for d in self.daemons:
            if d.popen is None or d.up or d.killed:
                continue
            reason = d.exit_reason()
            self.unexpected.append((d.name, round(self.now(), 2), reason))
            self.note(f"UNEXPECTED EXIT of {d.name} (life {d.lives}), {reason}")
            d.killed = True
            if delay[1] > 0:
                self._restart_later(d, *delay)
            else:
                self.op_restart(d)

    def op_restart(self, d: Daemon) -> None:
        if not d.up:
            d.start()
            self.note(f"restarted {d.name} (life {d.lives})")
