"""What a job and a task are: their specs as users give them, validated before anything reaches
Redis, and the texts hpcq records (HPC Pack's messages, hpcpack.md sections 2 and 8)."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field

from . import sweep
from .errors import CancelMessageTooLong, InvalidInput


class Priority(enum.IntEnum):
    Lowest = 0
    BelowNormal = 1
    Normal = 2
    AboveNormal = 3
    Highest = 4

    @classmethod
    def parse(cls, value) -> "Priority":
        if isinstance(value, Priority):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4:
            return cls(value)
        for p in cls:
            if str(value).lower() == p.name.lower():
                return p
        raise InvalidInput(f"invalid priority {value!r}: one of {', '.join(p.name for p in cls)}")


MAX_CANCEL_MESSAGE = 128
MAX_NAME = 80


class Msg:
    """Every text hpcq records or refuses with; the Lua scripts get these as ``MSG``."""

    canceled_by_user = "Canceled by user. Message: {}"
    canceled_during_execution = "The task has been canceled by the user during execution. Message: {}"
    task_runtime_expired = "Canceled by the scheduler because the task's runtime has expired."
    job_runtime_expired = "Canceled by the scheduler because the job's run time expired."
    task_not_found = "task {} does not exist"
    job_not_found = "job {} does not exist"
    task_cannot_cancel = "Tasks in the {} state cannot be canceled."
    job_cannot_cancel = "Jobs in the {} state cannot be canceled."
    message_too_long = "Cancel message should not contain more than 128 characters."
    not_rerunnable = "The task could not be requeued because it is not marked as rerunnable."
    task_cannot_requeue = "Tasks in the {} state cannot be requeued."
    job_cannot_requeue = "Jobs in the {} state cannot be requeued."
    job_failed_on_task = "The job failed because task {} failed."
    stopped_by_job_failure = "Canceled by the scheduler because task {} failed and the job fails on task failure."
    exit_code = "The task exited with code {}."
    killed = "The task was killed by signal {}."
    worker_lost = "Node {} became unreachable while the task ran."
    worker_stopped = "The worker {} was stopped while the task ran."
    never_started = "The task was sent to {} but never started there; it was queued again."
    supervisor_died = "The process supervising the task on {} died ({})."
    worker_unlisted = "The worker {} no longer runs the task (its record of it was lost)."
    fenced = "The worker {} could not reach Redis for {} s and stopped the task."
    worker_failed = "The worker failed while running the task: {}"
    retry_limit = "{} The task was already rerun {} times after system errors (TaskRetryCount {}), so it is not rerun again."


def check_cancel_message(message: str | None) -> str:
    message = "" if message is None else str(message)
    if len(message) > MAX_CANCEL_MESSAGE:
        raise CancelMessageTooLong(Msg.message_too_long)
    return message


def _opt_int(value, what: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be an integer, not {value!r}") from None
    if value < minimum:
        raise InvalidInput(f"{what} must be >= {minimum}, not {value}")
    return value


@dataclass
class TaskSpec:
    """A task as submitted.  ``sweep`` makes it a parametric sweep of (start, end, step)."""

    command: str
    name: str = ""
    work_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    runtime: int | None = None
    depends_on: list[str] = field(default_factory=list)
    is_rerunnable: bool = True
    sweep: tuple[int, int, int] | None = None

    def __post_init__(self):
        if not isinstance(self.command, str) or not self.command.strip():
            raise InvalidInput("a task needs a non-empty command")
        self.name = "" if self.name is None else str(self.name)
        if len(self.name) > MAX_NAME:
            raise InvalidInput(f"task name longer than {MAX_NAME} characters")
        if "," in self.name:
            raise InvalidInput("a task name may not contain a comma")
        self.runtime = _opt_int(self.runtime, "runtime", 1)
        if isinstance(self.depends_on, str):
            self.depends_on = [d for d in self.depends_on.split(",") if d]
        self.depends_on = [str(d).strip() for d in (self.depends_on or []) if str(d).strip()]
        env = dict(self.env or {})
        for k, v in env.items():
            if not k or "=" in k:
                raise InvalidInput(f"invalid environment variable name {k!r}")
        self.env = {str(k): str(v) for k, v in env.items()}
        if self.work_dir is not None and not os.path.isabs(self.work_dir):
            self.work_dir = os.path.abspath(self.work_dir)
        if self.sweep is not None:
            try:
                parts = [int(x) for x in self.sweep]
            except (TypeError, ValueError):
                raise InvalidInput(f"invalid sweep {self.sweep!r}: expected (start, end, step)") from None
            if len(parts) == 2:
                parts.append(1)
            if len(parts) != 3:
                raise InvalidInput(f"invalid sweep {self.sweep!r}: expected (start, end, step)")
            sweep.validate(*parts)
            self.sweep = tuple(parts)

    @property
    def instances(self) -> int:
        return sweep.count(*self.sweep) if self.sweep else 0

    def to_record(self) -> dict[str, str]:
        rec = {
            "name": self.name,
            "command": self.command,
            "env": json.dumps(self.env),
            "depends_on": ",".join(self.depends_on),
            "rerunnable": "1" if self.is_rerunnable else "0",
        }
        for key in ("work_dir", "stdin", "stdout", "stderr", "runtime"):
            value = getattr(self, key)
            if value is not None:
                rec[key] = str(value)
        if self.sweep:
            rec.update(start=str(self.sweep[0]), end=str(self.sweep[1]), step=str(self.sweep[2]),
                       total=str(self.instances))
        return rec


@dataclass
class JobSpec:
    name: str = ""
    priority: Priority = Priority.Normal
    fail_on_task_failure: bool = False
    runtime: int | None = None
    owner: str = ""

    def __post_init__(self):
        self.name = "" if self.name is None else str(self.name)
        if len(self.name) > MAX_NAME:
            raise InvalidInput(f"job name longer than {MAX_NAME} characters")
        self.priority = Priority.parse(self.priority)
        self.runtime = _opt_int(self.runtime, "runtime", 1)
        self.fail_on_task_failure = bool(self.fail_on_task_failure)

    def to_record(self) -> dict[str, str]:
        rec = {
            "name": self.name,
            "owner": self.owner,
            "priority": self.priority.name,
            "fail_on_task_failure": "1" if self.fail_on_task_failure else "0",
        }
        if self.runtime is not None:
            rec["runtime"] = str(self.runtime)
        return rec


def resolve_dependencies(tasks: list[TaskSpec]) -> list[list[int]]:
    """Task numbers each task waits for.  One name may stand for several tasks (HPC Pack)."""
    by_name: dict[str, list[int]] = {}
    for number, spec in enumerate(tasks, 1):
        if spec.name:
            by_name.setdefault(spec.name, []).append(number)
    deps: list[list[int]] = []
    for number, spec in enumerate(tasks, 1):
        mine: list[int] = []
        for name in spec.depends_on:
            if name not in by_name:
                raise InvalidInput(f"task {number} depends on {name!r}, which no task of the job is named")
            mine.extend(by_name[name])
        if number in mine:
            raise InvalidInput(f"task {number} depends on itself")
        deps.append(sorted(set(mine)))
    _check_acyclic(deps)
    return deps


def _check_acyclic(deps: list[list[int]]) -> None:
    state = [0] * (len(deps) + 1)  # 0 new, 1 on stack, 2 done
    for root in range(1, len(deps) + 1):
        stack = [(root, iter(deps[root - 1]))]
        if state[root]:
            continue
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state[nxt] == 1:
                raise InvalidInput("the task dependencies contain a cycle")
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt - 1])))


def lua_messages() -> str:
    """``Msg`` as a Lua table (``{}`` becomes ``%s``), prepended to every script."""
    import json
    items = {k: v.replace("{}", "%s") for k, v in vars(Msg).items()
             if not k.startswith("_") and isinstance(v, str)}
    return "local MSG = {" + ",".join(f"{k}={json.dumps(v)}" for k, v in items.items()) + "}\n"
