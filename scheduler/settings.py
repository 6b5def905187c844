"""One settings object, read from ``HPCQ_*`` environment variables; CLI flags override fields.

Defaults work on a laptop: Redis on localhost, a 15 s cancel grace period as HPC Pack's
TaskCancelGracePeriod."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field


def _env(name: str, default, cast=str):
    raw = os.environ.get(f"HPCQ_{name.upper()}")
    if raw is None or raw == "":
        return default
    return cast(raw)


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default_factory=lambda: _env("redis_url", "redis://127.0.0.1:6379/0"))
    #: Seconds a running task gets between SIGTERM and SIGKILL on cancel (TaskCancelGracePeriod).
    task_cancel_grace_period: float = field(
        default_factory=lambda: _env("task_cancel_grace_period", 15.0, float))
    #: How often a running task looks in Redis for a cancel it may have missed as a broadcast.
    cancel_poll_interval: float = field(
        default_factory=lambda: _env("cancel_poll_interval", 0.5, float))
    #: Workers heartbeat this often; one silent for worker_timeout is not given new tasks.
    heartbeat_interval: float = field(default_factory=lambda: _env("heartbeat_interval", 2.0, float))
    worker_timeout: float = field(default_factory=lambda: _env("worker_timeout", 10.0, float))
    #: An attempt sent to a worker but not started after this long is queued again.
    dispatch_timeout: float = field(default_factory=lambda: _env("dispatch_timeout", 60.0, float))
    #: The dispatch lease: a scheduler that stops renewing loses it after this many seconds.
    lease_ttl: float = field(default_factory=lambda: _env("lease_ttl", 5.0, float))
    #: Longest the dispatcher sleeps when nothing wakes it.
    dispatch_idle: float = field(default_factory=lambda: _env("dispatch_idle", 0.5, float))
    #: Bytes of combined stdout+stderr kept as a task's output.
    output_limit: int = field(default_factory=lambda: _env("output_limit", 4096, int))
    #: Where ``hpcq up`` keeps its embedded Redis data.
    state_dir: str = field(default_factory=lambda: _env(
        "state_dir", os.path.join(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "hpcq")))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def get_settings(**overrides) -> Settings:
    return Settings().replace(**overrides)
