"""The dispatch rate as the queue grows: D plain tasks queued (one D-task job), then units handed
out by dispatch.lua to one registered worker of ample slots, 100 a call, timed (the script as
the scheduler calls it, nothing else; the rate is 100 over the median call); the same for
each D.  A queue is a sorted set read in
priority order a chunk at a time, so the rate should not depend on D.

    python -m bench.queue_depth [--depths 1000,100000,1000000] [--units 400]

Also printed: how long the D-task job took to submit and Redis' used_memory per queued task."""

from __future__ import annotations

import argparse
import time

from bench.common import Bench
from scheduler.core import keys

WORKER = "depth@bench"


def measure(b: Bench, depth: int, units: int) -> dict:
    from scheduler import Scheduler
    b.r.flushall(asynchronous=True)       # (a synchronous one of 1,000,000 tasks blocks for seconds)
    s = Scheduler.connect(b.url)
    mem0 = int(b.r.info("memory")["used_memory"])
    t0 = time.perf_counter()
    s.submit([{"command": "true"}] * depth, name=f"depth-{depth}")
    submit = time.perf_counter() - t0
    mem1 = int(b.r.info("memory")["used_memory"])
    s.store.heartbeat(WORKER, units + 100, keys.worker_queue(WORKER), {"pid": 0}, [], 3600, 3)
    s.store.dispatch_to([WORKER], 100)          # warm-up: the script cached, the chunk sizes settled
    got, calls = 0, []
    while got < units:
        t = time.perf_counter()
        n = len(s.store.dispatch_to([WORKER], 100))
        calls.append(time.perf_counter() - t)
        got += n
        if not n:
            break
    med = sorted(calls)[len(calls) // 2]
    return {"depth": depth, "rate": 100 / med if med else 0.0, "units": got, "submit": submit,
            "per_task_bytes": (mem1 - mem0) / depth, "call_ms": 1e3 * sorted(calls)[len(calls) // 2]}


def run(depths: list[int], units: int) -> list[dict]:
    rows = []
    with Bench("queue-depth", quiet_logs=True) as b:
        for d in depths:
            row = measure(b, d, units)
            rows.append(row)
            print(f"{d} queued: {row['rate']:.0f} units/s handed out ({row['units']} in calls of 100, "
                  f"median call {row['call_ms']:.2f} ms); the {d}-task job submitted in "
                  f"{row['submit']:.1f} s, {row['per_task_bytes']:.0f} B of Redis per queued task",
                  flush=True)
        b.r.flushall(asynchronous=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", default="1000,100000,1000000")
    ap.add_argument("--units", type=int, default=400, help="units handed out at each depth (<= half the smallest)")
    args = ap.parse_args()
    run([int(x) for x in args.depths.split(",")], args.units)


if __name__ == "__main__":
    main()
