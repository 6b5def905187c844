"""The Celery app of hpcq's workers (``celery -A worker.app``), its lifecycle hooks, and the
revoke/terminate control commands that make Celery's own tools cancel the way hpcq does.

A revoke names an attempt (``hpcq-J.T-TOKEN``).  Before Celery acts on it, the worker records
the cancel in Redis (token-checked, so a stale revoke cannot touch a newer attempt), and the
signal always sent to the pool process is SIGTERM: a SIGKILL there would orphan the command's
processes, so a requested SIGKILL becomes a forced cancel instead."""

from __future__ import annotations

import functools
import logging
import os
import threading

from celery import signals
from celery.utils.functional import maybe_list
from celery.worker import control

from scheduler.model import Msg
from scheduler.settings import get_settings
from scheduler.store import Store
from scheduler.transport import make_celery, parse_celery_id

from . import supervisor

log = logging.getLogger("hpcq.worker")
settings = get_settings()
app = make_celery(settings.redis_url)
app.conf.update(worker_concurrency=os.cpu_count() or 2, worker_max_tasks_per_child=None,
                imports=["worker.run"])


@functools.cache
def store() -> Store:
    """One Store per process (the pool forks after the main process imports this module)."""
    return Store(get_settings().redis_url)


def record_revoke(celery_id: str, force: bool = False) -> None:
    parsed = parse_celery_id(celery_id)
    if not parsed:
        return
    tid, token = parsed
    try:
        store().cancel_task(tid, Msg.canceled_by_user.format(""),
                            Msg.canceled_during_execution.format(""), force=force,
                            mode="revoke", token=token)
    except Exception as exc:  # an unknown or finished task: nothing to record
        log.info("revoke %s: %s", celery_id, exc)


@control.control_command(name="revoke", variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(state, task_id, terminate=False, signal=None, **kwargs):
    """Revoke task by task id (or list of ids): an hpcq cancel of that attempt."""
    ids = set(maybe_list(task_id) or [])
    force = str(signal or "").upper() in ("SIGKILL", "KILL", "9")
    for cid in ids:
        record_revoke(cid, force=force)
    # Always terminate with SIGTERM: a running attempt's supervisor then stops its whole tree.
    return control._revoke(state, ids, terminate=True, signal="SIGTERM", **kwargs)


@control.control_command(name="terminate", variadic="task_id", args=[("signal", str)],
                         signature="<signal> [id1 [id2 [... [idN]]]]")
def terminate(state, signal, task_id, **kwargs):
    """Terminate task by task id (or list of ids): an hpcq cancel of that attempt."""
    return revoke(state, task_id, terminate=True, signal=signal)


@signals.task_revoked.connect
def on_task_revoked(sender=None, request=None, terminated=None, **kwargs):
    # A revoke that reached Celery some other way (a persisted revoked id, stamped headers).
    if request is not None and not terminated:
        record_revoke(request.id)


@signals.worker_process_init.connect
def on_pool_process(**kwargs):
    supervisor.become_subreaper()
    store.cache_clear()


class Presence:
    """Registers the worker and its slot count in Redis and heartbeats until shutdown."""

    def __init__(self):
        self.stop = threading.Event()
        self.name = None
        self.thread: threading.Thread | None = None

    def start(self, name: str, slots: int) -> None:
        from scheduler import keys
        self.name = name
        st = store()
        self.recover(st, name)
        st.register_worker(name, slots, keys.worker_queue(name), {"pid": os.getpid()})
        self.thread = threading.Thread(target=self.beat, daemon=True, name="hpcq-heartbeat")
        self.thread.start()

    @staticmethod
    def recover(st: Store, name: str) -> None:
        """Attempts a previous life of this worker left behind are lost: requeue or fail them."""
        for tid in st.worker_tasks(name):
            rec = st.task(tid) or {}
            st.finish(tid, rec.get("token", ""), "lost", error=Msg.worker_lost.format(name))

    def leave(self) -> None:
        """No more heartbeats, then marked gone: no heartbeat may land after the mark."""
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        if self.name:
            store().unregister_worker(self.name)

    def beat(self) -> None:
        while not self.stop.wait(settings.heartbeat_interval):
            try:
                store().heartbeat(self.name)
            except Exception as exc:
                log.warning("heartbeat: %s", exc)


presence = Presence()


@signals.worker_ready.connect
def on_ready(sender=None, **kwargs):
    presence.start(sender.hostname, sender.controller.concurrency)


@signals.worker_shutting_down.connect
@signals.worker_shutdown.connect
def on_shutdown(sender=None, **kwargs):
    # Stop being offered tasks at once (warm shutdown may take long), and again at the end.
    presence.leave()
