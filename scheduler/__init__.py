"""hpcq: HPC Pack's job and task model on Redis, with Celery workers running the commands.

    from scheduler import Scheduler
    s = Scheduler.connect("redis://127.0.0.1:6379/0")
"""

from .client import Job, Scheduler, Task
from .errors import (CancelMessageTooLong, HpcqError, InvalidId, InvalidInput, InvalidState, NotFound,
                     RedisUnavailable, WaitTimeout)
from .ids import TaskId
from .model import Priority
from .settings import Settings, get_settings
from .states import JobState, TaskState

__all__ = ["Scheduler", "Job", "Task", "TaskId", "Priority", "JobState", "TaskState",
           "Settings", "get_settings", "HpcqError", "NotFound", "InvalidId", "InvalidInput",
           "InvalidState", "RedisUnavailable", "WaitTimeout", "CancelMessageTooLong"]
