"""``hpcq worker``: a Celery worker with hpcq's fixed options (prefork, one task per pool
process, prefetch 1, JSON only, task events on), consuming only its own queue."""

from __future__ import annotations

import os
import socket
import sys

from celery.utils.nodenames import default_nodename, host_format

from scheduler.core import keys
from scheduler.settings import Settings


def celery_argv(concurrency: int, hostname: str) -> list[str]:
    return ["worker", "--pool", "prefork", "--concurrency", str(concurrency),
            "--hostname", hostname, "--queues", keys.worker_queue(hostname),
            "--prefetch-multiplier", "1", "--task-events", "--without-gossip",
            "--loglevel", os.environ.get("HPCQ_LOG_LEVEL", "INFO")]


def run_worker(settings: Settings, concurrency: int | None = None, hostname: str | None = None,
               metrics_port: int | None = None, metrics_address: str = "0.0.0.0") -> None:
    os.environ["HPCQ_REDIS_URL"] = settings.redis_url
    concurrency = concurrency or os.cpu_count() or 2
    # Celery's own rule (``w1`` -> ``celery@w1``, ``%h`` expanded), so the name the worker
    # registers is the one its queue is named after.
    hostname = host_format(default_nodename(hostname or f"worker@{socket.gethostname()}"))
    from .app import app, presence  # after HPCQ_REDIS_URL is set: the app reads it at import
    if metrics_port:
        from .metrics import serve
        serve(presence, metrics_port, metrics_address)
    code = 0
    try:
        app.worker_main(celery_argv(concurrency, hostname))
    except SystemExit as exc:
        code = exc.code
    if not code and not presence.draining:
        # Celery gave up on its own (an unrecoverable error, pool processes that could not
        # start): say so with the exit code, so a service manager restarts the worker.
        print(f"hpcq worker {hostname}: stopped without being asked to (see the log above)",
              file=sys.stderr, flush=True)
        code = 1
    sys.exit(code)
