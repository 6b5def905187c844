"""What a job and a task are: their specs as users give them, validated before anything reaches
Redis, and the texts hpcq records (HPC Pack's messages, docs/hpc-pack.md sections 2 and 8)."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass, field

from scheduler.core import resources, sweep
from scheduler.api.limits import (ENV_POINTER_BYTES, MAX_ARG_STRLEN, MAX_COMMAND_BYTES,  # noqa: F401
                                  MAX_ENV_BYTES, NAME_MAX, PATH_MAX, _path, _path_limits, _show,
                                  _substituted_size, _sweep_tokens, _text)
from scheduler.errors import CancelMessageTooLong, InvalidInput
from scheduler.core.schema import Msg  # (also re-exported: model.Msg)


class Priority(enum.IntEnum):
    Lowest = 0
    BelowNormal = 1
    Normal = 2
    AboveNormal = 3
    Highest = 4

    @classmethod
    def parse(cls, value) -> Priority:
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


#: Variables never carried from a submitter's environment into a task (``--export-env``):
#: hpcq's own settings (the Redis URL and its password among them) and Celery's broker URLs.
NOT_EXPORTED_PREFIXES = ("HPCQ_",)
NOT_EXPORTED = frozenset({"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"})


def submitter_environment(environ=None, secrets=()) -> dict[str, str]:
    """The submitter's environment as ``--export-env`` carries it to a task (Slurm's
    ``--export=ALL``): everything but hpcq's own ``HPCQ_*`` settings, Celery's broker URLs and
    any variable whose value holds one of ``secrets`` (the Redis URL, its password)."""
    environ = os.environ if environ is None else environ
    secrets = [s for s in secrets if s]
    return {k: v for k, v in environ.items()
            if not k.startswith(NOT_EXPORTED_PREFIXES) and k not in NOT_EXPORTED
            and not any(secret in v for secret in secrets)}


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


def _check_asks(spec) -> None:
    """What a task asks for (or a job's defaults for it): cores, memory, GPUs, node group."""
    spec.cores = _opt_int(spec.cores, "cores", 1)
    spec.memory = _opt_int(spec.memory, "memory (MB)", 0)
    spec.gpus = _opt_int(spec.gpus, "gpus", 0)
    spec.group = resources.check_group(spec.group) or None


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
    #: What it asks for (None: the job's default, else 1 core, no memory or GPU counted)
    cores: int | None = None
    memory: int | None = None
    gpus: int | None = None
    group: str | None = None
    exclusive: bool = False
    #: Runs again after its command fails, up to ``retry`` times, ``retry_delay`` s later.
    retry: int = 0
    retry_delay: float = 0
    #: Exit codes that count as success (HPC Pack's ValidExitCodes): "0,10..20"; None: only 0.
    valid_exit_codes: str | None = None
    #: A sweep: how many of its instances may fail before it counts as Failed (default 0).
    max_failed_instances: int | None = None

    def __post_init__(self):
        if not isinstance(self.command, str) or not self.command.strip():
            raise InvalidInput("a task needs a non-empty command")
        command_size = _text(self.command, "the command")
        if command_size > MAX_COMMAND_BYTES:
            raise InvalidInput(f"the command is {command_size} bytes; the limit is {MAX_COMMAND_BYTES} (16 MiB)")
        self.name = "" if self.name is None else str(self.name)
        _text(self.name, "the task name")
        if len(self.name) > MAX_NAME:
            raise InvalidInput(f"task name longer than {MAX_NAME} characters")
        if "," in self.name:
            raise InvalidInput("a task name may not contain a comma")
        self.runtime = _opt_int(self.runtime, "runtime", 1)
        if isinstance(self.depends_on, str):
            self.depends_on = [d for d in self.depends_on.split(",") if d]
        self.depends_on = [str(d).strip() for d in (self.depends_on or []) if str(d).strip()]
        for d in self.depends_on:
            _text(d, f"depends_on entry {_show(d)}")
        self.env = self._check_env(self.env)
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
        self._check_paths()
        if self.sweep and "*" in self.command:
            self._check_substituted_command(command_size)
        self._check_requests()

    def _check_requests(self) -> None:
        _check_asks(self)
        self.exclusive = bool(self.exclusive)
        self.retry = _opt_int(self.retry, "retry", 0) or 0
        try:
            self.retry_delay = float(self.retry_delay or 0)
        except (TypeError, ValueError):
            raise InvalidInput(f"retry_delay must be a number of seconds, not {self.retry_delay!r}") from None
        if not 0 <= self.retry_delay <= 86400 * 7:
            raise InvalidInput(f"retry_delay must be between 0 and 604800 s, not {self.retry_delay}")
        self.valid_exit_codes = resources.parse_exit_codes(self.valid_exit_codes) or None
        self.max_failed_instances = _opt_int(self.max_failed_instances, "max_failed_instances", 0)
        if self.max_failed_instances is not None and not self.sweep:
            raise InvalidInput("max_failed_instances applies only to a sweep")

    @staticmethod
    def _check_env(env) -> dict[str, str]:
        try:
            env = dict(env or {})
        except (TypeError, ValueError):
            raise InvalidInput(f"env must map variable names to values, not {env!r}"[:200]) from None
        checked: dict[str, str] = {}
        total = 0
        for name, value in env.items():
            name, value = str(name), str(value)
            if not name:
                raise InvalidInput("an environment variable name is empty")
            size = _text(name, f"environment variable name {_show(name)}")
            if "=" in name:
                raise InvalidInput(f"invalid environment variable name {_show(name)}: it contains '='")
            size += 1 + _text(value, f"environment variable {_show(name)}: value")
            if size >= MAX_ARG_STRLEN:
                raise InvalidInput(f"environment variable {_show(name)} is {size} bytes; "
                                   f"the kernel's limit for one variable is {MAX_ARG_STRLEN - 1}")
            total += size + 1 + ENV_POINTER_BYTES
            checked[name] = value
        if total > MAX_ENV_BYTES:
            raise InvalidInput(f"the task's environment takes {total} bytes (its NAME=VALUE strings and "
                               f"{ENV_POINTER_BYTES} per variable); the limit is {MAX_ENV_BYTES} (1 MiB)")
        return checked

    def _sweep_extremes(self) -> list[int]:
        """The first and the last sweep value: whichever renders widest is one of them."""
        assert self.sweep is not None   # (its callers check self.sweep first)
        start, end, step = self.sweep
        last = sweep.value(start, step, sweep.count(start, end, step))
        return [start] if last == start else [start, last]

    def _check_paths(self) -> None:
        """work_dir, stdin, stdout and stderr as the worker will use them, made absolute here
        (as Slurm does): work_dir defaults to the directory the task is added from, and relative
        paths are resolved against the submitter's current directory (work_dir) and against
        work_dir (the files), so that where a task runs and writes never depends on where a
        worker or ``hpcq up`` was started.  What exec and open() would refuse on any host is
        refused now; whether the directory exists depends on the worker's host and is not
        checked here."""
        self.work_dir = _path(self.work_dir, "work_dir")
        try:
            if self.work_dir is None:
                self.work_dir = os.getcwd()
            elif not os.path.isabs(self.work_dir):
                self.work_dir = os.path.abspath(self.work_dir)
        except FileNotFoundError:
            raise InvalidInput("the current directory no longer exists: give the task a work_dir") from None
        _path_limits(self.work_dir, "work_dir")
        for field_name in ("stdin", "stdout", "stderr"):
            path = _path(getattr(self, field_name), field_name)
            if path is None:
                continue
            if os.path.basename(path) in ("", ".", ".."):
                raise InvalidInput(f"{field_name} {_show(path)} names a directory, not a file")
            joined = "" if os.path.isabs(path) else "joined to work_dir"
            path = os.path.join(self.work_dir, path)
            setattr(self, field_name, path)
            forms = [(path, joined)]
            if self.sweep and "*" in path:
                forms += [(sweep.substitute(path, v),
                           ", ".join(filter(None, [joined, f"after sweep substitution of {v}"])))
                          for v in self._sweep_extremes()]
            for text, how in forms:
                _path_limits(text, f"{field_name} ({how})" if how else field_name)

    def _check_substituted_command(self, size: int) -> None:
        stars = self.command.count("*")
        tokens = None
        for v in self._sweep_extremes():
            if size + stars * (len(str(v)) - 1) <= MAX_COMMAND_BYTES:
                continue  # a run of n >= 1 stars grows by at most len(str(v)) - 1 bytes
            tokens = tokens or _sweep_tokens(self.command)
            n = _substituted_size(size, tokens, v)
            if n > MAX_COMMAND_BYTES:
                raise InvalidInput(f"the command is {n} bytes after sweep substitution of {v}; "
                                   f"the limit is {MAX_COMMAND_BYTES} (16 MiB)")

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
        for key in ("work_dir", "stdin", "stdout", "stderr", "runtime", "cores", "memory", "gpus",
                    "group", "valid_exit_codes", "max_failed_instances"):
            value = getattr(self, key)
            if value is not None:
                rec[key] = str(value)
        if self.exclusive:
            rec["exclusive"] = "1"
        if self.retry:
            rec.update(retry=str(self.retry), retry_delay=f"{self.retry_delay:g}")
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
    #: No other job's tasks share its workers (HPC Pack's job IsExclusive).
    exclusive: bool = False
    #: Variables every task of the job gets (a task's own --env wins).
    env: dict[str, str] = field(default_factory=dict)
    #: Defaults for its tasks' requests (a task's own win).
    cores: int | None = None
    memory: int | None = None
    gpus: int | None = None
    group: str | None = None
    #: Reruns after system errors (lost node, killed supervisor); None: the cluster's setting.
    task_retry_count: int | None = None
    #: Jobs that must end before any task of this one starts (HPC Pack's ParentJobIds).
    depends_on_job: list[int] = field(default_factory=list)
    #: Run even if a parent Failed or was Canceled (else this job fails without starting).
    run_on_parent_failure: bool = False
    #: No task starts before this time (seconds since the epoch).
    hold_until: float | None = None

    def __post_init__(self):
        self.name = "" if self.name is None else str(self.name)
        _text(self.name, "the job name")
        if len(self.name) > MAX_NAME:
            raise InvalidInput(f"job name longer than {MAX_NAME} characters")
        self.priority = Priority.parse(self.priority)
        self.runtime = _opt_int(self.runtime, "runtime", 1)
        self.fail_on_task_failure = bool(self.fail_on_task_failure)
        self.exclusive = bool(self.exclusive)
        self.env = TaskSpec._check_env(self.env)
        _check_asks(self)
        self.task_retry_count = _opt_int(self.task_retry_count, "task_retry_count", 0)
        parents = self.depends_on_job
        if isinstance(parents, (str, int)):
            parents = [p for p in str(parents).split(",") if p.strip()]
        self.depends_on_job = sorted({_opt_int(p, "a parent job id", 1) for p in parents or ()})
        self.run_on_parent_failure = bool(self.run_on_parent_failure)
        if self.hold_until is not None:
            try:
                self.hold_until = float(self.hold_until)
            except (TypeError, ValueError):
                raise InvalidInput(f"hold_until must be a time, not {self.hold_until!r}") from None

    def to_record(self) -> dict[str, str]:
        rec = {
            "name": self.name,
            "owner": self.owner,
            "priority": self.priority.name,
            "fail_on_task_failure": "1" if self.fail_on_task_failure else "0",
        }
        for key in ("runtime", "cores", "memory", "gpus", "group", "task_retry_count"):
            value = getattr(self, key)
            if value is not None:
                rec[key] = str(value)
        if self.exclusive:
            rec["exclusive"] = "1"
        if self.env:
            rec["env"] = json.dumps(self.env)
        if self.depends_on_job:
            rec["parents"] = ",".join(map(str, self.depends_on_job))
        if self.run_on_parent_failure:
            rec["run_on_parent_failure"] = "1"
        if self.hold_until is not None:
            rec["hold_until"] = f"{self.hold_until:.6f}"
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
