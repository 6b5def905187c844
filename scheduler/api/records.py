"""Read-only views of job and task records: typed properties and the JSON shape the CLI prints.

Kept apart from the operations (client.py) so the CLI and tests can render any record."""

from __future__ import annotations

import json

from scheduler.core import sweep
from scheduler.core.ids import TaskId
from scheduler.api.model import Priority, TaskSpec
from scheduler.core.states import TASK_PENDING, JobState, TaskState


def _f(v):
    return None if v in (None, "") else float(v)


def _i(v):
    return None if v in (None, "") else int(v)


def implicit_state(master: dict, instance: int | None = None) -> str:
    """The state of a sweep instance that has no record yet (the Python twin of ``implicit_state``
    in lua/lib.lua): its master's state before the sweep is submitted, Queued after, Canceled once
    a cancel of the master cut it off (``instance`` None: one not yet materialized)."""
    cut = master.get("cut")
    if cut is not None and (instance is None or instance > int(cut)):
        return master.get("cut_as") or TaskState.Canceled.value
    if master.get("state") in {s.value for s in TASK_PENDING}:
        return master["state"]
    return TaskState.Queued.value


def instance_record(master: dict, tid: TaskId, rec: dict | None) -> dict:
    """A sweep instance's record joined to its master's (one not dispatched yet has none of its
    own: see ``implicit_state``)."""
    if rec is None:
        rec = {"state": implicit_state(master, tid.instance), "requeue_count": "0"}
        if rec["state"] in (TaskState.Canceled.value, TaskState.Finished.value) and master.get("error"):
            rec["error"] = master["error"]
    rec["_master"] = master
    return rec


class JobView:
    #: Why it waits (scheduler/api/reasons.py): the cluster must be read, so a record alone
    #: cannot tell; client.Job answers.  ``to_dict()`` has it as "reason" when ``explain`` is
    #: set: on a job fetched by itself (``get_job``), not on listed ones (round trips a row).
    reason: str | None = None
    explain = False

    def __init__(self, job_id: int, record: dict):
        self.id = job_id
        self.record = record

    name = property(lambda self: self.record.get("name", ""))
    owner = property(lambda self: self.record.get("owner", ""))
    state = property(lambda self: JobState(self.record["state"]))
    priority = property(lambda self: Priority[self.record.get("priority", "Normal")])
    fail_on_task_failure = property(lambda self: self.record.get("fail_on_task_failure") == "1")
    runtime = property(lambda self: _i(self.record.get("runtime")))
    error_message = property(lambda self: self.record.get("error", ""))
    create_time = property(lambda self: _f(self.record.get("create_time")))
    submit_time = property(lambda self: _f(self.record.get("submit_time")))
    start_time = property(lambda self: _f(self.record.get("start_time")))
    end_time = property(lambda self: _f(self.record.get("end_time")))
    requeue_count = property(lambda self: int(self.record.get("requeue_count") or 0))
    task_count = property(lambda self: int(self.record.get("ntasks") or 0))
    exclusive = property(lambda self: self.record.get("exclusive") == "1")
    env = property(lambda self: json.loads(self.record.get("env") or "{}"))
    depends_on_job = property(lambda self: [int(p) for p in (self.record.get("parents") or "").split(",") if p])
    run_on_parent_failure = property(lambda self: self.record.get("run_on_parent_failure") == "1")
    hold_until = property(lambda self: _f(self.record.get("hold_until")))
    task_retry_count = property(lambda self: _i(self.record.get("task_retry_count")))
    key = property(lambda self: self.record.get("key"))

    @property
    def task_defaults(self) -> dict:
        """What its tasks ask for unless they say otherwise (cores, memory, gpus, group)."""
        return {k: (self.record[k] if k == "group" else int(self.record[k]))
                for k in ("cores", "memory", "gpus", "group") if self.record.get(k)}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        name = f" {self.name!r}" if self.name else ""
        return (f"<{type(self).__name__} {self.id}{name} {self.state.value}, "
                f"{self.task_count} task{'s' if self.task_count != 1 else ''}"
                f"{': ' + counts if counts else ''}>")

    @property
    def counts(self) -> dict[str, int]:
        """Tasks (sweep masters counted once) per state."""
        return {s.value: int(self.record.get(f"c:{s.value}") or 0) for s in TaskState
                if int(self.record.get(f"c:{s.value}") or 0)}

    def to_dict(self) -> dict:
        return {
            "id": str(self.id), "name": self.name, "owner": self.owner, "state": self.state.value,
            "priority": self.priority.name, "fail_on_task_failure": self.fail_on_task_failure,
            "runtime": self.runtime, "error_message": self.error_message,
            "create_time": self.create_time, "submit_time": self.submit_time,
            "start_time": self.start_time, "end_time": self.end_time,
            "requeue_count": self.requeue_count, "task_count": self.task_count,
            "counts": self.counts, "exclusive": self.exclusive, "env": self.env,
            "task_defaults": self.task_defaults, "depends_on_job": self.depends_on_job,
            "run_on_parent_failure": self.run_on_parent_failure, "hold_until": self.hold_until,
            "task_retry_count": self.task_retry_count, "key": self.key,
            **({"reason": self.reason} if self.explain else {}),
        }


class TaskView:
    """A task, a sweep master, or one sweep instance (whose spec comes from its master)."""

    #: As JobView's: client.Task answers, "reason" in ``to_dict()`` of one fetched by ``get_task``.
    reason: str | None = None
    #: Its states with times (scheduler/api/events.Move), read from Redis by client.Task;
    #: "history" in ``to_dict()`` of one fetched by ``get_task``, as "reason".
    history: list = []  # noqa: RUF012  (never mutated; client.Task overrides it with a property)
    explain = False

    def __init__(self, task_id: TaskId, record: dict):
        self.id = task_id
        self.record = record

    def __repr__(self) -> str:
        parts = [f"{type(self).__name__} {self.id}"]
        if self.name:
            parts.append(repr(self.name))
        parts.append(self.state.value)
        if self.is_sweep:
            parts.append(f"sweep of {self.instances}")
        if self.exit_code is not None:
            parts.append(f"exit {self.exit_code}")
        if self.node:
            parts.append(f"on {self.node}")
        command = self.command or ""
        parts.append(repr(command if len(command) <= 40 else command[:37] + "..."))
        return "<" + " ".join(parts) + ">"

    @property
    def _spec(self) -> dict:
        return self.record.get("_master", self.record)

    @property
    def _value(self) -> int | None:
        if not self.id.instance:
            return None
        m = self._spec
        return sweep.value(int(m["start"]), int(m["step"]), self.id.instance)

    def _sub(self, field: str):
        v = self._spec.get(field)
        return sweep.substitute(v, self._value) if self._value is not None and v is not None else v

    name = property(lambda self: self._sub("name") or "")
    command = property(lambda self: self._sub("command"))
    stdin = property(lambda self: self._sub("stdin"))
    stdout = property(lambda self: self._sub("stdout"))
    stderr = property(lambda self: self._sub("stderr"))
    work_dir = property(lambda self: self._spec.get("work_dir"))
    env = property(lambda self: json.loads(self._spec.get("env") or "{}"))
    runtime = property(lambda self: _i(self._spec.get("runtime")))
    depends_on = property(lambda self: [d for d in self._spec.get("depends_on", "").split(",") if d])
    is_rerunnable = property(lambda self: self._spec.get("rerunnable", "1") == "1")
    is_sweep = property(lambda self: "total" in self.record)
    instances = property(lambda self: int(self.record.get("total") or 0))
    state = property(lambda self: TaskState(self.record["state"]))
    exit_code = property(lambda self: _i(self.record.get("exit_code")))
    output = property(lambda self: self.record.get("output", ""))
    error_message = property(lambda self: self.record.get("error", ""))
    submit_time = property(lambda self: _f(self.record.get("submit_time") or self._spec.get("submit_time")))
    start_time = property(lambda self: _f(self.record.get("start_time")))
    end_time = property(lambda self: _f(self.record.get("end_time")))
    node = property(lambda self: self.record.get("node"))
    pid = property(lambda self: _i(self.record.get("pid")))
    #: The last attempt's spool file (its whole output) on its node's file system.
    spool = property(lambda self: self.record.get("spool") or None)
    cpu_user = property(lambda self: _f(self.record.get("cpu_user")))
    cpu_kernel = property(lambda self: _f(self.record.get("cpu_sys")))
    peak_memory = property(lambda self: _i(self.record.get("max_rss")))
    requeue_count = property(lambda self: int(self.record.get("requeue_count") or 0))
    auto_requeue_count = property(lambda self: int(self.record.get("auto_requeue_count") or 0))
    token = property(lambda self: self.record.get("token"))
    cores = property(lambda self: int(self._spec.get("cores") or 1))
    memory = property(lambda self: int(self._spec.get("memory") or 0))
    gpus = property(lambda self: int(self._spec.get("gpus") or 0))
    group = property(lambda self: self._spec.get("group") or None)
    exclusive = property(lambda self: self._spec.get("exclusive") == "1")
    retry = property(lambda self: int(self._spec.get("retry") or 0))
    retry_delay = property(lambda self: float(self._spec.get("retry_delay") or 0))
    retry_count = property(lambda self: int(self.record.get("retry_count") or 0))
    valid_exit_codes = property(lambda self: self._spec.get("valid_exit_codes") or None)
    max_failed_instances = property(lambda self: _i(self.record.get("max_failed_instances")))
    #: What its current (or last) attempt was given: cores, and the GPU ids
    allocation = property(lambda self: {"cores": _i(self.record.get("a_cores")),
                                        "gpus": [g for g in (self.record.get("a_gpus") or "").split(",") if g]}
                          if self.record.get("a_cores") else None)
    celery_id = property(lambda self: self.record.get("celery_id"))

    @property
    def sweep(self) -> tuple[int, int, int] | None:
        if not self.is_sweep:
            return None
        return int(self.record["start"]), int(self.record["end"]), int(self.record["step"])

    @property
    def instance_counts(self) -> dict[str, int]:
        """Instances per state; those not yet dispatched count as Queued (or Canceled if cut)."""
        if not self.is_sweep:
            return {}
        counts = {s.value: int(self.record.get(f"i:{s.value}") or 0) for s in TaskState}
        if "cut" not in self.record:  # a cancel's cut makes the rest Canceled (counted already)
            counts[implicit_state(self.record)] += (self.instances - int(self.record.get("next") or 0)
                                                    - int(self.record.get("pre") or 0))
        return {k: v for k, v in counts.items() if v}

    def spec(self) -> TaskSpec:
        return TaskSpec(command=self.command, name=self.name, work_dir=self.work_dir,
                        env=self.env, stdin=self.stdin, stdout=self.stdout, stderr=self.stderr,
                        runtime=self.runtime, depends_on=self.depends_on,
                        is_rerunnable=self.is_rerunnable, sweep=self.sweep,
                        cores=self._spec.get("cores"), memory=self._spec.get("memory"),
                        gpus=self._spec.get("gpus"), group=self.group, exclusive=self.exclusive,
                        retry=self.retry, retry_delay=self.retry_delay,
                        valid_exit_codes=self.valid_exit_codes,
                        max_failed_instances=self.max_failed_instances)

    def to_dict(self) -> dict:
        d = {
            "id": str(self.id), "name": self.name, "state": self.state.value,
            "command": self.command, "work_dir": self.work_dir, "env": self.env,
            "stdin": self.stdin, "stdout": self.stdout, "stderr": self.stderr,
            "runtime": self.runtime, "depends_on": self.depends_on,
            "is_rerunnable": self.is_rerunnable, "exit_code": self.exit_code,
            "output": self.output, "error_message": self.error_message,
            "submit_time": self.submit_time, "start_time": self.start_time,
            "end_time": self.end_time, "node": self.node, "pid": self.pid, "spool": self.spool,
            "celery_id": self.celery_id,
            "cpu_user": self.cpu_user, "cpu_kernel": self.cpu_kernel,
            "peak_memory": self.peak_memory, "requeue_count": self.requeue_count,
            "auto_requeue_count": self.auto_requeue_count,
            "cores": self.cores, "memory": self.memory, "gpus": self.gpus, "group": self.group,
            "exclusive": self.exclusive, "allocation": self.allocation, "retry": self.retry,
            "retry_delay": self.retry_delay, "retry_count": self.retry_count,
            "valid_exit_codes": self.valid_exit_codes,
            **({"reason": self.reason, "history": [m.to_dict() for m in self.history]}
               if self.explain else {}),
        }
        sweep = self.sweep   # None unless is_sweep
        if sweep is not None:
            d["sweep"] = list(sweep)
            d["instances"] = self.instances
            d["instance_counts"] = self.instance_counts
            d["max_failed_instances"] = self.max_failed_instances
        return d
