"""Telling Celery's monitors that an attempt hpcq declared lost has ended.

Celery learns that a task ended only from the worker that ran it (``task-succeeded``,
``task-failed``, ...).  A worker killed whole sends nothing more, so Flower (which keeps
``celery.events.state``) would show its attempts STARTED forever.  When hpcq ends such attempts
(the scheduler declaring a silent worker lost, a worker's next life ending what its previous
life held) it sends the ``task-failed`` event that worker would have sent, with the reason hpcq
recorded as the exception, under that worker's hostname, through Celery's own event dispatcher.

Not for a dead pool process: the worker's main process reports that one itself (task-failed,
WorkerLostError).  Not for an attempt that never started: Celery may never have seen it, and an
event would make Flower list a task it never received.  Display only: a failure to publish is
logged and never raised, and one pass uses one producer whatever the number of attempts."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("hpcq.events")


def announce_lost(app: Celery, ended: dict[str, Iterable[tuple[str, str]]]) -> int:
    """``ended``: {worker hostname: [(celery id, reason)]}.  Sends one ``task-failed`` per
    attempt (``exception`` the reason, an empty ``traceback``); returns how many were sent."""
    ended = {host: list(items) for host, items in ended.items() if items}
    if not ended:
        return 0
    sent = 0
    try:
        with app.amqp.producer_pool.acquire(block=True) as producer:
            for host, items in ended.items():
                # a dispatcher is only a hostname and a Producer on the shared channel
                with app.events.Dispatcher(producer.connection, host, enabled=True,
                                           channel=producer.channel,
                                           buffer_while_offline=False) as dispatcher:
                    for celery_id, reason in items:
                        dispatcher.send("task-failed", uuid=celery_id, exception=reason,
                                        traceback="")
                        sent += 1
    except Exception as exc:   # display only: whatever went wrong, hpcq's work goes on
        log.warning("could not tell Celery's monitors that %d attempt(s) ended (%s sent): %s",
                    sum(map(len, ended.values())), sent, exc)
    return sent
