"""Chaos: a real cluster (Redis in the root network namespace, schedulers and workers each on a
host of their own, tests/netns.py) runs short tasks and sweeps while a seeded timeline cancels
and requeues tasks and jobs, kills worker main processes, whole workers, pool processes and
schedulers with SIGKILL (each restarted under its name after a short random delay), restarts
Redis (SHUTDOWN, then the same port and AOF) and cuts a host's link and heals it.  Once every job
has settled, every invariant is checked and printed with its count of violations:

  1. every task and sweep instance is in exactly one end state that agrees with its history
     (the ``hpcq:events`` stream), every job is final, nothing is left in a queue or on a worker
  2. a task canceled before it started never ran its command (per-task marker files), and no
     command ever started without its attempt recorded Running
  3. never two attempts of a task that both record: each attempt ends once, a task is Finished
     at most once, and a Finished task's result (output, marker lines, sweep value) is its
     recorded attempt's own
  4. no process of any task is alive once everything has settled, and none of the run's
     processes after the cluster is stopped
  5. per-state counts: a job's ``c:<State>`` and a sweep master's ``i:<State>`` equal a recount
  6. job (and sweep master) states agree with their tasks (instances)

    python -m bench.chaos --tasks 10000 --seed S [--workers 3] [--schedulers 2] [--keep]

Timing makes a run non-deterministic even with a fixed seed (the seed fixes the plan: jobs,
commands, which operations at which times); the invariants must hold whatever happens.  Exit 1
if any invariant is violated.  Needs root (network namespaces); logs stay in the run's directory
when something is violated (or with --keep)."""

from __future__ import annotations

import argparse
import heapq
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import psutil  # noqa: E402
import redis  # noqa: E402

from netns import Network, netns_available  # noqa: E402  (tests/netns.py)
from redis_server import RedisServer  # noqa: E402  (tests/redis_server.py)
from scheduler import Scheduler  # noqa: E402
from scheduler import keys  # noqa: E402
from scheduler.errors import HpcqError, RedisUnavailable  # noqa: E402

MARKER_VAR = "HPCQ_CHAOS_MARKER"
TASK_STATES = ("Configuring", "Submitted", "Validating", "Queued", "Dispatching", "Running",
               "Finishing", "Finished", "Canceling", "Failed", "Canceled")
TASK_END = {"Finished", "Failed", "Canceled"}
JOB_END = {"Finished", "Failed", "Canceled"}
PRE_QUEUE = ("Configuring", "Submitted", "Validating")

#: The cluster's settings: failures are noticed fast, and chaos does not exhaust the reruns.
CLUSTER_ENV = {
    "HPCQ_WORKER_TIMEOUT": "3",
    "HPCQ_HEARTBEAT_INTERVAL": "0.5",
    "HPCQ_REDIS_TIMEOUT": "1",
    "HPCQ_TASK_CANCEL_GRACE_PERIOD": "1",
    "HPCQ_RECONCILE_GRACE": "2",
    "HPCQ_TASK_RETRY_COUNT": "10",
    "HPCQ_DISPATCH_TIMEOUT": "10",
    "HPCQ_LEASE_TTL": "3",
    "PYTHONUNBUFFERED": "1",
}


# --- the plan ------------------------------------------------------------------------------------

@dataclass
class TaskPlan:
    name: str
    kind: str                      # quick | medium | stubborn | detached | fail
    rerunnable: bool
    command: str
    sweep: tuple[int, int, int] | None = None
    depends_on: list[str] = field(default_factory=list)

    @property
    def units(self) -> int:
        if not self.sweep:
            return 1
        start, end, step = self.sweep
        return (end - start) // step + 1


@dataclass
class JobPlan:
    at: float
    priority: str
    tasks: list[TaskPlan]
    job_id: int | None = None


KIND_WEIGHTS = (("quick", 70), ("medium", 8), ("stubborn", 6), ("detached", 6), ("fail", 10))


def command(kind: str, marks: str, sweep: bool, rng: random.Random) -> str:
    """A short shell command that appends ``start <attempt>`` (with the sweep value, ``*``
    substituted by hpcq) to its unit's marker file first and ``end <attempt>`` last, and prints
    its attempt id as its output."""
    value = " v=*" if sweep else ""
    body = {
        "quick": f"sleep 0.0{rng.randint(1, 9)}",
        "medium": f"sleep 0.{rng.randint(3, 9)}",
        "stubborn": f"trap '' TERM; sleep 1.{rng.randint(0, 5)}",      # SIGKILLed after the grace
        "detached": "setsid sleep 60 </dev/null >/dev/null 2>&1 & sleep 0.05",  # leaves its session
        "fail": f"sleep 0.0{rng.randint(1, 9)}",
    }[kind]
    tail = "; exit 3" if kind == "fail" else ""
    return (f'M={marks}/$HPCQ_TASK_ID; echo "start $HPCQ_ATTEMPT{value}" >> "$M"; {body}; '
            f'echo "end $HPCQ_ATTEMPT" >> "$M"; echo "$HPCQ_ATTEMPT"{tail}')


def plan_jobs(rng: random.Random, n_units: int, submit_until: float, marks: str) -> list[JobPlan]:
    kinds = [k for k, _ in KIND_WEIGHTS]
    weights = [w for _, w in KIND_WEIGHTS]
    jobs: list[JobPlan] = []
    left = n_units
    while left > 0:
        tasks: list[TaskPlan] = []
        for t in range(1, rng.randint(4, 14) + 1):
            if left <= 0:
                break
            kind = rng.choices(kinds, weights)[0]
            rerunnable = rng.random() < 0.9
            deps = [f"t{rng.randint(1, t - 1)}"] if t > 1 and rng.random() < 0.15 else []
            if rng.random() < 0.2 and left >= 3:
                count = min(left, rng.randint(3, 16))
                start, step = rng.randint(0, 5), rng.randint(1, 3)
                sweep = (start, start + (count - 1) * step, step)
                left -= count
            else:
                sweep = None
                left -= 1
            tasks.append(TaskPlan(f"t{t}", kind, rerunnable, command(kind, marks, bool(sweep), rng),
                                  sweep, deps))
        prio = rng.choice(["BelowNormal", "Normal", "Normal", "AboveNormal"])
        jobs.append(JobPlan(0.0, prio, tasks))
    for k, job in enumerate(jobs):
        # the first quarter of the jobs at once (work to be in flight when the chaos starts)
        job.at = 0.0 if k < max(1, len(jobs) // 4) else rng.uniform(0, submit_until)
    jobs.sort(key=lambda j: j.at)
    return jobs


def failure_kind(error: str) -> str:
    """A Failed task's error message, reduced to its kind."""
    for needle, kind in (("not rerun again", "rerun cap"), ("canceled by the user during", "canceled while running"),
                         ("exited with code", "exit code"), ("killed by signal", "killed by signal"),
                         ("became unreachable", "worker lost"), ("supervising the task", "pool process died"),
                         ("was stopped while", "worker stopped"), ("no longer runs", "unlisted"),
                         ("failed because task", "job failed")):
        if needle.lower() in error.lower():
            return kind
    return error[:60] or "(no message)"


@dataclass
class Config:
    tasks: int = 300
    seed: int = 1
    workers: int = 3
    schedulers: int = 2
    concurrency: int = 2
    duration: float | None = None        # chaos phase; default from the size
    settle_timeout: float | None = None
    keep: bool = False
    quiet: bool = False

    def chaos_seconds(self) -> float:
        return self.duration if self.duration is not None else max(20.0, self.tasks * 0.06)


# --- daemons -------------------------------------------------------------------------------------

class Daemon:
    """A worker or scheduler process on its own host, restartable under the same name."""

    def __init__(self, chaos: "Chaos", kind: str, name: str, host):
        self.chaos, self.kind, self.name, self.host = chaos, kind, name, host
        self.popen: subprocess.Popen | None = None
        self.log_path = os.path.join(chaos.logdir, f"{kind}-{name.split('@')[0]}.log")
        self.lives = 0
        self.down_since: float | None = None
        self.killed = False           # down because the chaos killed it: a restart is planned

    def argv(self) -> list[str]:
        if self.kind == "worker":
            return [sys.executable, "-m", "scheduler.cli", "worker", "--hostname", self.name,
                    "--concurrency", str(self.chaos.cfg.concurrency)]
        return [sys.executable, "-m", "scheduler.cli", "scheduler"]

    def start(self) -> None:
        self.lives += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== chaos: life {self.lives} of {self.name} at "
                      f"t={self.chaos.now():.2f}\n".encode())
            log.flush()
            self.popen = self.host.popen(self.argv(), env=self.chaos.env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT)
        self.down_since = None
        self.killed = False
        self.chaos.note(f"{self.name} life {self.lives}: pid {self.popen.pid}")

    @property
    def up(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def kill(self, whole: bool) -> None:
        """SIGKILL the main process, or (whole) its process group: main and pool processes.
        The task commands run in sessions of their own, so they are orphaned, not killed."""
        if not self.up:
            return
        try:
            if whole:
                os.killpg(self.popen.pid, signal.SIGKILL)
            else:
                os.kill(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.killed = True
        self.popen.wait(10)
        self.down_since = self.chaos.now()

    def exit_reason(self) -> str:
        """Why the process exited on its own: its exit status and the last error it logged."""
        reason = ""
        try:
            with open(self.log_path, errors="replace") as f:
                lines = f.read().split("===== chaos: life")[-1].splitlines()
            critical = [x for x in lines if "CRITICAL" in x or "Unrecoverable error" in x]
            errors = [x for x in lines if "ERROR" in x or "Traceback" in x]
            reason = (critical or errors or [""])[0].strip()[:200]
        except OSError:
            pass
        return f"exit status {self.popen.returncode}" + (f": {reason}" if reason else "")

    def stop(self, timeout: float = 25.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.chaos.note(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM: killed")
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def pool_processes(self) -> list[psutil.Process]:
        """The worker's Celery pool processes (its children that are not task commands)."""
        if not self.up:
            return []
        out = []
        try:
            for p in psutil.Process(self.popen.pid).children():
                try:
                    if "python" in p.name().lower() and "HPCQ_ATTEMPT" not in p.environ():
                        out.append(p)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return out


# --- the event stream ------------------------------------------------------------------------------

class EventTail(threading.Thread):
    """Reads ``hpcq:events`` as it grows (the stream is trimmed at ~100,000 entries), through
    Redis restarts."""

    def __init__(self, url: str):
        super().__init__(daemon=True, name="chaos-events")
        self.url = url
        self.last = "0-0"
        self.task_events: dict[str, list[str]] = defaultdict(list)
        self.job_events: dict[str, list[str]] = defaultdict(list)
        self.worker_events: list[tuple[str, str]] = []
        self.count = 0
        self.first_id: str | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.errors = 0

    def read_once(self, client: redis.Redis, block: int | None) -> int:
        reply = client.xread({keys.EVENTS: self.last}, count=5000, block=block)
        n = 0
        with self.lock:
            for _stream, entries in reply or []:
                for eid, f in entries:
                    if self.first_id is None:
                        self.first_id = eid
                    self.last = eid
                    kind, ident, state = f.get("kind"), f.get("id"), f.get("state")
                    if kind == "task":
                        self.task_events[ident].append(state)
                    elif kind == "job":
                        self.job_events[ident].append(state)
                    else:
                        self.worker_events.append((ident, state))
                    n += 1
            self.count += n
        return n

    def run(self) -> None:
        client = None
        while not self.stopping.is_set():
            try:
                if client is None:
                    client = redis.Redis.from_url(self.url, decode_responses=True,
                                                  socket_timeout=3, socket_connect_timeout=1)
                self.read_once(client, 300)
            except redis.RedisError:
                self.errors += 1
                client = None
                time.sleep(0.2)

    def drain(self) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            while self.read_once(client, None):
                pass
        finally:
            client.close()


# --- the run ---------------------------------------------------------------------------------------

@dataclass
class Invariant:
    title: str
    checked: int = 0
    violations: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        self.violations.append(what)


class Chaos:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)                 # the plan
        self.op_rng = random.Random(f"{cfg.seed}/ops")     # targets picked while running
        self.tag = f"chaos{uuid.uuid4().hex[:8]}"
        self.workdir = tempfile.mkdtemp(prefix=f"hpcq-chaos-s{cfg.seed}-")
        self.logdir = os.path.join(self.workdir, "logs")
        self.marks = os.path.join(self.workdir, "marks")
        for d in (self.logdir, self.marks, os.path.join(self.workdir, "run")):
            os.makedirs(d, exist_ok=True)
        self.t0 = time.monotonic()
        self.ops: dict[str, Counter] = defaultdict(Counter)
        self.refusals: Counter = Counter()
        self.fail_reasons: Counter = Counter()
        self.reruns: list[tuple] = []
        self.unexpected: list[tuple] = []
        self.notes: list[str] = []
        self.jobs: list[JobPlan] = []
        self.submitted: list[JobPlan] = []
        self.invariants: dict[str, Invariant] = {}
        self.figures: dict[str, object] = {}
        self.timeline: list = []
        self.daemons: list[Daemon] = []
        self._seq = 0

    # --- small things ------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        line = f"[{self.now():7.2f}] {text}"
        self.notes.append(line)
        with open(os.path.join(self.logdir, "chaos.log"), "a") as f:
            f.write(line + "\n")
        if not self.cfg.quiet:
            print(line, flush=True)

    def at(self, t: float, action: str, *args) -> None:
        self._seq += 1
        heapq.heappush(self.timeline, (t, self._seq, action, args))

    def marked(self, attempts_only: bool) -> list[psutil.Process]:
        found = []
        me = os.getpid()
        for p in psutil.process_iter():
            if p.pid == me:
                continue
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                env = p.environ()
            except psutil.Error:
                continue
            if env.get(MARKER_VAR) == self.tag and (not attempts_only or "HPCQ_ATTEMPT" in env):
                found.append(p)
        return found

    def describe(self, procs) -> list[str]:
        """One line per process: pid, parent, age in the run, state, attempt, kernel wait
        channel, command line."""
        out = []
        wall0 = time.time() - self.now()
        for p in procs:
            try:
                env = p.environ()
                try:
                    with open(f"/proc/{p.pid}/wchan") as f:
                        wchan = f.read().strip()
                except OSError:
                    wchan = "?"
                out.append(f"pid {p.pid} (parent {p.ppid()}, started t={p.create_time() - wall0:.2f}, "
                           f"{p.status()}, wchan {wchan}, worker {env.get('HPCQ_WORKER', '-')}, "
                           f"attempt {env.get('HPCQ_ATTEMPT', '-')}): {' '.join(p.cmdline())[:120]}")
            except psutil.Error:
                out.append(f"pid {p.pid} (gone)")
        return out

    # --- the whole run ---------------------------------------------------------------------------
    def run(self) -> "Chaos":
        ok, reason = netns_available()
        if not ok:
            raise RuntimeError(f"chaos needs network namespaces: {reason}")
        cfg = self.cfg
        d = cfg.chaos_seconds()
        self.jobs = plan_jobs(self.rng, cfg.tasks, 0.75 * d, self.marks)
        self.plan_chaos(d)
        self.server = None
        self.daemons: list[Daemon] = []
        try:
            with Network("chaos") as net:
                self.net = net
                self.server = RedisServer(os.path.join(self.workdir, "redis"), appendonly=True,
                                           bind=f"{net.bridge_addr} 127.0.0.1")
                self.server.start()
                self.url = self.server.url
                self.env = {**CLUSTER_ENV, "HPCQ_REDIS_URL": self.url, MARKER_VAR: self.tag,
                            "HPCQ_RUN_DIR": os.path.join(self.workdir, "run"),
                            "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
                self.r = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=10)
                self.s = Scheduler.connect(self.url)
                self.start_cluster()
                self.events = EventTail(self.url)
                self.events.start()
                self.t_chaos = self.now()
                self.note(f"chaos phase: {len(self.jobs)} jobs, {cfg.tasks} tasks, {d:.0f} s")
                self.run_timeline()
                self.figures["chaos phase (s)"] = round(self.now() - self.t_chaos, 1)
                self.settle()
                self.quiesce()
                self.stop_cluster()
                self.events.stopping.set()
                self.events.join(5)
                self.events.drain()
                self.snapshot()
                self.r.close()
                self.server.stop()
            self.check_all()
            self.after_teardown()
        finally:
            if self.server is not None:
                self.server.stop()
        return self

    # --- the cluster ----------------------------------------------------------------------------
    def start_cluster(self) -> None:
        cfg = self.cfg
        for k in range(1, cfg.schedulers + 1):
            self.daemons.append(Daemon(self, "scheduler", f"s{k}", self.net.host(f"s{k}")))
        for k in range(1, cfg.workers + 1):
            self.daemons.append(Daemon(self, "worker", f"w{k}@{self.tag}", self.net.host(f"w{k}")))
        for dmn in self.daemons:
            dmn.start()
        deadline = time.monotonic() + 90
        for w in self.workers:
            while self.r.zscore(keys.WORKERS, w.name) is None:
                if not w.up:
                    raise RuntimeError(f"worker {w.name} exited at start; see {w.log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {w.name} did not register; see {w.log_path}")
                time.sleep(0.1)
        while not self.r.get(keys.LEADER):
            if time.monotonic() > deadline:
                raise RuntimeError("no scheduler took the lease")
            time.sleep(0.1)
        self.note(f"cluster up: {cfg.workers} workers x {cfg.concurrency}, {cfg.schedulers} "
                  f"schedulers, Redis {self.url} (AOF), run dir {self.workdir}")

    @property
    def workers(self) -> list[Daemon]:
        return [d for d in self.daemons if d.kind == "worker"]

    @property
    def schedulers(self) -> list[Daemon]:
        return [d for d in self.daemons if d.kind == "scheduler"]

    def stop_cluster(self) -> None:
        for w in self.workers:
            w.stop()
        for s in self.schedulers:
            s.stop()
        left = self.marked(attempts_only=False)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.marked(attempts_only=False)
        self.left_after_stop = self.describe(left)
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass

    # --- the timeline -----------------------------------------------------------------------------
    def plan_chaos(self, d: float) -> None:
        rng, cfg = self.rng, self.cfg
        njobs = len(self.jobs)
        for job in self.jobs:
            self.at(job.at, "submit", job)

        def spread(action: str, n: int, lo: float = 0.05, hi: float = 0.95) -> None:
            for _ in range(n):
                self.at(rng.uniform(lo * d, hi * d), action)

        spread("cancel", max(8, cfg.tasks * 6 // 100))
        spread("requeue", max(6, cfg.tasks * 5 // 100))
        spread("cancel_job", max(1, njobs // 12))
        spread("requeue_job", max(1, njobs // 20))
        spread("kill_worker_main", max(2, int(d / 12)))
        spread("kill_worker_whole", max(2, int(d / 12)))
        spread("kill_pool", max(3, int(d / 6)))
        spread("kill_scheduler", max(2, int(d / 15)), hi=0.9)
        # one Redis restart mid-run, more for long runs
        nredis = max(1, int(d // 300))
        for k in range(nredis):
            self.at(d * (k + 0.5) / nredis + rng.uniform(-0.05, 0.05) * d, "redis_restart")
        ncuts = max(1, int(d / 20))
        for k in range(ncuts):
            self.at(rng.uniform(0.1 * d, 0.85 * d), "cut", k == 0)
        self.at(d, "end")

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

    # --- operations -------------------------------------------------------------------------------
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

    def _restart_later(self, d: Daemon, lo: float, hi: float) -> None:
        self.at(self.now() - self.t_chaos + self.op_rng.uniform(lo, hi), "restart", d)

    def supervise(self, delay: tuple[float, float] = (0.5, 2.0)) -> None:
        """What a service manager does: a worker or scheduler that exited without being killed
        by the chaos is restarted (after ``delay``); each such exit is counted and reported."""
        for d in self.daemons:
            if d.popen is None or d.up or d.killed:
                continue
            reason = d.exit_reason()
            self.unexpected.append((d.name, round(self.now(), 2), reason))
            self.note(f"UNEXPECTED EXIT of {d.name} (life {d.lives}), {reason}")
            d.killed = True
            if delay[1] > 0:
                self._restart_later(d, *delay)
            else:
                self.op_restart(d)

    def op_restart(self, d: Daemon) -> None:
        if not d.up:
            d.start()
            self.note(f"restarted {d.name} (life {d.lives})")

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

    # --- settling -------------------------------------------------------------------------------
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

    # --- the record ------------------------------------------------------------------------------
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

    # --- the invariants ----------------------------------------------------------------------------
    def inv(self, key: str, title: str) -> Invariant:
        if key not in self.invariants:
            self.invariants[key] = Invariant(title)
        return self.invariants[key]

    def check_all(self) -> None:
        i1 = self.inv("1", "one end state per task/instance, agreeing with its history; jobs final")
        i2a = self.inv("2", "canceled before it started: its command never ran")
        i2b = self.inv("2b", "no command started without its attempt recorded Running")
        i3a = self.inv("3", "no two attempts both record: each ends once, Finished at most once")
        i3b = self.inv("3b", "a Finished result is its recorded attempt's (markers, output, value)")
        i4 = self.inv("4", "no task process alive once settled, nothing of the run after stop")
        i5 = self.inv("5", "per-state counts (job c:<State>, sweep i:<State>) equal a recount")
        i6 = self.inv("6", "job and sweep-master states agree with their tasks/instances")
        events = self.events.task_events
        job_events = self.events.job_events
        marks = self.read_marks()
        totals = Counter()
        attempts = Counter()

        # units: (id, record or None, implied state, spec) for plain tasks and instances
        units = []
        masters = []
        for j in self.submitted:
            for t, tp in enumerate(j.tasks, 1):
                tid = f"{j.job_id}.{t}"
                rec = self.task_recs.get(tid) or {}
                if tp.sweep:
                    masters.append((j, t, tp, tid, rec))
                    for i in range(1, tp.units + 1):
                        iid = f"{tid}.{i}"
                        irec = self.inst_recs.get(iid) or {}
                        if irec:
                            state = irec.get("state")
                        elif "cut" in rec and i > int(rec["cut"]):
                            state = "Canceled"
                        else:
                            state = rec.get("state") if rec.get("state") in PRE_QUEUE else "Queued"
                        units.append((iid, irec or None, state, tp, i))
                else:
                    units.append((tid, rec or None, rec.get("state"), tp, None))

        for uid, rec, state, tp, inst in units:
            ev = events.get(uid, [])
            mk = marks.get(uid, {"starts": Counter(), "ends": Counter(), "values": {}})
            totals[state] += 1
            reruns = int((rec or {}).get("auto_requeue_count") or 0)
            if reruns:
                self.reruns.append((reruns, uid, (rec or {}).get("last_error", ""),
                                    (rec or {}).get("error", "")))
            if state == "Failed":
                self.fail_reasons[failure_kind((rec or {}).get("error", ""))] += 1
            # 1: one end state, agreeing with the history
            i1.checked += 1
            if state not in TASK_END:
                i1.fail(f"{uid} is {state}")
            if rec is None and uid.count(".") == 1:
                i1.fail(f"{uid} has no record")
            if rec is not None and (not ev or ev[-1] != state):
                i1.fail(f"{uid} is {state} but its last event is {ev[-1] if ev else None}")
            if rec is None and ev:
                i1.fail(f"{uid} has no record but events {ev}")
            # history: attempts started (Running) and ended (out of Running/Canceling)
            runs = endings = finished = 0
            prev = None
            for st in ev:
                if st == "Running":
                    runs += 1
                if prev in ("Running", "Canceling", "Finishing") and st in ("Finished", "Failed", "Queued"):
                    endings += 1
                if st == "Finished":
                    finished += 1
                prev = st
            attempts["Running (attempts started)"] += runs
            started_cmds = len(mk["starts"])
            attempts["commands started (marker files)"] += started_cmds
            attempts["commands ended (marker files)"] += len(mk["ends"])
            # 2: canceled before it ever started: never ran its command
            if state == "Canceled" and runs == 0:
                i2a.checked += 1
                if started_cmds:
                    i2a.fail(f"{uid} was canceled before it started but ran {sorted(mk['starts'])}")
            i2b.checked += 1
            if started_cmds > runs:
                i2b.fail(f"{uid}: {started_cmds} command(s) started, {runs} attempt(s) Running "
                         f"in its history {ev}")
            # 3: each attempt ends once; Finished at most once
            i3a.checked += 1
            if finished > 1:
                i3a.fail(f"{uid} Finished {finished} times: {ev}")
            if endings != runs:
                i3a.fail(f"{uid}: {runs} attempt(s) started, {endings} ended: {ev}")
            if state == "Finished":
                i3b.checked += 1
                cid = (rec or {}).get("celery_id", "")
                out = ((rec or {}).get("output") or "").strip()
                if not cid:
                    i3b.fail(f"{uid} Finished without an attempt id")
                elif mk["starts"][cid] != 1 or mk["ends"][cid] != 1:
                    i3b.fail(f"{uid} Finished by {cid}: start x{mk['starts'][cid]}, end "
                             f"x{mk['ends'][cid]} in its marker file")
                if out != cid:
                    i3b.fail(f"{uid} Finished by {cid} but its output is {out[:80]!r}")
                if inst is not None and cid:
                    start, _end, step = tp.sweep
                    want = start + (inst - 1) * step
                    got = mk["values"].get(cid)
                    if got is None or int(got) != want:
                        i3b.fail(f"{uid} ran with sweep value {got}, expected {want}")

        # 1: nothing left queued, waiting or on a worker
        i1.checked += 1
        if self.queue:
            i1.fail(f"left in the queue: {self.queue[:10]}")
        for w, tids in self.on_workers.items():
            if tids:
                i1.fail(f"left on worker {w}: {tids[:10]}")
        for j, ts in self.waiting.items():
            i1.fail(f"job {j} still has tasks waiting on dependencies: {ts}")
        for m, (active, redo) in self.master_sets.items():
            if active or redo:
                i1.fail(f"sweep {m}: {active} instance(s) still active, {redo} in its redo list")

        # masters: counts and state
        for j, t, tp, mid, rec in masters:
            i1.checked += 1
            mstate = rec.get("state")
            mev = events.get(mid, [])
            if mstate not in TASK_END:
                i1.fail(f"sweep master {mid} is {mstate}")
            if not mev or mev[-1] != mstate:
                i1.fail(f"sweep master {mid} is {mstate} but its last event is {mev[-1] if mev else None}")
            recount = Counter()
            for i in range(1, tp.units + 1):
                iid = f"{mid}.{i}"
                irec = self.inst_recs.get(iid) or {}
                if irec:
                    recount[irec.get("state")] += 1
                elif "cut" in rec and i > int(rec["cut"]):
                    recount["Canceled"] += 1
                else:
                    recount[mstate if mstate in PRE_QUEUE else "Queued"] += 1
            # An instance gets a record only when dispatched or canceled ahead of its turn
            # ('pre'); the others are Queued (or the master's state before it is queued), unless
            # a cancel of the master cut them off: then they are counted in i:Canceled already
            # (cancel_master, records.instance_counts).  So i:<State> plus those implicit ones
            # must equal a recount over records, with record-less instances by the same rule.
            expected = Counter({s: int(rec.get(f"i:{s}") or 0) for s in TASK_STATES})
            if "cut" not in rec:
                implicit = tp.units - int(rec.get("next") or 0) - int(rec.get("pre") or 0)
                expected[mstate if mstate in PRE_QUEUE else "Queued"] += implicit
            i5.checked += 1
            for s in TASK_STATES:
                if expected[s] != recount[s]:
                    i5.fail(f"sweep {mid}: i:{s} (+ not materialized) = {expected[s]}, "
                            f"recount {recount[s]}")
            # 6: the master's state follows its instances
            i6.checked += 1
            want = self.expected_end(mev, recount)
            if want and mstate != want:
                i6.fail(f"sweep master {mid} is {mstate}, its instances say {want} "
                        f"({dict(recount)}; history {mev[-8:]})")

        # jobs: final, counts, state
        for j in self.submitted:
            jid = j.job_id
            rec = self.job_recs.get(jid) or {}
            jstate = rec.get("state")
            jev = job_events.get(str(jid), [])
            totals["jobs " + str(jstate)] += 1
            i1.checked += 1
            if jstate not in JOB_END:
                i1.fail(f"job {jid} is {jstate}")
            if not jev or jev[-1] != jstate:
                i1.fail(f"job {jid} is {jstate} but its last event is {jev[-1] if jev else None}")
            if self.settled_states.get(jid) != jstate:
                i1.fail(f"job {jid} was {self.settled_states.get(jid)} when settled, "
                        f"{jstate} at the end")
            recount = Counter()
            for t in range(1, len(j.tasks) + 1):
                recount[(self.task_recs.get(f"{jid}.{t}") or {}).get("state")] += 1
            i5.checked += 1
            if int(rec.get("ntasks") or 0) != len(j.tasks):
                i5.fail(f"job {jid}: ntasks {rec.get('ntasks')}, {len(j.tasks)} added")
            for s in TASK_STATES:
                if int(rec.get(f"c:{s}") or 0) != recount[s]:
                    i5.fail(f"job {jid}: c:{s} = {rec.get(f'c:{s}')}, recount {recount[s]}")
            i6.checked += 1
            want = self.expected_end(jev, recount)
            if want and jstate != want:
                i6.fail(f"job {jid} is {jstate}, its tasks say {want} ({dict(recount)}; "
                        f"history {jev[-8:]})")

        # 4: processes
        i4.checked = 2
        for line in self.left_after_settle:
            i4.fail(f"alive after settling: {line}")
        for line in self.left_after_stop:
            i4.fail(f"alive after the cluster stopped: {line}")

        self.totals = totals
        self.attempts = attempts
        self.figures["units"] = len(units)
        self.figures["sweeps"] = len(masters)
        self.figures["events read"] = self.events.count

    @staticmethod
    def expected_end(history: list[str], recount: Counter) -> str | None:
        """What a job (sweep master) must end as, by job_refresh (master_refresh): Canceled if
        a cancel began in its last run (the events after its last Queued), else Failed if any
        task (instance) Failed, else Finished.  None while something has not ended."""
        if any(recount[s] for s in TASK_STATES if s not in TASK_END):
            return None
        last_queued = max((k for k, s in enumerate(history) if s == "Queued"), default=-1)
        if "Canceling" in history[last_queued + 1:]:
            return "Canceled"
        return "Failed" if recount["Failed"] else "Finished"

    def after_teardown(self) -> None:
        left = self.marked(attempts_only=False)
        for line in self.describe(left):
            self.invariants["4"].fail(f"alive after the network teardown: {line}")
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass

    # --- the report ---------------------------------------------------------------------------------
    @property
    def violations(self) -> int:
        return sum(len(i.violations) for i in self.invariants.values())

    def report(self) -> str:
        cfg = self.cfg
        L = []
        nplain = sum(1 for j in self.submitted for t in j.tasks if not t.sweep)
        ninst = sum(t.units for j in self.submitted for t in j.tasks if t.sweep)
        L.append(f"hpcq chaos, seed {cfg.seed}: {self.figures.get('units')} tasks "
                 f"({nplain} plain tasks + {ninst} instances of {self.figures.get('sweeps')} sweeps) "
                 f"in {len(self.submitted)} jobs; {cfg.workers} workers x {cfg.concurrency} "
                 f"(network namespaces), {cfg.schedulers} schedulers, Redis with AOF")
        L.append(f"chaos phase {self.figures.get('chaos phase (s)')} s, settled in "
                 f"{self.figures.get('settle (s)')} s, {self.figures.get('events read')} events "
                 f"read; total {self.now():.1f} s; logs: {self.logdir}")
        L.append("")
        L.append(f"{'operation':<28}{'done':>7}{'refused':>9}{'skipped':>9}{'errors':>8}")
        order = ["submit job", "task cancel", "task requeue", "job cancel", "job requeue",
                 "kill -9 worker main", "kill -9 whole worker", "kill -9 pool process",
                 "kill -9 scheduler", "Redis restart", "link cut"]
        for name in order + sorted(set(self.ops) - set(order)):
            c = self.ops.get(name, Counter())
            L.append(f"{name:<28}{c['ok']:>7}{c['refused']:>9}{c['skipped']:>9}"
                     f"{c['error'] + c['Redis unavailable']:>8}")
        restarts = {d.name.split("@")[0]: d.lives - 1 for d in self.daemons}
        L.append(f"{'exits not caused by chaos':<28}{len(self.unexpected):>7}   (restarted as a "
                 "service manager would)")
        for name, t, reason in self.unexpected[:10]:
            L.append(f"    t={t:.1f} {name.split('@')[0]}: {reason}")
        L.append(f"{'restarts under the same name':<28}{sum(restarts.values()):>7}   "
                 + ", ".join(f"{k} {v}" for k, v in restarts.items()))
        L.append("")
        t = self.totals
        L.append("end states: " + ", ".join(f"{s} {t[s]}" for s in ("Finished", "Failed", "Canceled"))
                 + "; jobs: " + ", ".join(f"{s} {t['jobs ' + s]}" for s in ("Finished", "Failed", "Canceled")))
        L.append("attempts: " + ", ".join(f"{k} {v}" for k, v in self.attempts.items()))
        L.append("refused operations (nothing changed): " + (", ".join(
            f"{k} {v}" for k, v in self.refusals.most_common()) or "none"))
        top = sorted(self.reruns, reverse=True)[:3]
        L.append(f"automatic reruns after system errors: {sum(r[0] for r in self.reruns)} in "
                 f"{len(self.reruns)} tasks; most: " + ("; ".join(
                     f"{uid} x{n} (last: {last[:70]})" for n, uid, last, _ in top) or "none"))
        L.append("why tasks ended Failed: " + (", ".join(
            f"{k} {v}" for k, v in self.fail_reasons.most_common()) or "none"))
        L.append("")
        L.append(f"{'invariant':<75}{'checked':>8}{'violations':>11}")
        for key in ("1", "2", "2b", "3", "3b", "4", "5", "6"):
            inv = self.invariants[key]
            L.append(f"{key:<3}{inv.title:<72}{inv.checked:>8}{len(inv.violations):>11}")
        for key, inv in self.invariants.items():
            for v in inv.violations[:15]:
                L.append(f"  ! [{key}] {v}")
            if len(inv.violations) > 15:
                L.append(f"  ! [{key}] ... {len(inv.violations) - 15} more")
        L.append("")
        L.append("ALL INVARIANTS HOLD" if not self.violations
                 else f"{self.violations} VIOLATION(S); logs and marker files kept in {self.workdir}")
        return "\n".join(L)

    def cleanup(self) -> None:
        if not self.violations and not self.cfg.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run_chaos(cfg: Config) -> Chaos:
    """Run one chaos round and check every invariant; the returned object has ``violations``,
    ``invariants`` and ``report()``."""
    return Chaos(cfg).run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=300, help="tasks and sweep instances in all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--schedulers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds of chaos (default: max(20, 0.06 s per task))")
    ap.add_argument("--settle-timeout", type=float, default=None)
    ap.add_argument("--keep", action="store_true", help="keep logs and marker files")
    ap.add_argument("--quiet", action="store_true", help="no running commentary")
    a = ap.parse_args(argv)
    cfg = Config(tasks=a.tasks, seed=a.seed, workers=a.workers, schedulers=a.schedulers,
                 concurrency=a.concurrency, duration=a.duration, settle_timeout=a.settle_timeout,
                 keep=a.keep, quiet=a.quiet)
    chaos = Chaos(cfg)
    try:
        chaos.run()
    finally:
        if chaos.invariants:
            print(chaos.report(), flush=True)
    chaos.cleanup()
    return 1 if chaos.violations else 0


if __name__ == "__main__":
    sys.exit(main())
