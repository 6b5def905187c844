"""Tasks per second: N ``true`` tasks on 2 workers of concurrency 2, end to end (from the
submit call to the job Finished), as N separate tasks of one job and as one N-instance sweep;
then bare Celery running the same command on 2 workers x 2 against the same Redis.

    /tmp/hv/bin/python -m bench.throughput [--n 1000] [--workers 2] [--concurrency 2] [--repeat 1]

The per-attempt breakdown comes from the task records (dispatch_time, start_time, end_time,
all Redis TIME): where an attempt spends its time, and how busy the slots were."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.common import Bench, machine_note
from tests.support.wait import wait_until


def breakdown(s, tids, elapsed: float, slots: int) -> str:
    recs = s.store.tasks(tids)
    d2s = [float(r["start_time"]) - float(r["dispatch_time"]) for r in recs]
    s2e = [float(r["end_time"]) - float(r["start_time"]) for r in recs]
    busy = sum(a + b for a, b in zip(d2s, s2e))
    first = min(float(r["dispatch_time"]) for r in recs)
    last = max(float(r["end_time"]) for r in recs)
    return (f"    per attempt: dispatch->start mean {statistics.fmean(d2s)*1e3:.1f} ms, "
            f"start->end mean {statistics.fmean(s2e)*1e3:.1f} ms; first dispatch -> last end "
            f"{last - first:.2f} s; slots busy (dispatch..end) {busy / (slots * elapsed) * 100:.0f}% "
            f"of {slots} slots x elapsed")


def cpu_snapshot(b: Bench, workers: list[str]) -> dict[str, float]:
    """CPU seconds (user+system) so far, by component.  ``commands`` are the task commands,
    reaped by the pool processes (their children times)."""
    import os
    import psutil

    def own(p):
        t = p.cpu_times()
        return t.user + t.system, t.children_user + t.children_system

    snap = {"redis-server": 0.0, "scheduler": 0.0, "worker main": 0.0, "pool processes": 0.0,
            "commands": 0.0, "bench client": 0.0}
    try:
        snap["redis-server"] = own(psutil.Process(b.redis_proc.pid))[0]
        if "scheduler" in b.procs:
            sched = psutil.Process(b.procs["scheduler"].pid)
            snap["scheduler"] = sum(own(p)[0] for p in [sched, *sched.children(recursive=True)])
        for name in workers:
            main = psutil.Process(b.procs[name].pid)
            snap["worker main"] += own(main)[0]
            for p in main.children():
                mine, kids = own(p)
                snap["pool processes"] += mine
                snap["commands"] += kids
        snap["bench client"] = own(psutil.Process(os.getpid()))[0]
    except psutil.Error:
        pass
    return snap


def cpu_report(before: dict, after: dict, n: int, elapsed: float) -> str:
    parts = [f"{k} {(after[k] - before[k]) / n * 1e3:.2f}" for k in before]
    total = sum(after[k] - before[k] for k in before)
    return (f"    CPU ms per task: {', '.join(parts)}; total {total / n * 1e3:.2f} ms/task = "
            f"{total / elapsed:.2f} CPUs busy of {__import__('os').cpu_count()}")


def redis_report(r, n: int) -> str:
    """Redis commands per task since the last CONFIG RESETSTAT: calls and server time."""
    stats = r.info("commandstats")
    rows = sorted(((k.replace("cmdstat_", ""), v["calls"], v["usec"]) for k, v in stats.items()),
                  key=lambda x: -x[2])
    total_calls = sum(c for _, c, _ in rows)
    total_us = sum(u for _, _, u in rows)
    top = ", ".join(f"{name} {calls / n:.1f}x {usec / n:.0f}us" for name, calls, usec in rows[:6])
    return (f"    Redis per task: {total_calls / n:.1f} commands, {total_us / n:.0f} us server time "
            f"(top: {top})")


def run_tasks(s, n: int, slots: int) -> tuple[float, str]:
    job = s.create_job(name=f"throughput-{n}-tasks")
    t0 = time.perf_counter()
    for _ in range(n):
        job.add_task("true")
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.submit_job(job)
    state = job.wait(timeout=1800)
    elapsed = time.perf_counter() - t0
    fin = int(job.refresh().record.get("c:Finished", 0))
    if state != "Finished" or fin != n:
        print(f"  ! job {job.id} ended {state} with {fin}/{n} tasks Finished", file=sys.stderr)
    tids = [f"{job.id}.{t}" for t in range(1, n + 1)]
    detail = (f"    (add_task x{n} before submit, not timed above: {t_add:.2f} s)\n"
              + breakdown(s, tids, elapsed, slots))
    return elapsed, detail


def run_sweep(s, n: int, slots: int) -> tuple[float, str]:
    job = s.create_job(name=f"throughput-sweep-{n}")
    task = job.add_task("true", sweep=(1, n, 1))
    t0 = time.perf_counter()
    s.submit_job(job)
    state = job.wait(timeout=1800)
    elapsed = time.perf_counter() - t0
    m = s.store.task(task.id)
    fin = int(m.get("i:Finished", 0))
    if state != "Finished" or fin != n:
        print(f"  ! job {job.id} ended {state} with {fin}/{n} instances Finished", file=sys.stderr)
    tids = [f"{task.id}.{i}" for i in range(1, n + 1)]
    return elapsed, breakdown(s, tids, elapsed, slots)


def run_bare(b: Bench, n: int, workers: int, concurrency: int) -> float:
    import os
    env = {"BARE_CELERY_REDIS_URL": b.url}
    os.environ["BARE_CELERY_REDIS_URL"] = b.url
    from bench import bare_celery
    names = [f"bare{k}@bench" for k in range(1, workers + 1)]
    for name in names:
        b.spawn(name, [sys.executable, *bare_celery.worker_argv(name, concurrency)], env=env)
    for name in names:
        wait_until(lambda: "ready" in b.log(name), 90, f"bare worker {name}", 0.1)  # noqa: B023  (called now)
    r = b.r
    r.delete(bare_celery.COUNTER)
    # a client app for this Redis (bare_celery.app is bound to the URL of the first import: a
    # second run in one process, as --full's 10,000-task rows, would publish to a stopped Redis)
    from scheduler.transport import make_celery
    client = make_celery(b.url)

    def send(producer=None):
        client.send_task(bare_celery.RUN, ("true",), queue=bare_celery.QUEUE, producer=producer)

    # warm-up: every pool process has run one task and opened its Redis connection
    for _ in range(workers * concurrency):
        send()
    wait_until(lambda: int(r.get(bare_celery.COUNTER) or 0) >= workers * concurrency, 60, "bare warm-up")
    r.delete(bare_celery.COUNTER)
    c0 = cpu_snapshot(b, names)
    r.config_resetstat()
    t0 = time.perf_counter()
    with client.producer_or_acquire() as producer:
        for _ in range(n):
            send(producer)
    wait_until(lambda: int(r.get(bare_celery.COUNTER) or 0) >= n, 1800, "bare Celery tasks", 0.01)
    elapsed = time.perf_counter() - t0
    c1 = cpu_snapshot(b, names)
    print(f"bare Celery, {n} tasks:          {elapsed:7.2f} s  {n / elapsed:7.1f} tasks/s")
    print(cpu_report(c0, c1, n, elapsed))
    print(redis_report(r, n))
    for name in names:
        b.stop(name)
    client.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-bare", action="store_true")
    args = ap.parse_args()
    n, slots = args.n, args.workers * args.concurrency
    print(f"bench/throughput.py: {n} x 'true' on {args.workers} workers x concurrency {args.concurrency}")
    print(machine_note())
    from scheduler import Scheduler
    with Bench("throughput") as b:
        print(f"redis {b.url}")
        b.start_scheduler()
        for k in range(1, args.workers + 1):
            b.start_worker(f"w{k}@bench", args.concurrency)
        s = Scheduler.connect(b.url)
        # warm-up: a pool process's first task imports and connects
        warm = s.create_job(name="warm-up")
        for _ in range(slots * 2):
            warm.add_task("true")
        s.submit_job(warm)
        warm.wait(timeout=120)
        results = {}
        wnames = [f"w{k}@bench" for k in range(1, args.workers + 1)]
        for _rep in range(args.repeat):
            c0 = cpu_snapshot(b, wnames)
            b.r.config_resetstat()
            el, detail = run_tasks(s, n, slots)
            c1 = cpu_snapshot(b, wnames)
            print(f"hpcq, {n} tasks in one job:       {el:7.2f} s  {n / el:7.1f} tasks/s")
            print(detail)
            print(cpu_report(c0, c1, n, el) + " (includes add_task)")
            print(redis_report(b.r, n) + " (includes add_task)")
            b.r.config_resetstat()
            results.setdefault("tasks", []).append(el)
            el, detail = run_sweep(s, n, slots)
            c2 = cpu_snapshot(b, wnames)
            print(f"hpcq, one {n}-instance sweep:   {el:7.2f} s  {n / el:7.1f} tasks/s")
            print(detail)
            print(cpu_report(c1, c2, n, el))
            print(redis_report(b.r, n))
            results.setdefault("sweep", []).append(el)
        for k in range(1, args.workers + 1):
            b.stop(f"w{k}@bench")
        b.stop("scheduler")
        if not args.skip_bare:
            for _rep in range(args.repeat):
                el = run_bare(b, n, args.workers, args.concurrency)
                results.setdefault("bare", []).append(el)
        print(machine_note().replace("machine:", "at the end:"))
        print("summary (median over repeats):")
        med = {k: statistics.median(v) for k, v in results.items()}
        for k, label in (("tasks", "hpcq tasks"), ("sweep", "hpcq sweep"), ("bare", "bare Celery")):
            if k in med:
                print(f"  {label:<12} {n / med[k]:7.1f} tasks/s")
        if "bare" in med:
            print(f"  ratio bare Celery / hpcq tasks: x{med['tasks'] / med['bare']:.2f}; "
                  f"bare Celery / hpcq sweep: x{med['sweep'] / med['bare']:.2f}")


if __name__ == "__main__":
    main()
