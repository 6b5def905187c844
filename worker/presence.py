"""The worker's main process as the node's agent: it registers and heartbeats (naming the
attempts it really holds), kills what Redis no longer assigns to it, notices at once when a pool
process supervising an attempt dies, and at start cleans up after a previous life.

The main process is a child subreaper, so a dead pool process's command processes are
reparented to it and found by their marker, wherever they went."""

from __future__ import annotations

import logging
import os
import threading
import time

import psutil

from scheduler.errors import RedisUnavailable
from scheduler.api.model import Msg
from scheduler.settings import Settings
from scheduler.celery_events import announce_lost
from scheduler.core.schema import TaskState
from scheduler.transport import publish_revokes

from . import markers
from .registry import Registry, identity

log = logging.getLogger("hpcq.worker")


def _pool_alive(entry: dict) -> bool:
    try:
        p = psutil.Process(int(entry["pool_pid"]))
        return (abs(p.create_time() - float(entry["pool_started"])) < 0.01
                and p.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, KeyError, ValueError):
        return False


class Presence:
    def __init__(self, settings: Settings, store, celery_app):
        self.settings = settings
        self.store = store            # a callable returning this process's Store
        self.app = celery_app
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.beat_now = threading.Event()
        self.draining = False
        self.lock = threading.Lock()
        self.name: str | None = None
        self.slots = 0
        self.registry: Registry | None = None
        self.threads: list[threading.Thread] = []

    # --- start: clean up after a previous life ------------------------------------------------
    def prepare(self, name: str, slots: int) -> None:
        """Before the worker takes work: kill every process a previous life of this worker left
        (found by the marker it put in their environment), record what it held, and end as lost
        what Redis still holds on it."""
        self.name, self.slots = name, slots
        self.registry = Registry(self.settings.run_dir, name)
        self.registry.clear_shutdown()
        self.registry.clear_stale_marks()
        killed = markers.kill_marked(markers.WORKER_VAR, [identity(name, self.settings.redis_url)])
        if killed:
            log.warning("killed %d process(es) left by a previous run of %s", killed, name)
        st = self.store()
        error = Msg.worker_lost.format(name)
        ended = []      # what had started: Flower shows it running until told (celery_events)
        try:
            for entry in self.registry.entries():
                reply = self.lost(entry, error, kill=False, wait=True)
                if reply and reply[1] and not entry.get("result"):
                    ended.append((entry["celery_id"], reply[1]))
            tids = st.worker_tasks(name)
            for tid, rec in zip(tids, st.tasks(tids)):
                _, reason, _ = st.finish(tid, rec.get("token", ""), "lost", error=error,
                                         retry_cap=self.settings.task_retry_count)
                if reason and rec.get("state") != TaskState.Dispatching and rec.get("celery_id"):
                    ended.append((rec["celery_id"], reason))
        except RedisUnavailable as exc:
            log.warning("%s: the heartbeat will reconcile later", exc)
        finally:
            announce_lost(self.app, {name: ended})

    def start(self) -> None:
        if self.threads:
            return            # worker_ready again after a reconnect: already beating
        for target, name in ((self.beat, "hpcq-heartbeat"), (self.guard, "hpcq-guard")):
            t = threading.Thread(target=target, daemon=True, name=name)
            t.start()
            self.threads.append(t)
        try:
            self.beat_once()      # registered as soon as it is ready
        except RedisUnavailable as exc:
            log.warning("heartbeat: %s; retrying", exc)

    # --- heartbeat and reconciliation ---------------------------------------------------------
    def offers(self) -> dict:
        """What this worker advertises (``hpcq worker --cores/--memory/--gpus/--group``):
        cores default to its slots and memory to the machine's; more than the machine has may
        be advertised (over-subscription is the operator's choice)."""
        from scheduler.core import resources
        cfg = self.settings
        return {"cores": cfg.worker_cores or self.slots,
                "memory": cfg.worker_memory or psutil.virtual_memory().total // (1 << 20),
                "gpus": resources.parse_gpus(cfg.worker_gpus),
                "groups": resources.parse_groups([cfg.worker_groups])}

    def beat_once(self) -> None:
        from scheduler.core import keys
        held = [(e["task_id"], e["token"]) for e in self.registry.entries()]
        stale, revokes = self.store().heartbeat(
            self.name, self.slots, keys.worker_queue(self.name), {"pid": os.getpid()}, held,
            self.settings.reconcile_grace, self.settings.task_retry_count,
            "draining" if self.draining else "online", self.offers())
        if stale:
            from scheduler.transport import celery_id
            ids = [celery_id(t, k) for t, k in stale]
            n = markers.kill_marked(markers.ATTEMPT_VAR, ids, self.descendants)
            log.warning("attempts no longer ours: %s; %d process(es) killed", ", ".join(ids), n)
        if revokes:
            publish_revokes(self.app, revokes)

    def beat(self) -> None:
        down_since = None
        while not self.stop.is_set():
            self.beat_now.wait(self.settings.heartbeat_interval)
            self.beat_now.clear()
            if self.stop.is_set():
                break
            try:
                self.beat_once()
                if down_since is not None:
                    log.warning("Redis is back after %.1f s", time.monotonic() - down_since)
                down_since = None
            except RedisUnavailable as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("heartbeat: %s; tasks run on, retrying", exc)
            except Exception:
                log.exception("heartbeat")

    @staticmethod
    def descendants() -> list[psutil.Process]:
        try:
            return psutil.Process().children(recursive=True)
        except psutil.Error:
            return []

    # --- the guard: a dead pool process is noticed at once ------------------------------------
    def guard(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(0.25)
            self.wake.clear()
            try:
                self.check_pools()
            except Exception:
                log.exception("guard")

    def check_pools(self, cause: str | None = None) -> None:
        for entry in self.registry.entries():
            if not _pool_alive(entry):
                self.lost(entry, Msg.supervisor_died.format(
                    self.name, cause or f"pid {entry.get('pool_pid')}, killed or crashed"))

    def lost(self, entry: dict, error: str, kill: bool = True, wait: bool = False):
        """The attempt's supervisor is gone: kill its processes, then record its held result or
        record it lost (rerun if rerunnable).  Token-checked, so doing it twice is harmless.
        Returns Store.finish's reply (its message empty if the attempt had ended already), or
        None if nothing was recorded.  Celery is not told: while the worker's main process
        lives, Celery reports a dead pool process itself (task-failed, WorkerLostError)."""
        with self.lock:
            cid = entry["celery_id"]
            if not os.path.exists(self.registry.path(cid)):
                return            # handled meanwhile (the guard and Celery's report race)
            if kill:
                markers.kill_marked(markers.ATTEMPT_VAR, [cid], self.descendants)
            args = entry.get("result") or [entry["task_id"], entry["token"], "lost", None, error,
                                           "", 0.0, 0.0, 0]
            try:
                reply = self.store().finish(*args, retry_cap=self.settings.task_retry_count)
            except RedisUnavailable as exc:
                if not wait:
                    if not entry.get("result"):
                        self.registry.update(entry, result=args)
                        log.warning("%s: the end of %s is held until Redis is back", exc, cid)
                    return
                raise
            self.registry.remove(cid)
            log.warning("attempt %s of %s: %s -> %s", entry["token"], entry["task_id"],
                        args[4] or "its held result", reply[0])
            if reply[2]:
                publish_revokes(self.app, reply[2])
            return reply

    # --- shutdown -----------------------------------------------------------------------------
    def shutting_down(self, how: str) -> None:
        """Tell every pool process running an attempt to stop it: warm gives each task its grace
        period, cold stops it at once; either way it is recorded lost (rerun if rerunnable)."""
        if not self.registry:
            return
        # No new work (the next beat, at once, says draining), but go on heartbeating while the
        # tasks stop, so the worker is not declared lost meanwhile.  This runs in a signal
        # handler: Redis is left to the heartbeat thread.
        self.draining = True
        self.beat_now.set()
        self.registry.set_shutdown("cold" if how.lower().startswith("cold") else "warm")
        for entry in self.registry.entries():
            if _pool_alive(entry):
                try:
                    os.kill(int(entry["pool_pid"]), 15)
                except OSError:
                    pass

    def leave(self) -> None:
        """No more heartbeats, then marked gone: no heartbeat may land after the mark."""
        self.stop.set()
        self.wake.set()
        self.beat_now.set()
        for t in self.threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        if self.name:
            try:
                self.store().unregister_worker(self.name)
            except RedisUnavailable as exc:
                log.warning("unregister: %s", exc)

    def finish_all(self) -> None:
        """At the very end: whatever a pool process left unrecorded is recorded now."""
        if not self.registry:
            return
        for entry in self.registry.entries():
            if not _pool_alive(entry):
                try:
                    self.lost(entry, Msg.worker_stopped.format(self.name))
                except RedisUnavailable:
                    pass
