"""After the chaos phase: wait until every job has settled and the task processes are gone,
then read back what Redis and the marker files hold, the record the checks judge."""

from __future__ import annotations

import os
import time
from collections import Counter

import redis

from bench.chaos.config import JOB_END
from scheduler.core import keys


class Record:
    """Part of ``Chaos`` (bench/chaos/run.py): settling, and the record of the run."""

    def settle(self) -> None:
        """Wait (with a deadline, no fixed sleep) until every job is in an end state."""
        timeout = self.cfg.settle_timeout or (90 + self.cfg.tasks / 20)
        t = time.monotonic()
        deadline = t + timeout
        ids = [j.job_id for j in self.submitted]
        pending = ids
        while True:
            try:
                pipe = self.r.pipeline(transaction=False)
                for jid in pending:
                    pipe.hget(keys.job(jid), "state")
                states = pipe.execute()
                pending = [jid for jid, st in zip(pending, states) if st not in JOB_END]
            except redis.RedisError:
                pass
            if not pending or time.monotonic() > deadline:
                break
            self.supervise(delay=(0, 0))
            time.sleep(0.2)
        self.figures["settle (s)"] = round(time.monotonic() - t, 1)
        self.unsettled = pending
        if pending:
            self.note(f"NOT SETTLED after {timeout:.0f} s: jobs {pending[:20]}")
        else:
            self.note(f"every job settled in {time.monotonic() - t:.1f} s")
        pipe = self.r.pipeline(transaction=False)
        for jid in ids:
            pipe.hget(keys.job(jid), "state")
        self.settled_states = dict(zip(ids, pipe.execute()))

    def quiesce(self) -> None:
        """Once settled no process of any task may be alive (stale copies are stopped by their
        own supervisor or the next heartbeat; commands are short): wait a little for that."""
        deadline = time.monotonic() + 15
        left = self.marked(attempts_only=True)
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = self.marked(attempts_only=True)
        self.left_after_settle = self.describe(left)

    def snapshot(self) -> None:
        r = self.r
        ids = [j.job_id for j in self.submitted]
        pipe = r.pipeline(transaction=False)
        for jid in ids:
            pipe.hgetall(keys.job(jid))
        self.job_recs = dict(zip(ids, pipe.execute()))
        self.task_recs: dict[str, dict] = {}
        tids = [f"{j.job_id}.{t}" for j in self.submitted for t in range(1, len(j.tasks) + 1)]
        pipe = r.pipeline(transaction=False)
        for tid in tids:
            pipe.hgetall(keys.task(tid))
        self.task_recs = dict(zip(tids, pipe.execute()))
        self.inst_recs: dict[str, dict] = {}
        self.master_sets: dict[str, tuple] = {}
        for j in self.submitted:
            for t, tp in enumerate(j.tasks, 1):
                if not tp.sweep:
                    continue
                m = f"{j.job_id}.{t}"
                iids = [f"{m}.{i}" for i in range(1, tp.units + 1)]
                pipe = r.pipeline(transaction=False)
                for iid in iids:
                    pipe.hgetall(keys.task(iid))
                pipe.scard(keys.sweep_active(m))
                pipe.llen(keys.sweep_redo(m))
                res = pipe.execute()
                self.inst_recs.update(zip(iids, res[:-2]))
                self.master_sets[m] = (res[-2], res[-1])
        self.queue = r.zrange(keys.QUEUE, 0, -1)
        self.on_workers = {w.name: sorted(r.smembers(keys.worker_tasks(w.name)))
                           for w in self.workers}
        self.waiting = {j: sorted(r.smembers(keys.job_waiting(j))) for j in ids}
        self.waiting = {j: v for j, v in self.waiting.items() if v}

    def read_marks(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for name in os.listdir(self.marks):
            starts, ends, values = Counter(), Counter(), {}
            with open(os.path.join(self.marks, name), errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 2 and parts[0] == "start":
                        starts[parts[1]] += 1
                        if len(parts) >= 3 and parts[2].startswith("v="):
                            values[parts[1]] = parts[2][2:]
                    elif len(parts) >= 2 and parts[0] == "end":
                        ends[parts[1]] += 1
            out[name] = {"starts": starts, "ends": ends, "values": values}
        return out
