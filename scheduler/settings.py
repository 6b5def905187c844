"""One settings object, read from ``HPCQ_*`` environment variables; CLI flags override fields.

Defaults work on a laptop: Redis on localhost, a 15 s cancel grace period as HPC Pack's
TaskCancelGracePeriod."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit


def _env(name: str, default, cast=str):
    raw = os.environ.get(f"HPCQ_{name.upper()}")
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        from scheduler.errors import InvalidInput
        kind = ("an integer" if cast is int else "a number" if cast is float else
                "a duration (90, 90s, 15m, 12h, 5d)" if cast is duration else cast.__name__)
        raise InvalidInput(f"HPCQ_{name.upper()}={raw!r} is not {kind}") from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``5d`` (ValueError otherwise)."""
    text = str(text).strip().lower()
    unit = _UNITS.get(text[-1:])
    number = float(text[:-1] if unit else text)
    if number < 0 or number != number:
        raise ValueError(text)
    return number * (unit or 1)


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default_factory=lambda: _env("redis_url", "redis://127.0.0.1:6379/0"))
    #: Seconds a running task gets between SIGTERM and SIGKILL on cancel (TaskCancelGracePeriod).
    task_cancel_grace_period: float = field(
        default_factory=lambda: _env("task_cancel_grace_period", 15.0, float))
    #: How often a running task looks in Redis for a cancel it may have missed as a broadcast.
    cancel_poll_interval: float = field(
        default_factory=lambda: _env("cancel_poll_interval", 0.5, float))
    #: Workers heartbeat this often; one silent for worker_timeout is declared lost (HPC Pack's
    #: missed heartbeats) and each attempt it held ends: rerun if rerunnable, else Failed.
    heartbeat_interval: float = field(default_factory=lambda: _env("heartbeat_interval", 2.0, float))
    worker_timeout: float = field(default_factory=lambda: _env("worker_timeout", 10.0, float))
    #: An attempt sent to a worker but not started after this long is queued again.
    dispatch_timeout: float = field(default_factory=lambda: _env("dispatch_timeout", 60.0, float))
    #: The dispatch lease: a scheduler that stops renewing loses it after this many seconds.
    lease_ttl: float = field(default_factory=lambda: _env("lease_ttl", 5.0, float))
    #: Longest the dispatcher sleeps when nothing wakes it.
    dispatch_idle: float = field(default_factory=lambda: _env("dispatch_idle", 0.5, float))
    #: Queue entries one dispatch call looks at, at most, for units that fit the free workers
    #: (tasks that fit nowhere now are passed over; this bounds how long Redis is busy).
    dispatch_scan: int = field(default_factory=lambda: _env("dispatch_scan", 1000, int))
    #: Administrators (comma-separated user names): they may cancel, requeue, modify and finish
    #: anyone's jobs.  Read by the scheduler, which publishes it in Redis; a client's own
    #: environment does not make it an administrator.
    admins: str = field(default_factory=lambda: _env("admins", ""))
    #: What a worker advertises (``hpcq worker --cores/--memory/--gpus/--group``): cores (0: its
    #: concurrency), memory in MB (0: the machine's), GPU ids ("2" means 0,1; "0,2" those) and
    #: node groups (comma-separated).
    worker_cores: int = field(default_factory=lambda: _env("worker_cores", 0, int))
    worker_memory: int = field(default_factory=lambda: _env("worker_memory", 0, int))
    worker_gpus: str = field(default_factory=lambda: _env("worker_gpus", ""))
    worker_groups: str = field(default_factory=lambda: _env("worker_groups", ""))
    #: Bytes of a task's output (what it does not write to files of its own) kept in Redis:
    #: the first and the last half, with a "[... 12.9 MB cut ...]" marker between them.  The
    #: whole output stays in the worker's spool (``hpcq task output``).
    output_limit: int = field(default_factory=lambda: _env("output_limit", 16384, int))
    #: Seconds a Redis call may take before the connection counts as lost (a cut link otherwise
    #: hangs a call for minutes of TCP retransmissions).
    redis_timeout: float = field(default_factory=lambda: _env("redis_timeout", 5.0, float))
    #: A file holding the Redis password (read at start, put into the URL in memory only), so
    #: that the password need not appear in a URL, an environment or an argv.
    redis_password_file: str = field(default_factory=lambda: _env("redis_password_file", ""))
    #: Most times a task is rerun on its own after a system error (its worker lost, its
    #: supervising process killed, its worker shut down): HPC Pack's TaskRetryCount.
    task_retry_count: int = field(default_factory=lambda: _env("task_retry_count", 3, int))
    #: Seconds without reaching Redis after which a worker stops its own running tasks (0: never,
    #: so tasks run on through an outage as under slurmd).  Must be below worker_timeout.
    fence_after: float = field(default_factory=lambda: _env("fence_after", 0.0, float))
    #: An attempt Redis holds as running on a worker whose heartbeat does not list it is lost
    #: after this many seconds.
    reconcile_grace: float = field(default_factory=lambda: _env("reconcile_grace", 5.0, float))
    #: Where a worker keeps its record of the attempts it runs (survives the worker's death, so
    #: a restart with the same name finds and kills what a previous life left behind).
    run_dir: str = field(default_factory=lambda: _env(
        "run_dir", os.path.join(os.environ["XDG_RUNTIME_DIR"], "hpcq-run") if os.environ.get(
            "XDG_RUNTIME_DIR") else f"/tmp/hpcq-run-{os.getuid()}"))
    #: Where a worker keeps each attempt's whole output (``hpcq task output`` reads it there).
    spool_dir: str = field(default_factory=lambda: _env("spool_dir", os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "hpcq", "spool")))
    #: How a worker measures a task's peak memory (``max_rss``): ``auto`` (a memory cgroup of
    #: each attempt's own where the worker may create one, else sampling), ``cgroup`` (the same,
    #: with a warning when none can be made), ``sampling`` (the process tree's RSS, sampled).
    accounting: str = field(default_factory=lambda: _env("accounting", "auto"))
    #: How long a Finished, Failed or Canceled job is kept before the scheduler deletes it with
    #: all its task records (HPC Pack keeps them 5 days); ``90s``, ``15m``, ``12h``, ``5d``;
    #: 0 keeps them forever.
    job_retention: float = field(default_factory=lambda: _env("job_retention", 5 * 86400.0, duration))
    #: Where ``hpcq up`` keeps its embedded Redis data.
    state_dir: str = field(default_factory=lambda: _env(
        "state_dir", os.path.join(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "hpcq")))

    def __post_init__(self):
        if self.redis_password_file:
            object.__setattr__(self, "redis_url", with_password(self.redis_url, _read_secret(
                self.redis_password_file)))

    @property
    def masked_url(self) -> str:
        """The Redis URL as logs, ``ps`` and error messages may show it."""
        return mask_url(self.redis_url)

    @staticmethod
    def env_name(field_name: str) -> str:
        """The environment variable that sets ``field_name``: ``HPCQ_<NAME>``."""
        return f"HPCQ_{field_name.upper()}"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Every variable hpcq reads -> the field it sets (what a deployment may set)."""
        return {cls.env_name(f.name): f.name for f in dataclasses.fields(cls)}

    def public(self) -> dict[str, object]:
        """Every setting as it may be shown: the Redis URL with its password masked (a password
        file is shown by its path, never its content)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["redis_url"] = self.masked_url
        return values

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _read_secret(path: str) -> str:
    try:
        with open(os.path.expanduser(path)) as f:
            return f.read().strip()
    except OSError as exc:
        from scheduler.errors import InvalidInput
        raise InvalidInput(f"cannot read the Redis password file {path}: {exc.strerror}") from None


def with_password(url: str, password: str) -> str:
    """``redis://host/0`` + pw -> ``redis://:pw@host/0`` (a URL that has one keeps its own)."""
    parts = urlsplit(url)
    if not password or parts.password:
        return url
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def mask_url(url: str | None) -> str:
    """The URL with its password (if any) shown as ``***``."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<an unparsable Redis URL>"


def get_settings(**overrides) -> Settings:
    return Settings().replace(**overrides)
