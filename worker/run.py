"""The Celery task that runs one attempt of an hpcq task and supervises its process tree.

The attempt starts only through the atomic Dispatching -> Running check, and ends with the
token-checked finish step once every process of the command is gone.  Redis may be away at any
point: the command runs on (unless ``fence_after`` says otherwise), and a result that cannot be
recorded yet is held in the worker's registry and retried until Redis answers."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from contextlib import ExitStack

import psutil
from celery import signals
from celery.exceptions import Ignore

from scheduler.errors import RedisUnavailable
from scheduler.api.model import Msg
from scheduler.settings import get_settings
from scheduler.core.store import Store
from scheduler.transport import RUN_TASK, publish_revokes

from . import accounting, subreaper, supervisor
from .app import app, pool_settings, registry, store
from .command import StartError, spawn
from .output import excerpt
from .waiter import Waiter

log = logging.getLogger("hpcq.worker")

#: A command's main process exited by itself: what it left behind gets SIGTERM and this long to
#: go before SIGKILL, and only then is the task recorded.
LEFTOVERS_GRACE = 1.0
#: The command's pid and spool file are written to its record once it has run this long; one
#: that ends sooner has them recorded with its result (a short task saves a round trip).
PID_AFTER = 0.02


@signals.worker_ready.connect
def on_ready(sender=None, **kwargs):
    log.info(accounting.describe(get_settings().accounting))


@functools.cache
def pool_identity(pid: int) -> tuple[int, float]:
    """This pool process as the registry names it: pid and start time (read once per process)."""
    return pid, psutil.Process(pid).create_time()


class TaskFailed(Exception):
    """The hpcq task ended Failed: Celery (and Flower) record FAILURE with this message."""


def _describe(status: int) -> tuple[int, str]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return -sig, Msg.killed.format(signal.Signals(sig).name)
    code = os.waitstatus_to_exitcode(status)
    return code, "" if code == 0 else Msg.exit_code.format(code)


def retrying(fn, give_up=lambda: False, first: float = 0.1, most: float = 5.0):
    """``fn()`` until Redis answers (backoff up to ``most`` s), or None once ``give_up()``."""
    delay = first
    while True:
        try:
            return fn()
        except RedisUnavailable as exc:
            if give_up():
                return None
            log.warning("%s; retrying in %.1f s", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, most)


class Attempt:
    def __init__(self, task, task_id: str, token: str, st: Store):
        self.celery_task = task
        self.task_id = task_id
        self.token = token
        self.store = st
        self.settings = pool_settings()
        self.worker = task.request.hostname or ""
        self.registry = registry(self.worker)
        self.term = False
        self.parent = os.getppid()
        self.waiter: Waiter | None = None
        #: When Redis last answered this attempt (the fence counts from here).
        self.last_ok = time.monotonic()
        self.runtime_expired = False
        self.entry: dict = {}
        self.acct: accounting.Accounting | None = None
        #: The command's pid and spool file while not yet in its record.
        self.unrecorded: dict = {}
        #: Stopped on the main process's word (a cancel hpcq recorded): its grace still to read.
        self.marked = False
        #: The command's stop ladder while it is supervised (``watch``).
        self.tree: supervisor.Stopper | None = None

    # SIGTERM from Celery (revoke with terminate), from a pool shutdown or from our worker.
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
        self.entry = self.registry.add(self.task_id, self.token, *pool_identity(os.getpid()))
        cid = self.entry["celery_id"]
        try:
            limit = time.monotonic() + self.settings.dispatch_timeout + self.settings.worker_timeout
            reply = retrying(lambda: self.store.start(self.task_id, self.token, os.getpid()),
                             give_up=lambda: self.term or time.monotonic() > limit)
            if reply is None or not reply[0]:
                # Canceled or superseded before it started (or Redis stayed away so long that
                # the attempt was surely taken back): its command never runs.
                self.registry.remove(cid)
                self.celery_task.send_event("task-revoked", terminated=False, signum=None,
                                            expired=False)
                raise Ignore()
            _, value, spec = reply
            self.last_ok = time.monotonic()
            self.acct = accounting.Accounting(self.settings.accounting, self.token)
            try:
                with ExitStack() as files, self.acct.spawning():
                    pid, out, spool = spawn(spec, self.task_id, value, self.worker, cid,
                                             self.settings.redis_url, self.registry.path(cid, ".sh"),
                                             files, (self.settings.spool_dir, self.token))
            except StartError as exc:
                return self.finish("exit", None, str(exc), "", None)
            return self.supervise(pid, out, spool, spec)
        except (TaskFailed, Ignore):
            raise
        except Exception as exc:
            # A bug must not leave processes or a task stuck Running: the attempt is lost, once
            # the command was given its grace (a bug is no reason to cut a clean-up short).
            log.exception("running %s", self.task_id)
            self.stop_after_bug()
            return self.finish("lost", None, Msg.worker_failed.format(exc), "", None)
        finally:
            if self.acct is not None:
                self.acct.close()
            signal.signal(signal.SIGTERM, old)
            if os.getppid() != self.parent:
                os._exit(1)     # the worker's main process is gone: this pool process goes too

    def stop_after_bug(self) -> None:
        """The supervising code failed: stop the command as a cancel would, SIGTERM to its whole
        tree, its grace (a stop already under way keeps its own deadline), then SIGKILL until
        nothing of it is left; the caller then records the attempt lost.  Only a failure of the
        stopping itself falls back to SIGKILL at once."""
        tree = self.tree
        try:
            if tree is None or tree.done():
                tree = supervisor.Stopper()      # every descendant of this pool process
            if not tree.begun:
                tree.begin(self.bug_grace())
            tree.run()
            if tree.root:
                supervisor.reap(tree.root)
        except Exception:
            log.exception("stopping %s", self.task_id)
        supervisor.kill_now()                    # whatever is left, or appeared meanwhile

    def bug_grace(self) -> float:
        """The grace of a stop begun by a bug: the cancel's own if one is recorded, else the
        setting's."""
        try:
            grace = (self.store.task(self.task_id) or {}).get("cancel_grace")
            return float(grace) if grace not in (None, "") else self.settings.task_cancel_grace_period
        except Exception:
            return self.settings.task_cancel_grace_period

    def supervise(self, pid: int, out, spool, spec: dict):
        why, status = self.watch(pid, float(spec.get("runtime") or 0), spool)
        return self.conclude(why, status, out)

    def watch(self, pid: int, runtime: float, spool: str | None = None):
        """Wait for the command; whenever signaled and every poll interval ask ``check`` whether
        to stop it (and stop it at its runtime limit); the ``Stopper`` does the stopping.  Returns
        why it was stopped ("cancel", "shutdown", "fence", or "exited": it ended by itself) and its
        wait status, once its main process is reaped and nothing of its tree is left:
        what the main process left behind is stopped too (SIGTERM, ``LEFTOVERS_GRACE``, SIGKILL)."""
        cfg = self.settings
        self.waiter = w = Waiter(pid)
        tree = supervisor.Stopper(pid)         # never reaps pid: its status is collected here
        self.tree = tree
        now = time.monotonic()
        runtime_end = now + runtime if runtime else None
        next_poll = now + cfg.cancel_poll_interval
        why = status = None
        acct = self.acct
        if self.term:
            w.nudge()
        # the pid, and where `hpcq task output` finds (and follows) this attempt's whole output
        self.unrecorded = {"pid": pid, "spool": spool or ""}
        record_at = now + PID_AFTER
        gone = False          # nothing of it left, known without a walk
        try:
            while status is None or not (gone or tree.done()):
                wakes = [next_poll, tree.next_wake(), acct and acct.next_wake(),
                         record_at if self.unrecorded and status is None else None]
                if not why:
                    wakes += [runtime_end, self.fence_at()]
                wake = min(t for t in wakes if t is not None)
                exited, nudged = w.wait(wake - time.monotonic(), exited=status is not None)
                if exited and status is None:
                    _, status = os.waitpid(pid, 0)
                    if not why:
                        why = "exited"
                        gone = subreaper.childless()
                        if not gone:
                            tree.begin(LEFTOVERS_GRACE)
                now = time.monotonic()
                tree.step(now)                # first: a SIGKILL due now does not wait for Redis
                if self.unrecorded and status is None and now >= record_at:
                    self.record_pid()
                if acct:
                    acct.sample(now)          # sampling only (no cgroup), and only when due
                # Once it has ended by itself, how it ended is decided: only its leftovers remain.
                if why != "exited" and (nudged or now >= next_poll or self.fenced()):
                    next_poll = now + cfg.cancel_poll_interval
                    stop, force, grace = self.check(nudged and self.term)
                    self.term = False
                    why = self.act(tree, why, stop, force, grace)
                    if stop and grace is None:
                        next_poll = now       # the cancel's own grace: from Redis, right away
                if not why and runtime_end is not None and now >= runtime_end:
                    self.expire_runtime()
                    why = "cancel"
                    tree.begin(cfg.task_cancel_grace_period)
        finally:
            w.close()
            self.waiter = None
        return why, status

    def act(self, tree: supervisor.Stopper, why: str | None, stop: str | None, force: bool,
            grace: float | None) -> str | None:
        """What ``check`` said, done to the tree; returns why the attempt is stopping now.

        ``grace`` None means "a cancel hpcq recorded, its grace not read yet" (the main process's
        stop mark): the ladder begins with the setting's grace and the next check, at once, reads
        the cancel's own from Redis and regraces.  That mark can be read while a stop is already
        under way (the poll saw the cancel in Redis before the revoke's signal arrived): it then
        changes nothing but a forced cancel's escalation; the grace already running stands."""
        if not stop:
            return why
        if not why:
            tree.begin(self.settings.task_cancel_grace_period if grace is None else grace, force)
            return stop
        if force:
            tree.escalate()           # a forced cancel during the grace, a cold shutdown
        elif stop == why == "cancel" and self.marked and grace is not None:
            self.marked = False
            tree.regrace(grace)
        return why

    def record_pid(self) -> None:
        try:
            self.store.set_fields(self.task_id, **self.unrecorded)
            self.unrecorded = {}
        except RedisUnavailable:
            pass                      # recorded with the result

    def conclude(self, why: str, status: int, out):
        """How the attempt ended, as its finish call: stopped by a shutdown or by the fence it is
        lost (rerun if rerunnable); otherwise its exit is recorded (Failed if it was canceled)."""
        code, error = _describe(status)
        output = ""
        if out is not None:
            output = excerpt(out, self.settings.output_limit)
            out.close()
        usage = self.acct.usage() if self.acct else None
        if why == "shutdown":
            return self.finish("lost", code, Msg.worker_stopped.format(self.worker), output, usage,
                               drain=True)
        if why == "fence":
            return self.finish("lost", code, Msg.fenced.format(
                self.worker, f"{self.settings.fence_after:g}"), output, usage)
        if self.runtime_expired:
            error = Msg.task_runtime_expired
        return self.finish("exit", code, error, output, usage)

    def expire_runtime(self) -> None:
        try:
            self.store.cancel_task(self.task_id, Msg.task_runtime_expired,
                                   Msg.task_runtime_expired, mode="revoke", token=self.token)
        except RedisUnavailable:
            self.runtime_expired = True      # recorded with the result once Redis is back

    def check(self, signaled: bool):
        """Is this attempt to stop, why, forced, and with what grace (None: not known yet)?"""
        if signaled and not self.marked:
            mark = self.registry.stop_mark(self.entry["celery_id"])
            if mark:
                # a cancel hpcq recorded, said the main process before it signaled: stop now,
                # learn its grace from Redis at the next check
                self.marked = True
                return "cancel", mark == "kill", None
        how = self.registry.shutdown()
        try:
            if self.fenced():
                return self.fence_stop()
            rec = self.store.task(self.task_id) or {}
            self.last_ok = time.monotonic()
        except RedisUnavailable:
            # The command runs on through an outage, unless the worker is to fence itself.
            if self.fenced():
                return self.fence_stop()
            if signaled or how or os.getppid() != self.parent:
                return self.shutdown_stop(how)
            return None, False, 0.0
        if rec.get("token") != self.token:
            return "shutdown", True, 0.0          # superseded: stop without recording
        if rec.get("state") == "Canceling":
            grace = rec.get("cancel_grace")
            grace = float(grace) if grace not in (None, "") else self.settings.task_cancel_grace_period
            return "cancel", rec.get("cancel_force") == "1", grace
        # Every revoke passes through the worker's revoke command, which records the cancel
        # before it signals; so a SIGTERM with nothing recorded is the worker shutting down, as
        # is the worker's main process dying under us.
        if signaled or how or os.getppid() != self.parent:
            return self.shutdown_stop(how)
        return None, False, 0.0

    def fence_at(self) -> float | None:
        """When the fence stops this attempt if Redis does not answer before (None: no fence)."""
        fence = self.settings.fence_after
        return self.last_ok + fence if fence > 0 else None

    def fenced(self) -> bool:
        at = self.fence_at()
        return at is not None and time.monotonic() >= at

    def fence_stop(self):
        """Stopped in time to be gone before the worker can be declared lost (worker_timeout
        after Redis last heard from it): the grace period is cut to fit."""
        cfg = self.settings
        room = max(0.0, cfg.worker_timeout - cfg.fence_after - 1.0)
        return "fence", room == 0.0, min(cfg.task_cancel_grace_period, room)

    def shutdown_stop(self, how: str):
        """Warm shutdown: the task gets its grace period; cold (or the main process gone): none."""
        if how == "warm":
            return "shutdown", False, self.settings.task_cancel_grace_period
        return "shutdown", True, 0.0

    def finish(self, outcome, code, error, output, usage, drain=False):
        usage = usage or (0.0, 0.0, 0)
        args = (self.task_id, self.token, outcome, code, error, output, *usage)
        # Held in the registry until recorded: if this process dies now, the main process (or
        # the worker's next life) records it.
        self.registry.update(self.entry, result=list(args))
        give_up_at = [None]

        def give_up():
            # A worker that is shutting down leaves the held result to its next life.
            if not (self.term or self.registry.shutdown()):
                return False
            give_up_at[0] = give_up_at[0] or time.monotonic() + 10
            return time.monotonic() > give_up_at[0]

        # a job this failure fails is stopped by its op: its first step stops what runs (those
        # revokes come back here), the leading scheduler does the rest
        reply = retrying(lambda: self.store.finish(*args, retry_cap=self.settings.task_retry_count,
                                                   drain=drain, follow=False, **self.unrecorded),
                         give_up=give_up)
        if reply is None:
            raise TaskFailed("Redis could not be reached to record the result; it is kept for the worker's next start.")
        self.registry.remove(self.entry["celery_id"])
        state, message, revokes = reply
        if revokes:
            try:
                publish_revokes(app, revokes)
            except Exception as exc:
                log.warning("publishing revokes: %s", exc)
        if state != "Finished":
            # Failed, stopped for a requeue, lost, or superseded: never a Celery SUCCESS.
            raise TaskFailed(message or error or f"the attempt ended {state}")
        # a string: Celery logs and sends the result's repr, which took 0.2 ms for a dict
        return f"task {self.task_id} Finished, exit code {code}"


@app.task(bind=True, name=RUN_TASK, throws=(TaskFailed,), ignore_result=True, acks_late=False)
def run(self, task_id: str, token: str):
    return Attempt(self, task_id, token, store()).run()
