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

from .errors import HpcqError, RedisUnavailable
from .model import Msg
from .settings import Settings
from .store import Store
from .transport import make_celery, publish_revokes, send_attempt

log = logging.getLogger("hpcq.scheduler")


class Dispatcher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = Store(settings.redis_url)
        self.celery = make_celery(settings.redis_url)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()
        self.leading = False

    def tick(self) -> int:
        """One pass: expire job runtimes, then fill every live worker's free slots."""
        now = time.time()
        for job_id in self.store.due_jobs(now):
            self.expire_job(job_id)
        sent = 0
        workers = self.store.live_workers(now - self.settings.worker_timeout)
        for name, slots, busy in sorted(workers, key=lambda w: w[2] - w[1]):
            if slots - busy <= 0:
                continue
            for task_id, token, celery_id in self.store.dispatch(name, slots - busy):
                send_attempt(self.celery, name, task_id, token, celery_id)
                sent += 1
        return sent

    def expire_job(self, job_id: int) -> None:
        msg = Msg.job_runtime_expired
        try:
            _, revokes = self.store.cancel_job(job_id, msg, msg, msg)
        except HpcqError as exc:  # ended meanwhile
            log.info("job %s runtime: %s", job_id, exc)
            self.store.drop_deadline(job_id)
            return
        log.info("job %s canceled: run time expired", job_id)
        publish_revokes(self.celery, revokes)

    def run(self) -> None:
        log.info("scheduler %s started on %s", self.id, self.settings.redis_url)
        renew = self.settings.lease_ttl / 3
        while not self.stopping.is_set():
            try:
                leader = self.store.take_lease(self.id, self.settings.lease_ttl)
                if leader != self.leading:
                    log.info("scheduler %s %s", self.id, "is now dispatching" if leader else "is standing by")
                    self.leading = leader
                if not leader:
                    self.stopping.wait(renew)
                    continue
                if self.tick() == 0:
                    self.store.wait_wakeup(min(self.settings.dispatch_idle, renew))
            except RedisUnavailable as exc:
                log.warning("%s; retrying", exc)
                self.stopping.wait(1.0)
        if self.leading:
            self.store.release_lease(self.id)


def run_scheduler(settings: Settings) -> None:
    """``hpcq scheduler``: dispatch until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    d = Dispatcher(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: d.stopping.set())
    d.run()
