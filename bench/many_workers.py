"""Hundreds of workers on one Redis, simulated: the real scheduler dispatches a deep queue to W
workers of 4 slots that speak the real protocol against the real Redis - each heartbeats
(heartbeat.lua, with the attempts it holds), takes its attempts from its own Celery queue (the
kombu message the scheduler sent), starts them (start.lua), runs ``true`` and records the end
(finish.lua) - but all W live in this one process: one thread beats for all of them, one BRPOPs
all their queues, a pool of threads runs the attempts.  What it measures, for each W: the
dispatch rate, the scheduler's CPU per dispatched task, Redis' CPU per task and the cost of one
heartbeat (the call as the client sees it, and Redis' CPU spent on heartbeats per second).

    python -m bench.many_workers [--workers 50,100,200,500] [--queued 100000] [--seconds 10] [--rate 150]

The attempts are started at a fixed rate (150 a second, below what the simulator manages with
500 workers on 2 cores), the same for every W, so the per-dispatch costs compare like with
like: none may grow with W."""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import redis

from bench.common import Bench
from scheduler.core import keys
from scheduler.core.store import Store

SLOTS = 4


class SimulatedWorkers:
    """W workers' protocol in threads: heartbeat, consume, start, run ``true``, finish."""

    def __init__(self, url: str, names: list[str], interval: float = 2.0, runners: int = 8,
                 rate: float = 0.0):
        self.url, self.names, self.interval = url, names, interval
        #: at most this many attempts started a second (0: as fast as the runners go)
        self.rate, self.next_start = rate, 0.0
        self.store = Store(url)
        self.held: dict[str, dict[str, str]] = {n: {} for n in names}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.done = 0
        self.beats: list[float] = []
        self.pool = ThreadPoolExecutor(runners)
        self.work: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.beat, self.consume)]

    def __enter__(self):
        self.beat_all()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)
        self.pool.shutdown(wait=True)
        for n in self.names:
            self.store.unregister_worker(n)

    def beat_all(self) -> None:
        for n in self.names:
            with self.lock:
                held = list(self.held[n].items())
            t0 = time.perf_counter()
            self.store.heartbeat(n, SLOTS, keys.worker_queue(n), {"pid": os.getpid(), "sim": True},
                                 held, 30.0, 3)
            self.beats.append(time.perf_counter() - t0)

    def beat(self) -> None:
        while not self.stop.wait(self.interval):
            self.beat_all()

    def consume(self) -> None:
        r = redis.Redis.from_url(self.url, decode_responses=True)
        queues = [keys.worker_queue(n) for n in self.names]
        byq = dict(zip(queues, self.names))
        while not self.stop.is_set():
            got = r.brpop(queues, timeout=1)
            if not got:
                continue
            msg = json.loads(got[1])
            args = json.loads(base64.b64decode(msg["body"]))[0]
            self.pool.submit(self.run, byq[got[0]], *args)

    def pace(self) -> None:
        if not self.rate:
            return
        with self.lock:
            at = max(time.monotonic(), self.next_start)
            self.next_start = at + 1 / self.rate
        time.sleep(max(0.0, at - time.monotonic()))

    def run(self, worker: str, task_id: str, token: str) -> None:
        with self.lock:
            self.held[worker][task_id] = token
        self.pace()
        try:
            ok, _, _ = self.store.start(task_id, token, threading.get_native_id())
            if ok:
                code = subprocess.run(["true"]).returncode
                self.store.finish(task_id, token, "exit", code, "", retry_cap=3)
                with self.lock:
                    self.done += 1
        finally:
            with self.lock:
                self.held[worker].pop(task_id, None)


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def measure(b: Bench, workers: int, seconds: float, sched: psutil.Process, red: psutil.Process,
            rate: float) -> dict:
    names = [f"sim{workers}-{k}@bench" for k in range(workers)]
    with SimulatedWorkers(b.url, names, rate=rate) as sim:
        time.sleep(2)                                   # every worker busy: the steady state
        d0, s0, r0 = sim.done, cpu(sched), cpu(red)
        b.r.config_resetstat()
        t0 = time.perf_counter()
        time.sleep(seconds)
        el = time.perf_counter() - t0
        d1, s1, r1 = sim.done, cpu(sched), cpu(red)
        beats = sorted(sim.beats[len(names):]) or sorted(sim.beats)
    n = max(d1 - d0, 1)
    return {"workers": workers, "rate": (d1 - d0) / el, "sched_ms": (s1 - s0) / n * 1e3,
            "redis_ms": (r1 - r0) / n * 1e3, "beat_ms": beats[len(beats) // 2] * 1e3,
            "beats_per_s": workers / sim.interval}


def heartbeat_cost(workers: int, n: int = 2000) -> float:
    """Redis server seconds per heartbeat.lua call (W workers beating in turn, each listing 4
    attempts it holds), from ``INFO commandstats`` on a Redis of its own where nothing else
    runs."""
    with Bench("heartbeats", quiet_logs=True) as b:
        st = Store(b.url)
        names = [f"beat{k}@bench" for k in range(workers)]
        held = [(f"9999.{k}", "1") for k in range(1, SLOTS + 1)]

        def beat(w):
            st.heartbeat(w, SLOTS, keys.worker_queue(w), {"pid": 0}, held, 3600, 3)

        for w in names:
            beat(w)
        b.r.config_resetstat()
        for k in range(n):
            beat(names[k % workers])
        stats = b.r.info("commandstats").get("cmdstat_evalsha", {})
        st.redis.close()
        return stats.get("usec", 0) / 1e6 / max(stats.get("calls", 1), 1)


def run(counts: list[int], queued: int, seconds: float, rate: float = 150.0) -> list[dict]:
    from scheduler import Scheduler
    rows = []
    with Bench("many-workers", quiet_logs=True) as b:
        b.start_scheduler()
        s = Scheduler.connect(b.url)
        sched, red = psutil.Process(b.procs["scheduler"].pid), psutil.Process(b.redis_proc.pid)
        for w in counts:
            short = queued - b.r.zcard(keys.QUEUE)
            if short > 0:
                s.submit([{"command": "true"}] * short, name=f"queue-{w}")
            row = measure(b, w, seconds, sched, red, rate)
            row["queued"] = b.r.zcard(keys.QUEUE)
            row["beat_redis_us"] = heartbeat_cost(w) * 1e6
            rows.append(row)
            print(f"{w} workers x {SLOTS}: {row['rate']:.0f} tasks/s dispatched and run, scheduler "
                  f"{row['sched_ms']:.3f} ms CPU per dispatch, redis {row['redis_ms']:.3f} ms CPU "
                  f"per task, heartbeat call {row['beat_ms']:.2f} ms ({row['beats_per_s']:.0f}/s; "
                  f"{row['beat_redis_us']:.0f} us of Redis server time each), "
                  f"{row['queued']} still queued", flush=True)
        for j in s.store.job_ids():
            try:
                s.cancel_job(j, wait=False)
            except Exception:
                pass
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="50,100,200,500")
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=150.0,
                    help="attempts started a second, the same for every W (0: no limit)")
    args = ap.parse_args()
    run([int(x) for x in args.workers.split(",")], args.queued, args.seconds, args.rate)


if __name__ == "__main__":
    main()
