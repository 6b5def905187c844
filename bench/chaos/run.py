"""One chaos run from start to end: ``Chaos`` holds the run's state (plan, cluster, counters,
record, invariants) in one object, its parts (timeline, cluster, driving, record, checks,
report) each in a module of its own, and ``run()`` puts them in order: plan, cluster up, chaos,
settle, stop, read back, check."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict

import redis

from bench.chaos.checks import Checks, Invariant
from bench.chaos.cluster import Cluster, Daemon
from bench.chaos.config import CLUSTER_ENV, MARKER_VAR, ROOT, Config
from bench.chaos.drive import Drive
from bench.chaos.events import EventTail
from bench.chaos.plan import JobPlan, Timeline, plan_jobs
from bench.chaos.record import Record
from bench.chaos.report import Report
from scheduler import Scheduler
from tests.support.netns import Network, netns_available
from tests.support.redis_server import RedisServer


class Chaos(Timeline, Cluster, Drive, Record, Checks, Report):
    """One run.  Its state is one object because every part reads it (the plan, the daemons,
    the counters, the record); the parts are the mixins, each in its own module, and this class
    adds only what they share: the clock, the notes, the order of the run and the cleanup."""

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

    # --- the whole run ---------------------------------------------------------------------------
    def run(self) -> Chaos:
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

    def cleanup(self) -> None:
        if not self.violations and not self.cfg.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def run_chaos(cfg: Config) -> Chaos:
    """Run one chaos round and check every invariant; the returned object has ``violations``,
    ``invariants`` and ``report()``."""
    return Chaos(cfg).run()
