"""Time and Redis memory to submit a parametric sweep of 1,000,000 instances vs one of 10.

No workers, no scheduler: a sweep is one record, so submitting it should cost the same at any
size.  For each size, in a private redis-server: create a job, add ``echo *`` with the sweep,
submit; report the wall time of each step, the ``INFO memory`` used_memory delta across the
three steps, ``MEMORY USAGE`` of the task key and the number of keys the job added.

    /tmp/hv/bin/python -m bench.submit_sweep [--sizes 10,1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import Bench, machine_note


def used_memory(r) -> int:
    return int(r.info("memory")["used_memory"])


def one(s, r, size: int) -> dict:
    keys0 = r.dbsize()
    mem0 = used_memory(r)
    t0 = time.perf_counter()
    job = s.create_job(name=f"sweep-{size}")
    t1 = time.perf_counter()
    task = job.add_task("echo *", sweep=(1, size, 1))
    t2 = time.perf_counter()
    s.submit_job(job)
    t3 = time.perf_counter()
    mem1 = used_memory(r)
    task_key = f"hpcq:task:{task.id}"
    job.refresh()
    return {
        "size": size, "create": t1 - t0, "add": t2 - t1, "submit": t3 - t2, "total": t3 - t0,
        "mem_delta": mem1 - mem0,
        "task_key_bytes": r.memory_usage(task_key, samples=0),
        "job_key_bytes": r.memory_usage(f"hpcq:job:{job.id}", samples=0),
        "keys_added": r.dbsize() - keys0,
        "state": job.state, "instances": s.get_task(task.id).instances,
        "job": job.id, "task": task.id,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,1000000", help="comma-separated sweep sizes")
    ap.add_argument("--repeat", type=int, default=5, help="submissions per size (median reported)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print("bench/submit_sweep.py: submit a parametric sweep 'echo *' (no workers)")
    print(machine_note())
    from scheduler import Scheduler
    with Bench("submit_sweep") as b:
        s = Scheduler.connect(b.url)
        r = b.r
        # warm up: load the Lua scripts, first connection
        one(s, r, 1)
        rows = []
        for size in sizes:
            runs = [one(s, r, size) for _ in range(args.repeat)]
            rows.append(runs)
        print(f"{'instances':>10} {'create':>9} {'add_task':>9} {'submit':>9} {'total':>9} "
              f"{'used_memory delta':>18} {'MEMORY USAGE task':>18} {'MEMORY USAGE job':>17} "
              f"{'keys added':>10}  state")
        for runs in rows:
            med = lambda k: statistics.median(x[k] for x in runs)  # noqa: E731, B023  (used in this iteration)
            last = runs[-1]
            print(f"{last['size']:>10,} {med('create')*1e3:>7.2f}ms {med('add')*1e3:>7.2f}ms "
                  f"{med('submit')*1e3:>7.2f}ms {med('total')*1e3:>7.2f}ms "
                  f"{int(med('mem_delta')):>16,} B {last['task_key_bytes']:>16,} B "
                  f"{last['job_key_bytes']:>15,} B {last['keys_added']:>10}  {last['state']} "
                  f"({last['instances']:,} instances)")
        print(f"(times and used_memory delta: median of {args.repeat} submissions per size; "
              f"used_memory delta includes the job record, the queue entry and the event stream entries)")
        if len(rows) >= 2:
            a, z = rows[0], rows[-1]
            ta = statistics.median(x["total"] for x in a)
            tz = statistics.median(x["total"] for x in z)
            ma = statistics.median(x["mem_delta"] for x in a)
            mz = statistics.median(x["mem_delta"] for x in z)
            print(f"ratio {z[-1]['size']:,} vs {a[-1]['size']:,} instances: time x{tz / ta:.2f}, "
                  f"used_memory delta x{mz / ma:.2f}, task key {z[-1]['task_key_bytes']} B vs "
                  f"{a[-1]['task_key_bytes']} B")


if __name__ == "__main__":
    main()
