"""The Redis store: every state change is one Lua script (``scripts.py``), and every read goes
through here too."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from scheduler.core import keys, schema
from scheduler.core.scripts import Scripts
from scheduler.errors import HpcqError, InvalidState, NotFound


class Store(Scripts):
    """hpcq's view of one Redis database."""

    def ping(self) -> None:
        self._do(self.redis.ping)

    def holds_cluster(self) -> bool:
        """Whether a scheduler or worker ever ran against this Redis (``keys.CLUSTER``)."""
        return bool(self._do(self.redis.exists, keys.CLUSTER))

    def announce(self, admins: str, cancel_grace: float) -> None:
        """The leading scheduler's word to every client, renewed with its lease: this Redis
        holds an hpcq cluster (``CLUSTER``, set once), its administrators (``ADMINS``) and its
        cancel grace period (``CANCEL_GRACE``)."""
        def all_three():
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(keys.CLUSTER, f"{time.time():.3f}", nx=True)
            pipe.set(keys.ADMINS, admins)
            pipe.set(keys.CANCEL_GRACE, f"{cancel_grace:g}")
            pipe.execute()
        self._do(all_three)

    def cancel_grace(self) -> float | None:
        """The cluster's cancel grace period (``announce``), None if no scheduler published one."""
        value = self._do(self.redis.get, keys.CANCEL_GRACE)
        return float(value) if value not in (None, b"", "") else None

    # --- jobs and tasks -------------------------------------------------------------------
    def create_job(self, record: dict[str, str]) -> int:
        flat = [x for kv in record.items() for x in kv]
        return int(self.call("create_job", flat))

    def add_task(self, job_id: int, record: dict[str, str], deps=()) -> int:
        """Add a task; ``deps`` (task numbers) count only when the job is already submitted."""
        flat = [x for kv in record.items() for x in kv]
        return int(self.call("add_task", [job_id, ",".join(map(str, deps)), *flat]))

    def new_job(self, record: dict[str, str], tasks: list[dict[str, str]], deps, band: int,
                submit: bool = True, key: str = "") -> tuple[int, bool]:
        """A whole job; (its id, created now).  With ``key``, a job already made with that key is
        returned instead of a new one.  Up to STEP_TASKS tasks it is one atomic step; a larger
        job is built STEP_TASKS tasks a step while Configuring (if a step fails, what was built
        is removed), then submitted by submit.lua, its tasks queued by its submit op."""
        step = schema.STEP_TASKS
        flat = [[x for kv in t.items() for x in kv] for t in tasks]
        deps = [",".join(map(str, d)) for d in deps]
        payload = {"job": [x for kv in record.items() for x in kv], "band": band}
        if len(tasks) <= step:
            return self._new_job(key, {**payload, "tasks": flat, "deps": deps, "submit": submit})
        if key and (found := self.job_by_key(key)):
            return found, False
        j, _ = self._new_job("", {**payload, "tasks": flat[:step], "deps": deps[:step],
                                  "submit": False})
        try:
            for k in range(step, len(tasks), step):
                self._new_job("", {**payload, "job_id": j, "tasks": flat[k:k + step],
                                   "deps": deps[k:k + step], "submit": False})
            if submit:
                # (the dependencies are on the records already)
                submitted = self.submit(j, band, [()] * len(tasks), key)
                if submitted != j:     # the key named another job meanwhile: that one it is
                    self.discard_job(j)
                    return submitted, False
        except HpcqError:
            self.discard_job(j)
            raise
        return j, True

    def _new_job(self, key: str, payload: dict) -> tuple[int, bool]:
        reply = self.call("new_job", [key, json.dumps(payload)])
        self.follow(reply[2:])
        return int(reply[0]), bool(reply[1])

    def discard_job(self, job_id: int) -> None:
        """Best effort: a job half built by new_job is canceled and purged."""
        try:
            try:
                self.cancel_job(job_id, "", "", "")
            except InvalidState:
                pass                            # ended already
            while self.purge_job(job_id, 1000)[0] == "more":
                pass
        except HpcqError:
            pass

    # (``user`` of a user operation: refused, PermissionDenied, unless the job's owner or an
    # administrator; '' for hpcq's own calls)
    def modify_job(self, job_id: int, hold_until: str = "", priority: str = "", band: int = 0,
                   user: str = "") -> str:
        return self.call("modify_job", [job_id, hold_until, priority, band, user])

    def finish_task(self, task_id, message: str, grace=None, user: str = ""):
        return self.split_revokes(self.call("finish_task", [task_id, message,
                                                            "" if grace is None else grace, user]))

    def finish_job(self, job_id, message: str, grace=None, user: str = ""):
        return self.split_revokes(self.call("finish_job", [job_id, message,
                                                           "" if grace is None else grace, user]))

    def release(self) -> int:
        """Held jobs and retry delays that are due go to the queue; how many."""
        return int(self.call("release"))

    def submit(self, job_id: int, band: int, deps: Sequence[Sequence[int]], key: str = "") -> int:
        """Submit; the job submitted (another one when ``key`` already names it)."""
        pairs = [x for t, d in enumerate(deps, 1) if d for x in (t, ",".join(map(str, d)))]
        reply = self.call("submit", [job_id, len(deps), band, key, *pairs])
        self.follow(reply[1:])
        return int(reply[0])

    def job_by_key(self, key: str) -> int | None:
        j = self._do(self.redis.get, keys.job_key(key))
        return int(j) if j and self._do(self.redis.exists, keys.job(j)) else None

    def job(self, job_id: int) -> dict[str, str]:
        rec = self._do(self.redis.hgetall, keys.job(job_id))
        if not rec:
            raise NotFound(schema.Msg.job_not_found.format(job_id))
        return rec

    def task(self, task_id) -> dict[str, str] | None:
        return self._do(self.redis.hgetall, keys.task(task_id)) or None

    def tasks(self, task_ids) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for tid in task_ids:
            pipe.hgetall(keys.task(tid))
        return self._do(pipe.execute)

    def job_ids(self) -> list[int]:
        return [int(j) for j in self._do(self.redis.zrange, keys.JOBS, 0, -1)]

    def jobs(self, job_ids) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hgetall(keys.job(j))
        return self._do(pipe.execute)

    def materialized(self, master_id) -> int:
        return int(self._do(self.redis.hget, keys.task(master_id), "next") or 0)

    # --- state changes with revokes -------------------------------------------------------
    @staticmethod
    def pairs(flat) -> list[tuple[str, str]]:
        """The revokes (celery id, mode) of a flat reply; the ('', 'more:<job>') markers of ops
        left unfinished are not revokes."""
        return [(flat[k], flat[k + 1]) for k in range(0, len(flat) - 1, 2) if flat[k]]

    def split_revokes(self, reply, follow: bool = True) -> tuple[str, list[tuple[str, str]]]:
        """(state, revokes) of a cancel/requeue/finish reply; with ``follow``, the job ops it
        left unfinished are done now and their revokes added."""
        state, rest = reply[0], reply[1:]
        revokes = self.pairs(rest)
        if follow:
            revokes += self.follow(rest)
        return state, revokes

    def follow(self, flat) -> list[tuple[str, str]]:
        """Every job op a reply says it left unfinished ('more:<job>'), to its end; the revokes
        of those steps."""
        revokes = []
        for x in flat:
            if isinstance(x, str) and x.startswith("more:"):
                while True:
                    done, got = self.job_step(x[5:])
                    revokes += got
                    if done:
                        break
        return revokes

    def job_step(self, job_id, budget: int = schema.STEP_TASKS) -> tuple[bool, list[tuple[str, str]]]:
        """One step of the job's op (lib_ops.lua): (done, revokes)."""
        reply = self.call("job_step", [job_id, budget])
        return reply[0] == "done", self.pairs(reply[1:])

    def job_ops(self) -> list[str]:
        """Jobs whose op is in progress (a client stopped midway: the leader finishes them)."""
        return sorted(self._do(self.redis.smembers, keys.JOB_OPS))

    def cancel_task(self, task_id, queued_msg, running_msg, force=False, grace=None,
                    mode="user", token="", read=None, user=""):
        """(state, revokes); with ``read`` (task ids), also their records as the step left them,
        read in its round trip: (state, revokes, records)."""
        args = [task_id, queued_msg, running_msg, int(bool(force)),
                "" if grace is None else grace, mode, token, user]
        if read is None:
            return self.split_revokes(self.call("cancel_task", args))
        reply, records = self.call_then_read("cancel_task", args, read)
        return (*self.split_revokes(reply), records)

    def cancel_job(self, job_id, queued_msg, running_msg, job_error, force=False, grace=None,
                   graceful=False, follow=True, user=""):
        """The job is marked and what runs stopped in one step; its other tasks by its cancel
        op: with ``follow`` to the end before this returns, else by the leading scheduler."""
        reply = self.call("cancel_job", [job_id, queued_msg, running_msg, job_error,
                                         int(bool(force)), "" if grace is None else grace,
                                         int(bool(graceful)), user])
        return self.split_revokes(reply, follow)

    def requeue_task(self, task_id, running_msg, user=""):
        return self.split_revokes(self.call("requeue_task", [task_id, running_msg, user]))

    def requeue_job(self, job_id, running_msg, user=""):
        return self.split_revokes(self.call("requeue_job", [job_id, running_msg, user]))

    # --- dispatch and workers -------------------------------------------------------------
    def dispatch_to(self, workers, want: int, scan: int = 1000) -> list[tuple[str, str, str, str]]:
        """Hand up to ``want`` queued units to ``workers`` where they fit, looking at most at
        ``scan`` queue entries: [(worker, task id, token, celery id)]."""
        return self.dispatch_shown(workers, want, scan, 0)[0]

    def dispatch_shown(self, workers, want: int, scan: int, head_bytes: int):
        """``dispatch_to``, and the head of each command handed out (its first ``head_bytes``
        bytes), from the same step: {spec id: (head, length, sweep start, sweep step)}."""
        flat, heads = self.call("dispatch", [want, scan, head_bytes, *workers])
        return ([tuple(flat[k:k + 4]) for k in range(0, len(flat), 4)],
                {heads[k]: tuple(heads[k + 1:k + 5]) for k in range(0, len(heads), 5)})

    def dispatch(self, worker: str, want: int) -> list[tuple[str, str, str]]:
        """``dispatch_to`` one worker: [(task id, token, celery id)]."""
        return [a[1:] for a in self.dispatch_to([worker], want)]

    def start(self, task_id, token, pid) -> tuple[bool, str, dict[str, str] | str]:
        reply = self.call("start", [task_id, token, pid])
        if reply[0] != "ok":
            return False, "", reply[1]
        flat = reply[2:]
        return True, reply[1], dict(zip(flat[::2], flat[1::2]))

    def finish(self, task_id, token, outcome, exit_code=None, error="", output="", cpu_user=0,
               cpu_sys=0, max_rss=0, retry_cap=3, drain=False, follow=True, pid=None, spool=""):
        """The end of an attempt (lib_attempt.lua); (end state, message, revokes).  A failure that
        fails its job (fail_on_task_failure) starts the job's fail op: ``follow`` does it to the
        end here, else the leading scheduler does (a worker does not wait for it).  ``pid`` and
        ``spool``: the command's, if not recorded yet (token-checked, like the result)."""
        reply = self.call("finish", [task_id, token, outcome,
                                     "" if exit_code is None else exit_code, error or "",
                                     output or "", cpu_user, cpu_sys, max_rss, retry_cap,
                                     int(drain), pid or "", spool or ""])
        if reply[0] != "ok":
            return reply[1], "", []
        _, revokes = self.split_revokes(reply[2:], follow)
        return reply[1], reply[2], revokes

    def set_fields(self, task_id, **fields) -> None:
        self._do(self.redis.hset, keys.task(task_id), mapping={k: str(v) for k, v in fields.items()})

    def heartbeat(self, name: str, slots: int, queue: str, info: dict, held, grace: float,
                  retry_cap: int, state: str = "online", resources: dict | None = None):
        """Registers the worker in full and reconciles: ``held`` is [(task id, token)] of the
        attempts it really runs; ``resources`` what it advertises (cores, memory in MB, gpus as
        a list of ids, groups; cores default to ``slots``, memory to unlimited).  Returns
        (stale [(task id, token)] to kill, revokes)."""
        res = resources or {}
        flat = [x for pair in held for x in pair]
        stale, revokes = self.call("heartbeat", [
            name, slots, queue, json.dumps(info), grace, retry_cap, state,
            res.get("cores") or slots, res.get("memory") or "",
            ",".join(map(str, res.get("gpus") or ())), ",".join(res.get("groups") or ()),
            len(held), *flat])
        return ([(stale[k], stale[k + 1]) for k in range(0, len(stale), 2)],
                [(revokes[k], revokes[k + 1]) for k in range(0, len(revokes), 2) if revokes[k]])

    def unregister_worker(self, name: str) -> None:
        """Marks the worker gone (heartbeat 0): no new tasks, and the scheduler reclaims what
        was sent to it but never started."""
        self.call("leave", [name])

    def lose_worker(self, name: str, message: str, unstarted: str, retry_cap: int):
        """Ends every attempt of a worker declared lost: (revokes to publish, [(celery id,
        reason)] of the attempts that had started there, for Celery's monitors)."""
        flat, ended = self.call("lose_worker", [name, message, unstarted, retry_cap])
        return (self.pairs(flat), [(ended[k], ended[k + 1]) for k in range(0, len(ended), 2)])

    def worker_states(self, names) -> list[str | None]:
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.hget(keys.worker(n), "state")
        return self._do(pipe.execute)

    def time(self) -> float:
        """Redis' clock: heartbeats are stamped with it, so hosts' clocks need not agree."""
        sec, usec = self._do(self.redis.time)
        return sec + usec / 1e6

    def dead_workers(self, before: float) -> list[str]:
        return self._do(self.redis.zrangebyscore, keys.WORKERS, 0, before)

    def last_beat(self, name: str) -> float:
        """The worker's last heartbeat (Redis time), which its ``beat`` field keeps after it
        stopped (its score in WORKERS is then 0); 0 if there is none."""
        return float(self._do(self.redis.hget, keys.worker(name), "beat") or 0)

    def forget_worker(self, name: str) -> None:
        pipe = self.redis.pipeline()
        pipe.zrem(keys.WORKERS, name)
        pipe.delete(keys.worker(name))
        self._do(pipe.execute)

    def live_workers(self, since: float) -> list[str]:
        """Every worker heard from since ``since`` (one command: which of them have a free slot
        is dispatch.lua's to see, not a pipeline of two commands a worker each pass)."""
        return self._do(self.redis.zrangebyscore, keys.WORKERS, since, "+inf")

    def stranded(self, before: float, limit: int = 1000) -> list[str]:
        """Units Dispatching since before ``before`` (Redis time): sent, never started."""
        return self._do(self.redis.zrangebyscore, keys.DISPATCHING, "-inf", f"({before!r}",
                        start=0, num=limit)

    def busy_counts(self, names) -> list[int]:
        """How many attempts each of ``names`` holds (one pipeline)."""
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.scard(keys.worker_tasks(n))
        return self._do(pipe.execute)

    def worker_tasks(self, name: str) -> list[str]:
        return sorted(self._do(self.redis.smembers, keys.worker_tasks(name)))

    def take_lease(self, owner: str, ttl: float) -> bool:
        return bool(self.call("lease", [owner, int(ttl * 1000)]))

    def release_lease(self, owner: str) -> None:
        if self._do(self.redis.get, keys.LEADER) == owner:
            self._do(self.redis.delete, keys.LEADER)

    def drop_deadline(self, job_id: int) -> None:
        self._do(self.redis.zrem, keys.DEADLINES, job_id)

    def due_jobs(self, now: float) -> list[int]:
        return [int(j) for j in self._do(self.redis.zrangebyscore, keys.DEADLINES, 0, now)]

    def purge_job(self, job_id: int, budget: int, ended_before: float | None = None) -> tuple[str, int]:
        """One step of deleting an ended job's records: ('done' | 'more' | 'young', keys
        deleted).  'young': it ended at or after ``ended_before``, nothing was done."""
        status, deleted = self.call("purge_job", [job_id, budget, "" if ended_before is None
                                                  else repr(ended_before)])
        return status, int(deleted)

    def ended_jobs(self, before: float, limit: int) -> list[int]:
        """Jobs that ended before ``before``, oldest first."""
        return [int(j) for j in self._do(self.redis.zrangebyscore, keys.ENDED, "-inf",
                                         f"({before!r}", start=0, num=limit)]

    def purging_jobs(self) -> list[int]:
        """Jobs whose purge was begun and not finished (a client or scheduler stopped midway)."""
        return sorted(int(j) for j in self._do(self.redis.smembers, keys.PURGING))

    def wait_wakeup(self, timeout: float) -> set[str]:
        """Block until nudged (or ``timeout``); the worker names nudged, '*' meaning all."""
        first = self._do(self.redis.blpop, [keys.WAKEUP], timeout)
        if not first:
            return set()
        rest = self._do(self.redis.lpop, keys.WAKEUP, 1000) or []
        return {first[1], *rest}
