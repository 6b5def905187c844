"""The cluster's nodes (workers) as the user sees them: ``hpcq node list`` / ``node view``, HPC
Pack's node commands, Slurm's ``sinfo``.  Reads only (never a Lua script), and in a fixed number
of pipelined round trips whatever the number of workers: names and Redis' clock; each worker's
hash and task set; the states of the tasks they hold.

A node's ``state`` is its recorded ``WorkerState`` (online, draining, lost, stopped), except
that an online or draining worker whose last heartbeat is older than ``worker_timeout`` shows as
``unreachable`` (HPC Pack's word, Slurm's ``*``): the dispatcher already gives it no work (it
only fills workers heard from within the timeout), and the scheduler's next pass declares it
lost - or nobody does, while no scheduler runs.  Showing it ``online`` would claim slots nobody
can use; ``recorded_state`` keeps what Redis holds.  The timeout is this client's
(``HPCQ_WORKER_TIMEOUT``), which should be the scheduler's.

Slots: ``used`` are the tasks Redis holds on the worker (Dispatching, Running or Canceling, from
its ``worker:{}:tasks`` set) plus its ``stale`` attempts (still being killed); ``free`` is what
is left of ``slots`` on a node that takes work (online), 0 on any other."""

from __future__ import annotations

import json

from scheduler.core import keys
from scheduler.core.ids import TaskId
from scheduler.core.states import TASK_ON_WORKER, WorkerState
from scheduler.errors import NotFound

#: The shown state of an online or draining worker silent past the worker timeout.
UNREACHABLE = "unreachable"
_ON_WORKER = {s.value for s in TASK_ON_WORKER}


def _f(v) -> float | None:
    return None if v in (None, "") else float(v)


def _task_key(tid: str):
    try:
        return (0, TaskId.parse(tid))
    except Exception:
        return (1, tid)


class Node:
    """One worker: its recorded hash, the tasks it holds (id, state) and its heartbeat's age."""

    def __init__(self, name: str, record: dict, tasks: list[tuple[str, str]], now: float,
                 worker_timeout: float, allocations: dict | None = None):
        self.name = name
        self.record = record
        self.tasks = sorted(tasks, key=lambda t: _task_key(t[0]))
        #: task id -> (cores, GPU ids) its attempt was given
        self.allocations = allocations or {}
        self.last_heartbeat = _f(record.get("beat"))
        self.heartbeat_age = None if self.last_heartbeat is None else max(0.0, now - self.last_heartbeat)
        self.worker_timeout = worker_timeout

    recorded_state = property(lambda self: self.record.get("state") or "")
    slots = property(lambda self: int(self.record.get("slots") or 0))
    stale = property(lambda self: int(self.record.get("stale") or 0))
    queue = property(lambda self: self.record.get("queue") or keys.worker_queue(self.name))
    started = property(lambda self: _f(self.record.get("started")))
    lost_at = property(lambda self: _f(self.record.get("lost_at")))
    used = property(lambda self: len(self.tasks) + self.stale)
    task_ids = property(lambda self: [tid for tid, _ in self.tasks])
    #: What it advertises (hpcq worker --cores/--memory/--gpus/--group); memory None: not given
    cores = property(lambda self: int(self.record.get("cores") or self.slots))
    memory = property(lambda self: int(self.record["memory"]) if self.record.get("memory") else None)
    gpus = property(lambda self: [g for g in (self.record.get("gpus") or "").split(",") if g])
    groups = property(lambda self: [g for g in (self.record.get("groups") or "").split(",") if g])
    cores_used = property(lambda self: sum(c for c, _ in self.allocations.values()))
    gpus_used = property(lambda self: sorted(g for _, gs in self.allocations.values() for g in gs))

    @property
    def state(self) -> str:
        """The recorded state, or ``unreachable`` (see the module's docstring)."""
        st = self.recorded_state
        if st in (WorkerState.online, WorkerState.draining) and (
                self.heartbeat_age is None or self.heartbeat_age > self.worker_timeout):
            return UNREACHABLE
        return st

    @property
    def takes_work(self) -> bool:
        return self.state == WorkerState.online

    @property
    def free(self) -> int:
        return max(0, self.slots - self.used) if self.takes_work else 0

    @property
    def pid(self) -> int | None:
        try:
            return int(json.loads(self.record.get("info") or "{}").get("pid"))
        except (TypeError, ValueError, AttributeError):
            return None

    def to_dict(self) -> dict:
        age = self.heartbeat_age
        return {
            "name": self.name, "state": self.state, "recorded_state": self.recorded_state,
            "slots": self.slots, "used": self.used, "free": self.free, "stale": self.stale,
            "tasks": [{"id": tid, "state": st} for tid, st in self.tasks],
            "last_heartbeat": self.last_heartbeat,
            "heartbeat_age": None if age is None else round(age, 3),
            "started": self.started, "lost_at": self.lost_at, "queue": self.queue,
            "pid": self.pid, "cores": self.cores, "memory": self.memory, "gpus": self.gpus,
            "groups": self.groups, "cores_used": self.cores_used, "gpus_used": self.gpus_used,
        }

    def __repr__(self) -> str:
        age = "never" if self.heartbeat_age is None else f"{self.heartbeat_age:.1f} s ago"
        return (f"<Node {self.name} {self.state}: {self.used}/{self.slots} slots used, "
                f"tasks {','.join(self.task_ids) or '-'}, heartbeat {age}>")


def _execute(store, pipe) -> list:
    return store._do(pipe.execute)


def read_nodes(store, worker_timeout: float, names: list[str] | None = None) -> list[Node]:
    """The nodes named (all the cluster knows, by name, when ``names`` is None); a name with no
    record is left out."""
    pipe = store.redis.pipeline(transaction=False)
    pipe.time()
    if names is None:
        pipe.zrange(keys.WORKERS, 0, -1)
    first = _execute(store, pipe)
    sec, usec = first[0]
    now = sec + usec / 1e6
    names = sorted(first[1]) if names is None else list(names)
    pipe = store.redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
        pipe.smembers(keys.worker_tasks(name))
    found = _execute(store, pipe) if names else []
    records = {n: (found[2 * k], sorted(found[2 * k + 1])) for k, n in enumerate(names)
               if found[2 * k]}
    held = [tid for _, tids in records.values() for tid in tids]
    pipe = store.redis.pipeline(transaction=False)
    for tid in held:
        pipe.hmget(keys.task(tid), "state", "a_cores", "a_gpus")
    rows = dict(zip(held, _execute(store, pipe) if held else []))
    states = {t: v[0] for t, v in rows.items()}

    def alloc(tids):
        return {t: (int(rows[t][1] or 1), [g for g in (rows[t][2] or "").split(",") if g])
                for t in tids if states.get(t) in _ON_WORKER}
    return [Node(n, rec, [(t, states[t]) for t in tids if states.get(t) in _ON_WORKER], now,
                 worker_timeout, alloc(tids))
            for n, (rec, tids) in records.items()]


def node_list(store, worker_timeout: float) -> list[Node]:
    """Every worker Redis knows, by name (the scheduler forgets a lost or stopped one
    3 x worker_timeout after its last heartbeat)."""
    return read_nodes(store, worker_timeout)


def get_node(store, worker_timeout: float, name: str) -> Node:
    found = read_nodes(store, worker_timeout, [name])
    if not found:
        raise NotFound(f"node {name} does not exist")
    return found[0]
