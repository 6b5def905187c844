"""What a submission is checked for before anything is written: each task's spec (a TaskSpec or
a mapping of its fields) and the job's tasks as a whole (runtimes, dependencies).  Apart from
the client so that every way of submitting (``Scheduler.submit``, ``submit_job``) checks the
same things and reads nothing while doing it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.api.model import Msg, TaskSpec, resolve_dependencies
from scheduler.errors import InvalidInput


#: What ``Scheduler.submit`` takes for one task: a TaskSpec, or a mapping of TaskSpec's fields.
TaskInput = TaskSpec | Mapping[str, Any]


def task_spec(task: TaskInput, label: str | None = None) -> TaskSpec:
    """A validated copy of ``task`` (a TaskSpec is checked again: its fields may have been
    changed since it was made).  ``label`` ("task 2") starts the message of an error."""
    def refuse(text: str):
        return InvalidInput(f"{label}: {text}" if label else text)
    if not isinstance(task, (TaskSpec, Mapping)):
        raise refuse(f"a task must be a TaskSpec or a mapping of its fields, not {type(task).__name__}")
    if isinstance(task, Mapping):
        names = [f.name for f in dataclasses.fields(TaskSpec)]
        unknown = sorted(str(k) for k in task if k not in names)
        if unknown:
            raise refuse(f"unknown task field(s) {', '.join(unknown)}: the fields are {', '.join(names)}")
        if "command" not in task:
            raise refuse("a task needs a non-empty command")
    try:
        return dataclasses.replace(task) if isinstance(task, TaskSpec) else TaskSpec(**task)
    except InvalidInput as exc:
        if not label:
            raise
        raise type(exc)(f"{label}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a field of the wrong type
        raise refuse(str(exc)) from None


def task_specs(tasks: TaskInput | Iterable[TaskInput]) -> list[TaskSpec]:
    """Validated specs of one task or a sequence of tasks; when there are several, an error
    names the task's number."""
    if isinstance(tasks, (TaskSpec, Mapping)):
        return [task_spec(tasks)]
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Iterable):
        raise InvalidInput("tasks must be a TaskSpec, a mapping of its fields, or a list of them")
    items = list(tasks)
    if not items:
        raise InvalidInput(Msg.job_needs_a_task)
    return [task_spec(t, f"task {n}" if len(items) > 1 else None) for n, t in enumerate(items, 1)]


def submission_checks(specs: list[TaskSpec], job_runtime: int | None,
                      job_id: int | None = None) -> list[list[int]]:
    """What a job's tasks are checked for, as a whole, when it is submitted: no task's runtime
    over the job's, dependencies on names of the job's tasks and without a cycle.  Returns each
    task's dependencies (task numbers), as the submit script takes them.  Reads nothing."""
    if job_runtime:
        for n, s in enumerate(specs, 1):
            if s.runtime and s.runtime > job_runtime:
                label = f"{job_id}.{n}" if job_id is not None else str(n)
                raise InvalidInput(f"task {label}'s runtime ({s.runtime} s) is greater than the "
                                   f"job's runtime ({job_runtime} s)")
    return resolve_dependencies(specs)
