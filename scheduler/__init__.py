"""hpcq: HPC Pack's job and task model on Redis, with Celery workers running the commands.

    from scheduler import Scheduler
    s = Scheduler.connect()      # the cluster HPCQ_REDIS_URL names
"""

from scheduler.api.client import Job, Scheduler, Task
from scheduler.errors import (CancelMessageTooLong, HpcqError, InvalidId, InvalidInput, InvalidState,
                              NoCluster, NotFound, PermissionDenied, RedisUnavailable, WaitTimeout)
from scheduler.api.model import JobSpec, TaskSpec
from scheduler.core.ids import TaskId
from scheduler.api.model import Priority
from scheduler.settings import Settings, get_settings
from scheduler.core.states import JobState, TaskState

__all__ = ["Scheduler", "Job", "Task", "TaskId", "Priority", "JobState", "TaskState",
           "Settings", "get_settings", "HpcqError", "NotFound", "InvalidId", "InvalidInput",
           "InvalidState", "NoCluster", "RedisUnavailable", "WaitTimeout", "CancelMessageTooLong", "PermissionDenied",
           "JobSpec", "TaskSpec"]
