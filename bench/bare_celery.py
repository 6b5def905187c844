"""A minimal bare Celery app for comparison with hpcq's throughput: one task that runs
``/bin/sh -c true`` as a subprocess and INCRs a Redis counter, with the same worker options hpcq
uses (prefork, prefetch 1, JSON, task events on, no result backend).

    BARE_CELERY_REDIS_URL=redis://127.0.0.1:PORT/0 celery -A bench.bare_celery worker -Q bare ...
"""

from __future__ import annotations

import functools
import os
import subprocess

import redis
from scheduler.transport import make_celery

URL = os.environ.get("BARE_CELERY_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = "bench:bare:done"
QUEUE = "bare"
RUN = "bare.run"

# The very configuration hpcq's own workers use, so the comparison is like for like.
app = make_celery(URL)
app.conf.update(task_default_queue=QUEUE)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(URL)


@app.task(name=RUN, ignore_result=True)
def run(command: str = "true") -> int:
    code = subprocess.run(["/bin/sh", "-c", command]).returncode
    _redis().incr(COUNTER)
    return code


def worker_argv(hostname: str, concurrency: int) -> list[str]:
    return ["-m", "celery", "-A", "bench.bare_celery", "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--hostname", hostname, "--queues", QUEUE,
            "--prefetch-multiplier", "1", "--task-events", "--without-gossip",
            "--loglevel", os.environ.get("HPCQ_LOG_LEVEL", "INFO")]
