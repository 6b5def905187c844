"""The operations HPC Pack adds on top of cancel and requeue, as methods of ``Scheduler``: modify
a waiting job (hold, priority) and Finish a job or task (stopped like a cancel, ended Finished).
Each is one atomic script, which checks the owner first (permissions.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from scheduler.api.model import Msg, Priority, check_cancel_message
from scheduler.core.ids import TaskId, parse_job_id
from scheduler.core.schema import PRIORITY_BAND
from scheduler.errors import InvalidInput

if TYPE_CHECKING:
    from scheduler.api.client import Job, Task
    from scheduler.core.store import Store


def parse_time(value) -> float | None:
    """A time as seconds since the epoch: a number, a datetime, or ISO 8601 text (local time
    unless it has an offset: ``2026-11-26T08:00``, ``2026-11-26 08:00+01:00``)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()   # a naive datetime is local time
    try:
        return datetime.fromisoformat(str(value).strip()).timestamp()
    except ValueError:
        raise InvalidInput(f"invalid time {value!r}: ISO 8601, e.g. 2026-11-26T08:00 or "
                           f"2026-11-26T08:00+01:00") from None


def band(priority: Priority) -> int:
    """The queue score band of a priority: higher sorts first, then submission order."""
    return (4 - int(priority)) * PRIORITY_BAND


class Control:
    """Mixed into ``Scheduler`` (client.py): ``self.store``, ``self.publish``, ``self.user``."""

    if TYPE_CHECKING:   # what Scheduler provides
        store: Store
        user: str

        def publish(self, revokes) -> None: ...
        def get_job(self, job_id) -> Job: ...
        def get_task(self, task_id) -> Task: ...
        def _cancel_timeout(self, timeout, grace) -> float: ...
        def _wait_stopped(self, task: Task, timeout, grace) -> None: ...

    def modify_job(self, job_id, hold_until=None, priority=None, clear_hold: bool = False):
        """HPC Pack's job modify while the job waits (Configuring or Queued): a new hold
        (``hold_until``, a time; ``clear_hold`` drops it) and/or priority."""
        j = parse_job_id(job_id)
        when = parse_time(hold_until)
        if when is None and priority is None and not clear_hold:
            raise InvalidInput("nothing to modify: give a hold time or a priority")
        p = Priority.parse(priority) if priority is not None else None
        self.store.modify_job(j, "0" if clear_hold else ("" if when is None else f"{when:.6f}"),
                              p.name if p else "", band(p) if p else 0, user=self.user)
        return self.get_job(j)

    def finish_job(self, job_id, message: str | None = None, wait: bool = True,
                   timeout: float | None = None, grace: float | None = None):
        """HPC Pack's job Finish: what runs is stopped like a cancel; the job and what had not
        ended end Finished with ``message``."""
        j = parse_job_id(job_id)
        message = check_cancel_message(message) or Msg.finished_by_user
        _, revokes = self.store.finish_job(j, message, grace, user=self.user)
        self.publish(revokes)
        job = self.get_job(j)
        if wait:
            job.wait(timeout=self._cancel_timeout(timeout, grace))
        return job.refresh()

    def finish_task(self, task_id, message: str | None = None, wait: bool = True,
                    timeout: float | None = None, grace: float | None = None):
        """HPC Pack's task Finish: stopped like a cancel if it runs, then Finished."""
        tid = TaskId.parse(task_id)
        message = check_cancel_message(message) or Msg.finished_by_user
        _, revokes = self.store.finish_task(tid, message, grace, user=self.user)
        self.publish(revokes)
        task = self.get_task(tid)
        if wait:
            self._wait_stopped(task, timeout, grace)
        return task
