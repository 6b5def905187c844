"""The Celery task that runs one attempt of an hpcq task and supervises its process tree.

The attempt starts only through the atomic Dispatching -> Running check, and ends with the
token-checked finish step once every process of the command is gone."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack

from celery.exceptions import Ignore

from scheduler import sweep
from scheduler.model import Msg
from scheduler.settings import get_settings
from scheduler.store import Store
from scheduler.transport import RUN_TASK, publish_revokes

from . import supervisor
from .app import app, store

log = logging.getLogger("hpcq.worker")


class TaskFailed(Exception):
    """The hpcq task ended Failed: Celery (and Flower) record FAILURE with this message."""


def _describe(status: int) -> tuple[int, str]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return -sig, Msg.killed.format(signal.Signals(sig).name)
    code = os.waitstatus_to_exitcode(status)
    return code, "" if code == 0 else Msg.exit_code.format(code)


class Attempt:
    def __init__(self, task, task_id: str, token: str, st: Store):
        self.celery_task = task
        self.task_id = task_id
        self.token = token
        self.store = st
        self.settings = get_settings()
        self.term = False
        self.parent = os.getppid()
        self.waiter: supervisor.Waiter | None = None

    # SIGTERM from Celery (revoke with terminate) or from a pool shutdown.
    def on_term(self, signum, frame):
        self.term = True
        if self.waiter:
            self.waiter.nudge()

    def run(self):
        # The handler only sets a flag: a SIGTERM may arrive anywhere, even between the start
        # check and the spawn, and is acted on by the supervision loop.  The start check itself is
        # what guarantees a canceled task never starts: a cancel is recorded in Redis before any
        # revoke is sent, and the check refuses a task that is no longer Dispatching.
        old = signal.signal(signal.SIGTERM, self.on_term)
        try:
            ok, value, spec = self.store.start(self.task_id, self.token, os.getpid())
            if not ok:
                # Canceled (or superseded) before it started: its command never runs.
                self.celery_task.send_event("task-revoked", terminated=False, signum=None,
                                            expired=False)
                raise Ignore()
            proc = out = error = None
            with ExitStack() as files:
                try:
                    proc, out = self.spawn(spec, value, files)
                except OSError as exc:
                    error = self.start_error(spec, exc)
            if proc is None:
                return self.finish("exit", None, error, "", None)
            try:
                return self.supervise(proc, out, spec)
            except (TaskFailed, Ignore):
                raise
            except Exception as exc:
                # A bug or a lost Redis must not leave processes or a task stuck Running.
                log.exception("supervising %s", self.task_id)
                supervisor.kill_all(proc.pid, None)
                return self.finish("exit", None, f"The worker failed while running the task: {exc}", "", None)
        finally:
            signal.signal(signal.SIGTERM, old)

    def start_error(self, spec, exc: OSError) -> str:
        wd = spec.get("work_dir")
        if wd and not os.path.isdir(wd):
            return f"The task could not start: its working directory {wd} does not exist."
        return f"The task could not start: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")

    def spawn(self, spec: dict, value: str, files: ExitStack):
        v = int(value) if value else None

        def sub(field):
            raw = spec.get(field)
            return sweep.substitute(raw, v) if raw is not None and v is not None else raw

        env = dict(os.environ)
        env.update(json.loads(spec.get("env") or "{}"))
        j, t, *i = self.task_id.split(".")
        env.update(HPCQ_JOB_ID=j, HPCQ_TASK_ID=self.task_id, HPCQ_TASK_NUMBER=t,
                   HPCQ_INSTANCE=i[0] if i else "", HPCQ_SWEEP_VALUE=value or "")
        wd = spec.get("work_dir") or None
        if wd and not os.path.isdir(wd):
            raise FileNotFoundError(2, "No such directory", wd)
        stdin = files.enter_context(open(self._path(sub("stdin"), wd), "rb")) if spec.get("stdin") else subprocess.DEVNULL
        out = None
        if not spec.get("stdout") or not spec.get("stderr"):
            out = files.enter_context(tempfile.TemporaryFile())
        stdout = files.enter_context(open(self._path(sub("stdout"), wd), "wb")) if spec.get("stdout") else out
        stderr = files.enter_context(open(self._path(sub("stderr"), wd), "wb")) if spec.get("stderr") else (
            subprocess.STDOUT if stdout is out else out)
        proc = subprocess.Popen(["/bin/sh", "-c", sub("command")], cwd=wd, env=env, stdin=stdin,
                                stdout=stdout, stderr=stderr, start_new_session=True,
                                close_fds=True)
        self.store.set_fields(self.task_id, pid=proc.pid)
        # keep the capture file open past the ExitStack
        return proc, (os.fdopen(os.dup(out.fileno()), "rb") if out is not None else None)

    @staticmethod
    def _path(p, wd):
        return os.path.join(wd, p) if wd and not os.path.isabs(p) else p

    def supervise(self, proc: subprocess.Popen, out, spec: dict):
        pid = proc.pid
        self.waiter = w = supervisor.Waiter(pid)
        started = time.monotonic()
        runtime = float(spec.get("runtime") or 0)
        poll = self.settings.cancel_poll_interval
        next_poll = started + poll
        stopping = None      # None, or why: "cancel" | "shutdown"
        kill_at = None
        status = rusage = None
        keep = pid           # the main process is reaped only by wait4 below
        if self.term:
            w.nudge()
        try:
            while True:
                now = time.monotonic()
                wakes = [next_poll] + [x for x in (kill_at,) if x] + (
                    [started + runtime] if runtime and not stopping else [])
                exited, nudged = w.wait(min(wakes) - now, exited=status is not None)
                if exited and status is None:
                    _, status, rusage = os.wait4(pid, 0)
                    keep = None
                    if not stopping:
                        break
                now = time.monotonic()
                if nudged or now >= next_poll:
                    next_poll = now + poll
                    why, force, grace = self.check(nudged and self.term)
                    if why and not stopping:
                        stopping = why
                        supervisor.signal_tree(pid, signal.SIGKILL if force else signal.SIGTERM, keep)
                        kill_at = now if force else now + grace
                    elif why and force and kill_at and kill_at > now:
                        kill_at = now
                    self.term = False
                if runtime and not stopping and now >= started + runtime:
                    self.store.cancel_task(self.task_id, Msg.task_runtime_expired,
                                           Msg.task_runtime_expired, mode="revoke", token=self.token)
                    stopping = "cancel"
                    supervisor.signal_tree(pid, signal.SIGTERM, keep)
                    kill_at = now + self.settings.task_cancel_grace_period
                if kill_at and now >= kill_at:
                    supervisor.kill_all(pid, keep)
                    kill_at = None
                keep = None if status is not None else pid
                if stopping and status is not None and supervisor.gone():
                    break
        finally:
            w.close()
            self.waiter = None
        # The command's main process is done: nothing it left behind may outlive the task.
        if supervisor.descendants():
            supervisor.signal_tree(pid, signal.SIGTERM)
            end = time.monotonic() + 1.0
            while supervisor.descendants() and time.monotonic() < end:
                time.sleep(0.02)
            supervisor.kill_all(pid)
        code, error = _describe(status)
        output = ""
        if out is not None:
            out.seek(0)
            output = out.read(self.settings.output_limit).decode("utf-8", "replace")
            out.close()
        usage = (rusage.ru_utime, rusage.ru_stime, rusage.ru_maxrss * 1024)
        if stopping == "shutdown":
            return self.finish("lost", code, Msg.worker_stopped.format(self.celery_task.request.hostname), output, usage)
        return self.finish("exit", code, error, output, usage)

    def check(self, signaled: bool):
        """Is this attempt to stop, why, forced, and with what grace?"""
        rec = self.store.task(self.task_id) or {}
        if rec.get("token") != self.token:
            return "shutdown", True, 0.0          # superseded: stop without recording
        if rec.get("state") == "Canceling":
            grace = rec.get("cancel_grace")
            grace = float(grace) if grace not in (None, "") else self.settings.task_cancel_grace_period
            return "cancel", rec.get("cancel_force") == "1", grace
        # Every revoke passes through the worker's revoke command, which records the cancel
        # before it signals; so a SIGTERM with nothing recorded is the pool shutting down (a
        # cold shutdown), as is the worker's main process dying under us.
        if signaled or os.getppid() != self.parent:
            return "shutdown", False, min(self.settings.task_cancel_grace_period, 5.0)
        return None, False, 0.0

    def finish(self, outcome, code, error, output, usage):
        usage = usage or (0.0, 0.0, 0)
        state, message, revokes = self.store.finish(
            self.task_id, self.token, outcome, code, error, output, *usage)
        if revokes:
            publish_revokes(app, revokes)
        if state != "Finished":
            # Failed, stopped for a requeue, lost, or superseded: never a Celery SUCCESS.
            raise TaskFailed(message or error or f"the attempt ended {state}")
        return {"task": self.task_id, "state": state, "exit_code": code}


@app.task(bind=True, name=RUN_TASK, throws=(TaskFailed,), ignore_result=True, acks_late=False)
def run(self, task_id: str, token: str):
    return Attempt(self, task_id, token, store()).run()
