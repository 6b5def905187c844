"""Celery as hpcq's transport: the one place that configures it, for the dispatcher and API
(which send attempts and revokes) and for the worker (which adds the task that runs them).

Redis stays the system of record; a Celery message only says "run attempt <token> of task
<id>", and a revoke only asks the worker to stop what hpcq already recorded."""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

from scheduler.core import keys
from scheduler.core.schema import CELERY_ID

if TYPE_CHECKING:
    from celery import Celery

RUN_TASK = "hpcq.run"
#: Units one dispatch call hands out at most (Redis is not blocked long by one call).
DISPATCH_BATCH = 500
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

    channel.conn_or_acquire = conn_or_acquire  # type: ignore[method-assign]  # the patch, on purpose
    channel._hpcq_one_client = True  # type: ignore[attr-defined]  # hpcq's own mark


def make_celery(redis_url: str) -> Celery:
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
    """One attempt as a Celery task message on its worker's own queue: the message
    ``send_task`` makes (``app.amqp``'s, routed by Celery's router, once per queue), without
    what ``send_task`` adds for a caller that wants a result or is a task itself (a result
    object, the parent task's ids, routing on every call: a fifth of the send's CPU).
    ``argsrepr``: what Flower shows as the args (``scheduler/display.py``), display only."""
    message = app.amqp.create_task_message(celery_id, RUN_TASK, [task_id, token], {},
                                           ignore_result=True, argsrepr=argsrepr)
    with app.producer_or_acquire(producer) as p, p.connection._reraise_as_library_errors():
        app.amqp.send_task_message(p, RUN_TASK, message, **_route(app, keys.worker_queue(worker)))


@functools.lru_cache(maxsize=1024)
def _route(app: Celery, queue: str) -> dict:
    """Where Celery's router sends a message for ``queue``.  declare=[]: the worker declares
    its own queue when it starts consuming it, and a message for a queue is a push onto its list
    either way (declaring it on every send bound kombu's Queue object to the channel each time)."""
    return app.amqp.router.route({"queue": queue, "routing_key": queue, "declare": []}, RUN_TASK)


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


def send_attempts(app: Celery, store, display, attempts, heads: dict, retry_cap: int) -> None:
    """Send a dispatch call's attempts, with what Flower shows of each (``display``, from the
    command ``heads``), in one batch.  If the send fails, the attempts that did not start are
    queued again at once rather than after dispatch_timeout (a message that did arrive then
    fails its token check; one that started arrived), and OperationalError is raised."""
    from kombu.exceptions import (  # type: ignore[attr-defined]  # missing from celery-types' stubs
        BatchPublishError, OperationalError)
    if not attempts:
        return
    shown = display.argsreprs([a[1:] for a in attempts], heads)
    try:
        if len(attempts) == 1:
            # one message: a batch (its pipeline and context) costs more than the round trip
            worker, task_id, token, cid = attempts[0]
            send_attempt(app, worker, task_id, token, cid, shown.get(task_id))
            return
        with attempt_batch(app) as send:
            for worker, task_id, token, cid in attempts:
                send(worker, task_id, token, cid, shown.get(task_id))
    except (OperationalError, BatchPublishError) as exc:
        requeue_unsent(store, attempts, retry_cap)
        raise OperationalError(f"sending attempts: {exc}") from exc


def requeue_unsent(store, attempts, retry_cap: int) -> None:
    """Attempts whose messages may not have arrived: those still Dispatching are queued again."""
    from scheduler.api.model import Msg
    from scheduler.core.schema import TaskState
    tids = [tid for _, tid, _, _ in attempts]
    for (w, tid, tok, _), rec in zip(attempts, store.tasks(tids)):
        if rec.get("state") == TaskState.Dispatching and rec.get("token") == tok:
            store.finish(tid, tok, "lost", error=Msg.never_started.format(w), retry_cap=retry_cap)


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
    recorded: dict[str, Any] = {RECORDED: True}
    for mode, sig in (("terminate", "SIGTERM"), ("kill", "SIGKILL")):
        ids = [cid for cid, m in revokes if m == mode]
        if ids:
            app.control.revoke(ids, terminate=True, signal=sig, **recorded)
    discard = [cid for cid, mode in revokes if mode == "discard"]
    if discard:
        app.control.revoke(discard, **recorded)
