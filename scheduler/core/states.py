"""Job and task states and the transitions allowed between them: the part of ``schema`` that the
API reads to explain refusals, and the README's state tables (``python -m scheduler.core.states``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.core.schema import (CANCEL_JOB_FROM, CANCEL_TASK_FROM, JOB_END, JOB_ON_ENTER, JOB_TRANSITIONS,
                     REQUEUE_JOB_FROM, REQUEUE_TASK_FROM, TASK_END, TASK_ON_ENTER, TASK_ON_WORKER,
                     TASK_PENDING, TASK_TRANSITIONS, JobState, TaskState, WorkerState)

__all__ = ["TaskState", "JobState", "WorkerState", "TASK_TRANSITIONS", "JOB_TRANSITIONS",
           "TASK_END", "JOB_END", "TASK_ON_WORKER", "TASK_PENDING", "TASK_ON_ENTER",
           "JOB_ON_ENTER", "CANCEL_TASK_FROM", "REQUEUE_TASK_FROM", "CANCEL_JOB_FROM",
           "REQUEUE_JOB_FROM", "task_can", "job_can", "markdown"]


def task_can(src: TaskState | str, dst: TaskState | str) -> bool:
    return TaskState(dst) in TASK_TRANSITIONS[TaskState(src)]


def job_can(src: JobState | str, dst: JobState | str) -> bool:
    return JobState(dst) in JOB_TRANSITIONS[JobState(src)]


def markdown() -> str:
    """The transition tables as the README shows them, with what entering each state does."""
    lines = []
    # a task's tables and a job's: their keys have no common type but an enum's
    tables: list[tuple[str, Mapping[Any, frozenset], Mapping[Any, tuple[str, ...]]]] = [
        ("Task", TASK_TRANSITIONS, TASK_ON_ENTER), ("Job", JOB_TRANSITIONS, JOB_ON_ENTER)]
    for title, table, enter in tables:
        lines += [f"| {title} state | may become | entering it also |", "|---|---|---|"]
        lines += [f"| {src.value} | {', '.join(sorted(d.value for d in dst)) or '(final)'} | "
                  f"{', '.join(enter[src]) or ''} |" for src, dst in table.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
