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
import signal

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.utils.functional import maybe_list
from celery.worker import control

from scheduler.core.schema import cancel_texts
from scheduler.settings import get_settings
from scheduler.core.store import Store
from scheduler.transport import RECORDED, make_celery, parse_celery_id

from . import command, subreaper
from .presence import Presence
from .registry import Registry

log = logging.getLogger("hpcq.worker")
settings = get_settings()
app = make_celery(settings.redis_url)
app.conf.update(worker_concurrency=os.cpu_count() or 2, worker_max_tasks_per_child=None,
                imports=["worker.run"])


@functools.cache
def pool_settings():
    """The settings, read once per pool process (reading them cost ~0.2 ms of every attempt)."""
    return get_settings()


@functools.cache
def store() -> Store:
    """One Store per process (the pool forks after the main process imports this module)."""
    cfg = pool_settings()
    # With a fence, a cut link must be noticed well within fence_after.
    timeout = min(cfg.redis_timeout, cfg.fence_after / 4) if cfg.fence_after > 0 else cfg.redis_timeout
    # A pool process makes its calls one at a time on one thread: one connection, without the
    # connection pool's checkout and return (a fifth of redis-py's CPU per call).
    return Store(cfg.redis_url, timeout=timeout, single=_in_pool)


#: Whether this process is one of the worker's pool processes (set as each one starts).
_in_pool = False


def record_revoke(celery_id: str, force: bool = False) -> None:
    parsed = parse_celery_id(celery_id)
    if not parsed:
        return
    tid, token = parsed
    try:
        store().cancel_task(tid, *cancel_texts(""), force=force,
                            mode="revoke", token=token)
    except Exception as exc:  # an unknown or finished task: nothing to record
        log.info("revoke %s: %s", celery_id, exc)


@control.control_command(name="revoke", variadic="task_id", signature="[id1 [id2 [... [idN]]]]")
def revoke(state, task_id, terminate=False, signal=None, **kwargs):
    """Revoke task by task id (or list of ids): an hpcq cancel of that attempt."""
    ids = set(maybe_list(task_id) or [])
    force = str(signal or "").upper() in ("SIGKILL", "KILL", "9")
    if not kwargs.pop(RECORDED, False):
        for cid in ids:
            record_revoke(cid, force=force)
    elif terminate and presence.registry:
        # hpcq's own revokes are recorded before they are sent: the pool process may stop the
        # command at once and read the cancel's grace from Redis after (Registry.mark_stop)
        for cid in ids:
            presence.registry.mark_stop(cid, force)
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
    global _in_pool
    subreaper.become_subreaper()
    # Celery makes a pool process die with SIGKILL when the main process dies, which would
    # orphan the command; with SIGTERM its attempt stops the command first and records it lost.
    subreaper.die_with_parent(signal.SIGTERM)
    command.close_on_exec()
    _in_pool = True
    store.cache_clear()
    pool_settings.cache_clear()


@functools.cache
def registry(worker: str) -> Registry:
    return Registry(settings.run_dir, worker)


presence = Presence(settings, store, app)


@signals.worker_init.connect
def on_init(sender=None, **kwargs):
    # Orphans of a pool process that dies come back to the main process (see presence.py).
    subreaper.become_subreaper()
    presence.prepare(sender.hostname, sender.concurrency)


@signals.worker_ready.connect
def on_ready(sender=None, **kwargs):
    presence.start()


@signals.task_failure.connect
def on_task_failure(sender=None, task_id=None, exception=None, **kwargs):
    # In the main process, billiard reports a pool process that died under a task.
    if isinstance(exception, WorkerLostError):
        presence.check_pools(cause=str(exception))


@signals.worker_shutting_down.connect
def on_shutting_down(sender=None, how="Warm", **kwargs):
    # Stop being offered tasks at once, and stop what runs (see Presence.shutting_down).
    presence.shutting_down(str(how))


@signals.worker_shutdown.connect
def on_shutdown(sender=None, **kwargs):
    presence.leave()
    presence.finish_all()
