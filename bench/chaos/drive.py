"""Driving the run: the loop that fires the timeline's operations at their times (supervising
the daemons between them), and the operations themselves: submit, cancels and requeues of
tasks and jobs, kill -9 of worker main processes, whole workers, pool processes and schedulers,
a Redis restart, a link cut and its heal.  An operation that fails is counted, not fatal."""

from __future__ import annotations

import heapq
import os
import signal
import time

import redis

from bench.chaos.cluster import Daemon
from bench.chaos.plan import JobPlan
from scheduler.core import keys
from scheduler.errors import HpcqError, RedisUnavailable


class Drive:
    """Part of ``Chaos`` (bench/chaos/run.py): the run loop and the operations (``op_<name>``,
    named in the timeline)."""

    def run_timeline(self) -> None:
        while self.timeline:
            t, _, action, args = heapq.heappop(self.timeline)
            while True:
                self.supervise()
                delay = t - (self.now() - self.t_chaos)
                if delay <= 0:
                    break
                time.sleep(min(delay, 0.2))
            if action == "end":
                # what is still pending (restarts, heals) happens now
                for _, _, a, rest in sorted(self.timeline):
                    if a in ("restart", "heal"):
                        getattr(self, "op_" + a)(*rest)
                self.timeline.clear()
                break
            try:
                getattr(self, "op_" + action)(*args)
            except RedisUnavailable as exc:
                self.ops[action]["Redis unavailable"] += 1
                self.note(f"{action}: {exc}")
            except Exception as exc:  # an op of the chaos driver failing is reported, not fatal
                self.ops[action]["error"] += 1
                self.note(f"{action}: {type(exc).__name__}: {exc}")

    def op_submit(self, job: JobPlan) -> None:
        s = self.s
        j = s.create_job(name=f"chaos-{len(self.submitted) + 1}", priority=job.priority)
        for tp in job.tasks:
            j.add_task(command=tp.command, name=tp.name,
                       sweep=tp.sweep, is_rerunnable=tp.rerunnable, depends_on=tp.depends_on)
        s.submit_job(j)
        job.job_id = j.id
        self.submitted.append(job)
        self.ops["submit job"]["ok"] += 1

    def random_unit(self) -> str | None:
        if not self.submitted:
            return None
        rng = self.op_rng
        pool = self.submitted[-6:] if rng.random() < 0.7 else self.submitted
        job = rng.choice(pool)
        t = rng.randint(1, len(job.tasks))
        tp = job.tasks[t - 1]
        if tp.sweep and rng.random() < 0.75:
            return f"{job.job_id}.{t}.{rng.randint(1, tp.units)}"
        return f"{job.job_id}.{t}"

    def pick_unit(self, wanted: set[str]) -> str | None:
        """A random task, sweep master or instance, preferably in one of the ``wanted`` states."""
        first = None
        for _ in range(10):
            tid = self.random_unit()
            if tid is None:
                return None
            first = first or tid
            try:
                if self.s.get_task(tid).state.value in wanted:
                    return tid
            except HpcqError:
                pass
        return first

    def _do(self, name: str, fn) -> None:
        try:
            fn()
            self.ops[name]["ok"] += 1
        except RedisUnavailable:
            raise
        except HpcqError as exc:      # refused (an end state, not rerunnable, ...): nothing changed
            self.ops[name]["refused"] += 1
            self.refusals[type(exc).__name__] += 1

    def op_cancel(self) -> None:
        tid = self.pick_unit({"Queued", "Dispatching", "Running", "Canceling", "Submitted"})
        if tid:
            force = self.op_rng.random() < 0.2
            self._do("task cancel", lambda: self.s.cancel_task(tid, message="chaos", force=force,
                                                                wait=False))

    def op_requeue(self) -> None:
        tid = self.pick_unit({"Failed", "Canceled", "Running", "Canceling"})
        if tid:
            self._do("task requeue", lambda: self.s.requeue_task(tid, wait=False))

    def _pick_job(self, wanted: set[str]) -> int | None:
        if not self.submitted:
            return None
        cands = [j.job_id for j in self.submitted]
        self.op_rng.shuffle(cands)
        for jid in cands[:10]:
            if self.s.get_job(jid).state.value in wanted:
                return jid
        return cands[0]

    def op_cancel_job(self) -> None:
        jid = self._pick_job({"Queued", "Running"})
        if jid:
            self._do("job cancel", lambda: self.s.cancel_job(jid, message="chaos", wait=False))

    def op_requeue_job(self) -> None:
        jid = self._pick_job({"Failed", "Canceled", "Running"})
        if jid:
            self._do("job requeue", lambda: self.s.requeue_job(jid, wait=False))

    def _up(self, daemons: list[Daemon]) -> list[Daemon]:
        return [d for d in daemons if d.up and not d.host.is_cut]

    def op_kill_worker_main(self) -> None:
        cands = self._up(self.workers)
        if not cands:
            self.ops["kill -9 worker main"]["skipped"] += 1
            return
        w = self.op_rng.choice(cands)
        w.kill(whole=False)
        self.ops["kill -9 worker main"]["ok"] += 1
        self.note(f"kill -9 worker main {w.name} (pid {w.pid})")
        self._restart_later(w, 0.2, 2.5)

    def op_kill_worker_whole(self) -> None:
        cands = self._up(self.workers)
        if not cands:
            self.ops["kill -9 whole worker"]["skipped"] += 1
            return
        w = self.op_rng.choice(cands)
        w.kill(whole=True)
        self.ops["kill -9 whole worker"]["ok"] += 1
        self.note(f"kill -9 whole worker {w.name} (process group {w.pid})")
        self._restart_later(w, 0.2, 2.5)

    def op_kill_pool(self) -> None:
        rng = self.op_rng
        # prefer a pool process that is running an attempt
        busy = []
        try:
            for w in self._up(self.workers):
                for tid in self.r.smembers(keys.worker_tasks(w.name)):
                    pid = self.r.hget(keys.task(tid), "worker_pid")
                    if pid and self.r.hget(keys.task(tid), "state") == "Running":
                        busy.append((w, int(pid), tid))
        except redis.RedisError:
            pass
        busy = [b for b in busy if any(p.pid == b[1] for p in b[0].pool_processes())]
        if busy:
            w, pid, tid = rng.choice(busy)
        else:
            cands = [(w, p.pid, None) for w in self._up(self.workers) for p in w.pool_processes()]
            if not cands:
                self.ops["kill -9 pool process"]["skipped"] += 1
                return
            w, pid, tid = rng.choice(cands)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            self.ops["kill -9 pool process"]["skipped"] += 1
            return
        self.ops["kill -9 pool process"]["ok"] += 1
        self.note(f"kill -9 pool process {pid} of {w.name}" + (f" running {tid}" if tid else " (idle)"))

    def op_kill_scheduler(self) -> None:
        cands = [d for d in self.schedulers if d.up]
        if not cands:
            self.ops["kill -9 scheduler"]["skipped"] += 1
            return
        leader = None
        try:
            lid = self.r.get(keys.LEADER) or ""
            pid = int(lid.split(":")[1]) if lid.count(":") >= 2 else None
            leader = next((d for d in cands if d.pid == pid), None)
        except (redis.RedisError, ValueError):
            pass
        d = leader if leader and self.op_rng.random() < 0.75 else self.op_rng.choice(cands)
        d.kill(whole=True)
        self.ops["kill -9 scheduler"]["ok"] += 1
        self.note(f"kill -9 scheduler {d.name}{' (the leader)' if d is leader else ''}")
        self._restart_later(d, 0.5, 3.0)

    def op_redis_restart(self) -> None:
        t = time.monotonic()
        self.server.restart()     # SHUTDOWN (the AOF is flushed), then the same port and dir
        self.ops["Redis restart"]["ok"] += 1
        self.note(f"Redis restarted (SHUTDOWN + start on port {self.server.port}): "
                  f"{time.monotonic() - t:.2f} s")

    def op_cut(self, worker_first: bool) -> None:
        rng = self.op_rng
        hosts = [d.host for d in self.workers if not d.host.is_cut]
        if not worker_first and rng.random() < 0.25:
            hosts = [d.host for d in self.schedulers if not d.host.is_cut] or hosts
        if not hosts:
            self.ops["link cut"]["skipped"] += 1
            return
        h = rng.choice(hosts)
        h.cut()
        secs = rng.uniform(1.0, 7.0)
        self.ops["link cut"]["ok"] += 1
        self.note(f"link of host {h.name} cut for {secs:.1f} s")
        self.at(self.now() - self.t_chaos + secs, "heal", h)

    def op_heal(self, host) -> None:
        if host.is_cut:
            host.heal()
            self.note(f"link of host {host.name} healed")
