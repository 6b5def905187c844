"""Celery as hpcq's transport: the one place that configures it, for the dispatcher and API
(which send attempts and revokes) and for the worker (which adds the task that runs them).

Redis stays the system of record; a Celery message only says "run attempt <token> of task
<id>", and a revoke only asks the worker to stop what hpcq already recorded."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

from scheduler.core import keys
from scheduler.core.schema import CELERY_ID

if TYPE_CHECKING:
    from celery import Celery

RUN_TASK = "hpcq.run"
#: A revoke's argument saying the cancel is in Redis already (the worker skips recording it).
RECORDED = "hpcq_recorded"


def _one_client_per_channel() -> None:
    """kombu 5's Redis channel builds a new ``redis.Redis`` for every publish, ack and queue
    check (measured 180 us of CPU each, two for every attempt the scheduler sends: the largest
    single cost of a dispatch, and of the worker's main process per task).  A client shares the
    channel's connection pool and is thread-safe, so each channel keeps one instead."""
    from kombu.transport import redis as kombu_redis
    channel = kombu_redis.Channel
    if getattr(channel, "_hpcq_one_client", False):
        return

    @contextlib.contextmanager
    def conn_or_acquire(self, client=None):
        if client is None:
            # a new one when kombu replaced the channel's pool (after a fork, or an error)
            client = self.__dict__.get("_hpcq_client")
            if client is None or client.connection_pool is not self.pool:
                client = self.__dict__["_hpcq_client"] = self._create_client()
        yield client

    channel.conn_or_acquire = conn_or_acquire
    channel._hpcq_one_client = True


def make_celery(redis_url: str) -> "Celery":
    # imported here: most hpcq commands never talk to Celery, and importing it costs ~150 ms
    # of every command's start
    from celery import Celery
    _one_client_per_channel()
    app = Celery("hpcq", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        worker_send_task_events=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Redis going away is normal: reconnect for as long as it takes (with backoff).
        broker_connection_max_retries=None,
        broker_transport_options={"visibility_timeout": 24 * 3600},
        task_create_missing_queues=True,
    )
    return app


def send_attempt(app: Celery, worker: str, task_id: str, token: str, celery_id: str,
                 argsrepr: str | None = None, producer=None) -> None:
    """``argsrepr``: what Flower shows as the args (``scheduler/display.py``), display only."""
    queue = keys.worker_queue(worker)
    # declare=[]: the worker declares its own queue when it starts consuming it, and a message
    # for a queue is a push onto its list either way; declaring it again on every send bound
    # (copied) kombu's Queue object to the channel each time, a fifth of the send's CPU.
    app.send_task(RUN_TASK, args=[task_id, token], task_id=celery_id, queue=queue,
                  routing_key=queue, argsrepr=argsrepr, declare=[], producer=producer)


@contextlib.contextmanager
def attempt_batch(app: Celery):
    """Yields ``send(worker, task_id, token, celery_id, argsrepr)``; the attempts sent in the
    block reach Redis in one round trip when it ends (kombu's publish batch: its LPUSHes in one
    pipeline), all through one producer.  One round trip and one producer checkout per attempt
    were most of the scheduler's CPU per task.  Each message is still an ordinary Celery task
    message on the worker's queue.  If the block's end raises (``BatchPublishError``, or
    ``OperationalError``), which of its attempts arrived is unknown."""
    with app.producer_or_acquire() as producer, producer.batch(max_size=4 * 1024):
        yield functools.partial(send_attempt, app, producer=producer)


def celery_id(task_id: str, token: str) -> str:
    """The Celery task id of one attempt (the dispatch script builds the same from the schema)."""
    return CELERY_ID.format(task_id, token)


def parse_celery_id(celery_id: str) -> tuple[str, str] | None:
    """``hpcq-J.T[.I]-TOKEN`` -> (task id, token); None for an id hpcq did not make."""
    head, _, mid = CELERY_ID.partition("{}")
    if not celery_id or not celery_id.startswith(head):
        return None
    tid, _, token = celery_id[len(head):].rpartition(mid[:-2])
    return (tid, token) if tid and token.isdigit() else None


def publish_revokes(app: Celery, revokes: list[tuple[str, str]]) -> None:
    """One broadcast per kind: 'terminate' for running attempts (SIGTERM; 'kill' for a forced
    cancel: SIGKILL, which the worker turns into a forced stop of the tree), 'discard' for sent
    ones.  ``RECORDED`` tells the workers that hpcq has recorded these cancels already (a revoke
    from Celery's own tools has no such mark, and the worker records it first)."""
    for mode, sig in (("terminate", "SIGTERM"), ("kill", "SIGKILL")):
        ids = [cid for cid, m in revokes if m == mode]
        if ids:
            app.control.revoke(ids, terminate=True, signal=sig, **{RECORDED: True})
    discard = [cid for cid, mode in revokes if mode == "discard"]
    if discard:
        app.control.revoke(discard, **{RECORDED: True})
