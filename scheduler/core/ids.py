"""Job and task ids as HPC Pack writes them: ``J``, ``J.T`` and ``J.T.I``, all parts >= 1.

The instance part is the sweep's step index (1..N), never the sweep value."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler.errors import InvalidId

_PART = r"[1-9][0-9]{0,17}"
_TASK_RE = re.compile(rf"^({_PART})\.({_PART})(?:\.({_PART}))?$")
_JOB_RE = re.compile(rf"^({_PART})$")


@dataclass(frozen=True, order=True)
class TaskId:
    job: int
    task: int
    instance: int = 0

    @classmethod
    def parse(cls, text) -> TaskId:
        if isinstance(text, TaskId):
            return text
        m = _TASK_RE.match(str(text).strip())
        if not m:
            raise InvalidId(f"invalid task id {str(text)!r}: expected J.T or J.T.I with parts >= 1")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0))

    @property
    def master(self) -> TaskId:
        return TaskId(self.job, self.task)

    def __str__(self) -> str:
        base = f"{self.job}.{self.task}"
        return f"{base}.{self.instance}" if self.instance else base


def parse_job_id(text) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        if text >= 1:
            return text
        raise InvalidId(f"invalid job id {text!r}: expected a positive integer")
    m = _JOB_RE.match(str(text).strip())
    if not m:
        raise InvalidId(f"invalid job id {str(text)!r}: expected a positive integer")
    return int(m[1])
