"""The scheduler daemon: the leader matches queued tasks to free worker slots.

Queued tasks wait in Redis, not in the broker: a Celery message is sent only for a task that a
live worker has a free slot for, routed to that worker's own queue.  So a queued task never
reaches a worker and canceling it touches only Redis.  Several schedulers may run; a lease in
Redis lets one dispatch at a time, and another takes over once the lease lapses."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid

from kombu.exceptions import OperationalError

from scheduler.errors import HpcqError, RedisUnavailable
from scheduler.api import permissions
from scheduler.api.model import Msg
from scheduler.settings import Settings
from scheduler.core.store import Store
from scheduler.display import READ_BYTES, Display, url_secrets
from scheduler.retention import Retention
from scheduler.celery_events import announce_lost
from scheduler.transport import DISPATCH_BATCH, make_celery, publish_revokes, send_attempts

log = logging.getLogger("hpcq.scheduler")


class Dispatcher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = Store(settings.redis_url, timeout=settings.redis_timeout)
        self.celery = make_celery(settings.redis_url)
        self.display = Display(secrets=url_secrets(settings.redis_url))
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.leading = False
        self.live: set[str] = set()
        self.reclaim_at = 0.0
        #: Redis' clock minus ours (heartbeats are stamped with Redis' clock).
        self.clock_offset = 0.0
        #: Since when this scheduler has reached Redis without a break.
        self.connected_since = time.monotonic()
        self.retention = Retention(self.store, settings.job_retention)
        #: Job ops left for the next tick (resume_ops ran out of its budget).
        self.more_ops = False

    def tick(self) -> int:
        """A full pass: expire job runtimes, then fill every live worker's free slots."""
        now = time.time()
        for job_id in self.store.due_jobs(now):
            self.expire_job(job_id)
        if now >= self.reclaim_at:
            self.clock_offset = self.store.time() - time.time()
            self.reclaim()
            self.reclaim_at = now + min(1.0, self.settings.worker_timeout / 4)
        self.store.release()      # holds and retry delays that are due
        self.resume_ops()
        purged = self.retention.step(now + self.clock_offset)
        if purged:
            log.info("purged %d job(s) ended more than %g s ago", purged, self.settings.job_retention)
        workers = self.store.live_workers(now + self.clock_offset - self.settings.worker_timeout)
        self.live = set(workers)
        return self.fill(workers)

    def resume_ops(self, budget: float = 0.2) -> None:
        """Job ops left unfinished (lib_ops.lua: a fail op started by a worker's result, or a
        client that stopped midway): steps for up to ``budget`` seconds a tick, dispatch between."""
        until = time.monotonic() + budget
        for job_id in self.store.job_ops():
            done = False
            while not done and time.monotonic() < until:
                done, revokes = self.store.job_step(job_id)
                publish_revokes(self.celery, revokes)
            if not done:
                self.more_ops = True
                return
        self.more_ops = False

    def fill(self, workers) -> int:
        """Hand queued tasks to ``workers`` where they fit (dispatch.lua places them by their
        resources), in calls of at most DISPATCH_BATCH, and send each attempt to its worker."""
        sent = 0
        while workers:
            attempts, heads = self.store.dispatch_shown(workers, DISPATCH_BATCH,
                                                        self.settings.dispatch_scan, READ_BYTES)
            if not attempts:
                break
            send_attempts(self.celery, self.store, self.display, attempts, heads,
                          self.settings.task_retry_count)
            sent += len(attempts)
            if len(attempts) < DISPATCH_BATCH:
                break
        return sent

    def reclaim(self) -> None:
        """Workers silent for ``worker_timeout`` are lost: each attempt they held ends (never
        started: queued again; started: rerun if rerunnable, up to ``task_retry_count``, else
        Failed).  Attempts sitting Dispatching on a live worker past ``dispatch_timeout`` (a
        scheduler killed between marking a task Dispatching and sending its message) are queued
        again.  A stale attempt, if it ever runs or ends, fails the token check, so this is always
        safe.  Right after this scheduler's own Redis outage nobody is declared lost: the silence
        may be the outage's.  The started attempts a lost worker held are shown ended in Flower
        (the task-failed events that worker never sent: scheduler/celery_events.py)."""
        cfg = self.settings
        now = time.time() + self.clock_offset
        if time.monotonic() - self.connected_since >= cfg.worker_timeout:
            silent = self.store.dead_workers(now - cfg.worker_timeout)
            ended = {}    # {worker: its started attempts that ended}, for Celery's monitors
            try:
                # (two pipelined reads for all of them: stopped workers stay listed a while)
                for name, state, held in zip(silent, self.store.worker_states(silent),
                                             self.store.busy_counts(silent)):
                    if state not in ("lost", "stopped") or held:
                        revokes, ended[name] = self.store.lose_worker(
                            name, Msg.worker_lost.format(name), Msg.never_started.format(name),
                            cfg.task_retry_count)
                        publish_revokes(self.celery, revokes)
                        log.warning("worker %s is lost (no heartbeat for %g s); its tasks were "
                                    "ended or queued again", name, cfg.worker_timeout)
            finally:
                announce_lost(self.celery, ended)     # never raises
            # forgotten 3 x worker_timeout after its last heartbeat, lost or stopped alike (a
            # stopped worker's score is 0), so `hpcq node list` shows either a while
            forget_before = now - 3 * cfg.worker_timeout
            for name in self.store.dead_workers(forget_before):
                if (not self.store.worker_tasks(name)
                        and self.store.last_beat(name) < forget_before):
                    self.store.forget_worker(name)
        # (DISPATCHING holds them by dispatch time: no worker's set is read)
        stranded = self.store.stranded(now - cfg.dispatch_timeout)
        for tid, rec in zip(stranded, self.store.tasks(stranded)):
            if rec.get("state") == "Dispatching":
                name = rec.get("node", "")
                self.store.finish(tid, rec.get("token", ""), "lost",
                                  error=Msg.never_started.format(name),
                                  retry_cap=cfg.task_retry_count)
                log.info("task %s never started on %s; queued again", tid, name)

    def expire_job(self, job_id: int) -> None:
        msg = Msg.job_runtime_expired
        try:
            _, revokes = self.store.cancel_job(job_id, msg, msg, msg, follow=False)
        except HpcqError as exc:  # ended meanwhile
            log.info("job %s runtime: %s", job_id, exc)
            self.store.drop_deadline(job_id)
            return
        self.store.drop_deadline(job_id)   # recorded once; the job may be Canceling a while
        log.info("job %s canceled: run time expired", job_id)
        publish_revokes(self.celery, revokes)

    def run(self) -> None:
        """Hold the lease and dispatch.  A finished task nudges with its worker's name, so the
        common case (one slot came free) costs one dispatch call for that worker; a full pass
        over all workers runs when the queue changed ('*') and at least every dispatch_idle."""
        log.info("scheduler %s started on %s", self.id, self.settings.masked_url)
        renew = self.settings.lease_ttl / 3
        lease_at = full_at = 0.0
        nudged: set[str] = {"*"}
        outage = 0.0
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                if now >= lease_at:
                    leader = self.store.take_lease(self.id, self.settings.lease_ttl)
                    lease_at = now + renew
                    if leader != self.leading:
                        log.info("scheduler %s %s", self.id,
                                 "is now dispatching" if leader else "is standing by")
                        self.leading = leader
                        nudged = {"*"}
                    if leader:
                        # the leader's HPCQ_ADMINS (permissions.py) and cancel grace period
                        # (lib_stop.lua) are the cluster's
                        self.store.announce(permissions.canonical_admins(self.settings.admins),
                                            self.settings.task_cancel_grace_period)
                if not self.leading:
                    self.stopping.wait(renew)
                    continue
                if "*" in nudged or now >= full_at or self.more_ops:
                    sent = self.tick()
                    full_at = now + self.settings.dispatch_idle
                else:
                    sent = self.fill([w for w in nudged if w in self.live])
                timeout = 0 if sent or self.more_ops else min(full_at - time.monotonic(), lease_at - time.monotonic())
                nudged = self.store.wait_wakeup(max(timeout, 0.01)) if timeout > 0 else set()
            except (RedisUnavailable, OperationalError) as exc:
                if not outage:
                    log.warning("%s; retrying with backoff", exc)
                outage = min(2 * outage, 2.0) if outage else 0.2
                self.connected_since = time.monotonic() + outage
                nudged = {"*"}
                self.stopping.wait(outage)
                continue
            if outage:
                log.warning("Redis is back")
                outage = 0.0
        if self.leading:
            self.store.release_lease(self.id)


def run_scheduler(settings: Settings) -> None:
    """``hpcq scheduler``: dispatch until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    d = Dispatcher(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: d.stopping.set())
    d.run()
