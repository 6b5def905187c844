"""The public event stream: every state change of a job, task (or sweep instance) and worker,
as the scripts wrote it to ``hpcq:events`` (``emit`` in lua/lib.lua, its fields declared once
in ``schema.EVENT_FIELDS``), and a task's own history of states.

Why a stream and a cursor: a reader that stops (a crash, a lost connection, Ctrl-C) resumes
from the last entry it saw with XREAD, so nothing in between is missed as long as the stream
still holds it; it keeps the last ~``schema.EVENTS_KEEP`` entries (``MAXLEN ~``).  Reading never
writes, so any number of watchers cost Redis one XREAD each per batch.

Measured (Redis 6.2, 3000 one-task jobs through create, add, submit, dispatch, start, finish:
13 events each): an entry costs 72 bytes of stream memory (the field names are kept once per
stream node because every entry has all of them; the old 4-field entries cost 38), so the
default window (``schema.EVENTS_KEEP``) is ~7 MB; its XADD takes ~4-5 us in the script.

A task's history is not read from the stream: finding one task's entries means scanning
everything since it was created (up to the whole stream per ``task view``), and entries older
than the stream's window are gone.  Every move appends one line to the task's own
``task_history`` string instead (see ``schema.HISTORY_BYTES``): ~300 bytes for a task that ran
once, deleted with the task's records (retention's purge_job)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator

import redis

from scheduler.core import keys, schema
from scheduler.core.ids import TaskId
from scheduler.core.scripts import translate
from scheduler.errors import InvalidInput, RedisUnavailable

#: The stream's field names (schema.EVENT_FIELDS), as Python reads them.
_F = {name: name for name in schema.EVENT_FIELDS}
#: Longest single XREAD block: below the store's socket timeout, so a quiet stream is not
#: mistaken for a lost connection, and short enough to notice a caller's deadline.
_BLOCK_STEP = 1.0
#: Entries asked for per XREAD.
BATCH = 500
_CURSOR = re.compile(r"^\d+(-\d+)?$")


@dataclasses.dataclass(frozen=True)
class Event:
    """One state change.  ``cursor`` is the stream entry's id: pass it as ``since`` to resume
    right after it."""

    cursor: str
    time: float
    kind: str            # "job", "task" (task, sweep master or instance) or "worker"
    id: str
    old_state: str | None
    state: str
    node: str | None     # a task: the worker it is on or just left; a worker: itself
    message: str | None  # the error or cancel message, where there is one

    @classmethod
    def from_entry(cls, cursor: str, f: dict) -> Event:
        ts = f.get(_F["ts"])
        return cls(cursor=cursor, time=float(ts) if ts else _cursor_time(cursor),
                   kind=f.get(_F["kind"], ""), id=f.get(_F["id"], ""),
                   old_state=f.get(_F["from"]) or None, state=f.get(_F["state"], ""),
                   node=f.get(_F["node"]) or None, message=f.get(_F["msg"]) or None)

    @property
    def job(self) -> int | None:
        """The job this event belongs to (a task's job), None for a worker."""
        if self.kind == "job":
            return int(self.id)
        if self.kind == "task":
            return int(self.id.partition(".")[0])
        return None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _cursor_time(cursor: str) -> float:
    return int(cursor.partition("-")[0]) / 1000.0


def last_cursor(store) -> str:
    """The id of the newest entry ("0-0" if the stream is empty): events after it are new."""
    newest = store._do(store.redis.xrevrange, keys.EVENTS, "+", "-", count=1)
    return newest[0][0] if newest else "0-0"


def check_cursor(cursor: str) -> str:
    """A cursor as the stream takes it (``MS-SEQ``, or ``MS``, or 0), else InvalidInput."""
    if not _CURSOR.match(cursor or ""):
        raise InvalidInput(f"invalid cursor {cursor!r}: an event's cursor is MS-SEQ (as --json "
                           "prints it), or 0 for the oldest kept")
    return cursor


def _id_tuple(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms or 0), int(seq or 0)


def missed(store, since: str | None) -> bool:
    """Whether entries after ``since`` may already be trimmed away (a resume came too late):
    Redis 7 says exactly (``max-deleted-entry-id``); on 6.2 the oldest kept entry being newer
    than ``since`` is taken to mean so."""
    if since in (None, "0", "0-0", "$"):
        return False
    check_cursor(since)
    try:
        info = store._do(store.redis.xinfo_stream, keys.EVENTS)
    except Exception:       # no stream yet
        return False
    gone = info.get("max-deleted-entry-id")
    if gone:
        return _id_tuple(gone) > _id_tuple(since)
    first = info.get("first-entry")
    return bool(first) and _id_tuple(first[0]) > _id_tuple(since)


def _wanted(job: int | None):
    if job is None:
        return lambda e: True
    return lambda e: e.job == job


def events(store, since: str | None = None, job: int | None = None,
           block: float | None = None) -> Iterator[Event]:
    """Every event after ``since`` (a cursor; None: from now, "0": from the oldest kept), in
    order; ``job``: only that job's and its tasks' and instances'.  ``block``: how long to wait
    for a new event once caught up before the iterator ends (None: forever, 0: not at all).
    Following (``block`` None), a lost connection is retried with backoff and the read resumes
    from the last cursor, so nothing is missed.  "Now" is when this is called, not when the
    iteration starts: what happens in between is yielded."""
    cursor = last_cursor(store) if since in (None, "$") else check_cursor(str(since))
    return _read(store, cursor, _wanted(job), block)


def _read(store, cursor: str, wanted, block: float | None) -> Iterator[Event]:
    deadline = None if block is None else time.monotonic() + block
    pause = 0.2
    while True:
        step = _BLOCK_STEP if deadline is None else max(0.0, min(_BLOCK_STEP, deadline - time.monotonic()))
        try:
            reply = store.redis.xread({keys.EVENTS: cursor}, count=BATCH,
                                      block=int(step * 1000) if step > 0 else None)
        except redis.RedisError as exc:   # a lost connection is retried only while following
            err = translate(exc)
            if block is not None or not isinstance(err, RedisUnavailable):
                raise err from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        pause = 0.2
        entries = reply[0][1] if reply else []
        for eid, fields in entries:
            cursor = eid
            event = Event.from_entry(eid, fields)
            if wanted(event):
                yield event
        if entries:
            if block is not None:   # (deadline is None exactly when block is)
                deadline = time.monotonic() + block   # caught up again only after a quiet block
            continue
        if deadline is not None and time.monotonic() >= deadline:
            return


# --- a task's history ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Move:
    """One line of a task's history: when it entered ``state``, where, and why."""

    time: float
    state: str
    node: str | None = None
    message: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_history(text: str | None) -> list[Move]:
    moves = []
    for line in (text or "").splitlines():
        parts = line.split(schema.HISTORY_SEP)
        if len(parts) < 2:
            continue
        ts, state, node, msg = [*parts, "", ""][:4]
        moves.append(Move(float(ts), state, node or None, msg or None))
    return moves


def history(store, task_id: TaskId | str) -> list[Move]:
    """The task's (or instance's) states with times, oldest first.  An instance's history starts
    when it got a record of its own (its dispatch, or a cancel of it alone): before that it was
    in its sweep's state."""
    return parse_history(store._do(store.redis.get, schema.key("task_history", task_id)))
