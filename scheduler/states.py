"""Job and task states and the one table of transitions allowed between them.

Every state change in hpcq is checked against these tables: the Lua scripts get them as a
generated preamble (see ``lua_preamble``), the API reads them to explain refusals, and the
README's state diagram is printed from them.  Changing what is allowed means editing this file
and nothing else.
"""

from __future__ import annotations

import enum
import json


class TaskState(str, enum.Enum):
    Configuring = "Configuring"
    Submitted = "Submitted"
    Validating = "Validating"
    Queued = "Queued"
    Dispatching = "Dispatching"
    Running = "Running"
    Finishing = "Finishing"
    Finished = "Finished"
    Failed = "Failed"
    Canceling = "Canceling"
    Canceled = "Canceled"

    def __str__(self) -> str:
        return self.value


class JobState(str, enum.Enum):
    Configuring = "Configuring"
    Submitted = "Submitted"
    Validating = "Validating"
    Queued = "Queued"
    Running = "Running"
    Finishing = "Finishing"
    Finished = "Finished"
    Failed = "Failed"
    Canceling = "Canceling"
    Canceled = "Canceled"

    def __str__(self) -> str:
        return self.value


T, J = TaskState, JobState

#: Allowed task transitions.  A sweep master uses the same table (it goes Queued -> Running
#: without Dispatching, since its instances are what get dispatched).
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    T.Configuring: frozenset({T.Submitted, T.Canceled}),
    T.Submitted: frozenset({T.Validating, T.Queued, T.Failed, T.Canceled}),
    T.Validating: frozenset({T.Queued, T.Failed, T.Canceled}),
    T.Queued: frozenset({T.Dispatching, T.Running, T.Canceling, T.Canceled}),
    # Dispatching -> Queued/Failed: the worker it was sent to was lost before it started.
    T.Dispatching: frozenset({T.Running, T.Queued, T.Failed, T.Canceled}),
    # Running -> Queued: a rerunnable task whose worker was lost (or a requeued sweep master).
    T.Running: frozenset({T.Finishing, T.Finished, T.Failed, T.Canceling, T.Queued}),
    T.Finishing: frozenset({T.Finished, T.Failed}),
    # Only a sweep master: one of its canceled instances was requeued (REQUEUE_TASK_FROM still
    # refuses requeuing a Finished task itself).
    T.Finished: frozenset({T.Queued}),
    # A task stopped while Canceling always ends Failed; a sweep master ends Canceled.
    T.Canceling: frozenset({T.Failed, T.Canceled}),
    T.Failed: frozenset({T.Queued}),
    T.Canceled: frozenset({T.Queued}),
}

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    J.Configuring: frozenset({J.Submitted, J.Canceled}),
    J.Submitted: frozenset({J.Validating, J.Queued, J.Failed, J.Canceled}),
    J.Validating: frozenset({J.Queued, J.Failed, J.Canceled}),
    J.Queued: frozenset({J.Running, J.Finished, J.Failed, J.Canceling, J.Canceled}),
    J.Running: frozenset({J.Queued, J.Finishing, J.Finished, J.Failed, J.Canceling, J.Canceled}),
    J.Finishing: frozenset({J.Finished, J.Failed}),
    # A Finished job goes back to Queued only when one of its canceled tasks is requeued.
    J.Finished: frozenset({J.Queued, J.Running}),
    J.Canceling: frozenset({J.Canceled}),
    J.Failed: frozenset({J.Queued, J.Running}),
    J.Canceled: frozenset({J.Queued, J.Running}),
}

TASK_END = frozenset({T.Finished, T.Failed, T.Canceled})
JOB_END = frozenset({J.Finished, J.Failed, J.Canceled})
#: A task holding a worker slot.
TASK_ON_WORKER = frozenset({T.Dispatching, T.Running, T.Canceling})

#: The states each user operation accepts (HPC Pack's rules, hpcpack.md section 2).
#: Canceling is accepted again so that a second cancel can escalate to force.
CANCEL_TASK_FROM = frozenset(
    {T.Configuring, T.Submitted, T.Validating, T.Queued, T.Dispatching, T.Running, T.Canceling})
REQUEUE_TASK_FROM = frozenset({T.Failed, T.Canceled, T.Running, T.Canceling, T.Queued})
CANCEL_JOB_FROM = frozenset(
    {J.Configuring, J.Submitted, J.Validating, J.Queued, J.Running, J.Canceling})
REQUEUE_JOB_FROM = frozenset({J.Canceled, J.Failed, J.Running})


def task_can(src: TaskState | str, dst: TaskState | str) -> bool:
    return TaskState(dst) in TASK_TRANSITIONS[TaskState(src)]


def job_can(src: JobState | str, dst: JobState | str) -> bool:
    return JobState(dst) in JOB_TRANSITIONS[JobState(src)]


def _lua_set(states) -> str:
    return "{" + ",".join(f"[{json.dumps(s.value)}]=true" for s in sorted(states)) + "}"


def _lua_table(table) -> str:
    return "{" + ",".join(f"[{json.dumps(k.value)}]={_lua_set(v)}" for k, v in table.items()) + "}"


def lua_preamble() -> str:
    """The tables above as Lua source, prepended to every script so Lua and Python agree."""
    return "\n".join([
        f"local TASK_T = {_lua_table(TASK_TRANSITIONS)}",
        f"local JOB_T = {_lua_table(JOB_TRANSITIONS)}",
        f"local TASK_END = {_lua_set(TASK_END)}",
        f"local JOB_END = {_lua_set(JOB_END)}",
        f"local TASK_ON_WORKER = {_lua_set(TASK_ON_WORKER)}",
        f"local CANCEL_TASK_FROM = {_lua_set(CANCEL_TASK_FROM)}",
        f"local REQUEUE_TASK_FROM = {_lua_set(REQUEUE_TASK_FROM)}",
        f"local CANCEL_JOB_FROM = {_lua_set(CANCEL_JOB_FROM)}",
        f"local REQUEUE_JOB_FROM = {_lua_set(REQUEUE_JOB_FROM)}",
        f"local TASK_STATES = {json.dumps([s.value for s in TaskState])}".replace("[", "{").replace("]", "}"),
        "",
    ])


def markdown() -> str:
    """The transition tables as the README shows them (``python -m scheduler.states``)."""
    lines = []
    for title, table in (("Task", TASK_TRANSITIONS), ("Job", JOB_TRANSITIONS)):
        lines += [f"| {title} state | may become |", "|---|---|"]
        lines += [f"| {src.value} | {', '.join(sorted(d.value for d in dst)) or '(final)'} |"
                  for src, dst in table.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
