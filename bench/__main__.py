"""Every benchmark of issue 15 in one run, and one table: figure, hpcq, peer, ratio, goal, met?

    python -m bench [--repeat 3] [--full] [--quick] [--log FILE]

- throughput: N ``true`` tasks on 2 workers x concurrency 2, end to end, as one N-instance sweep
  and as N one-task jobs (``Scheduler.submit`` once per job); peers: bare Celery
  (bench/bare_celery.py, the same worker options, the same redis-server binary; N
  ``apply_async`` calls for both rows: Celery has no sweep) and HyperQueue (bench/hyperqueue.py:
  one worker of 4 CPUs, as one N-task job and as N one-task jobs).  N = 1,000; with ``--full``
  also 10,000.  The ratio is hpcq tasks/s over the peer's;
- cancel latency (bench/cancel_latency.py's functions, 1 worker x concurrency 4): cancel call ->
  SIGTERM in the running process, and the ``cancel_task`` call for a queued task with a backlog
  queued ahead (10,000 tasks; 100,000 with ``--full``);
- a 1,000,000-instance sweep (bench/submit_sweep.py's ``one``, no workers): the submit time, the
  ``cancel_task`` of its master, the Redis used_memory delta of the submit;
- Redis memory per finished task record: ``MEMORY USAGE`` of a Finished task's key, and the
  used_memory delta of the N one-task jobs divided by N (job record, task record, queue and
  index entries and the events, as they stand after the run);
- a 100,000-task job (bench/big_job.py): submit, cancel, requeue, each with the longest PING
  round trip meanwhile (a probe in another process): how long Redis is blocked at a time;
- the dispatch rate with 1,000,000 tasks queued against 1,000 (bench/queue_depth.py);
- 50 -> 500 simulated workers with 100,000 queued (bench/many_workers.py): the rate, the
  scheduler's CPU per dispatch (the ratio: against 50 workers), Redis' CPU per task and per
  heartbeat.

Each figure is the median over ``--repeat`` runs (latency percentiles: the median of each run's
percentile).  Everything a benchmark starts is stopped and checked gone at its end.  The
benchmarks' own output (per-run lines, cleanup notes) goes to ``--log`` (default: a file under
/tmp, named at the end); the table and the breakdowns go to stdout.  ``--quick``: tiny sizes, a
smoke run of the whole path (its figures mean nothing)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

from bench.common import Bench, machine_note, percentile

SLOTS_WORKERS, SLOTS_CONCURRENCY = 2, 2


class Tee:
    """Print to the log only (benchmarks' chatter) or to both (what the table run shows)."""

    def __init__(self, path: str):
        self.path = path
        self.f = open(path, "a", buffering=1)  # noqa: SIM115  (open for the Tee's life)

    def log(self, *a) -> None:
        print(*a, file=self.f)

    def out(self, *a) -> None:
        print(*a)
        print(*a, file=self.f)

    @contextlib.contextmanager
    def quiet(self):
        """stdout of whatever runs inside goes to the log."""
        with contextlib.redirect_stdout(self.f):
            yield


def fmt_n(n: int) -> str:
    return f"{n:,}"


# --- throughput ---------------------------------------------------------------------------------
def hpcq_one_task_jobs(s, n: int) -> float:
    """N jobs of one ``true`` task, each created and submitted by one ``Scheduler.submit`` call;
    from the first call until every job has ended."""
    t0 = time.perf_counter()
    jobs = [s.submit({"command": "true"}, name="one-task") for _ in range(n)]
    states = [jobs[-1].wait(timeout=1800)] + [j.wait(timeout=1800) for j in jobs]
    el = time.perf_counter() - t0
    bad = [j.id for j, st in zip(jobs, states[1:]) if st != "Finished"]
    if bad:
        print(f"  ! {len(bad)} one-task job(s) did not finish: {bad[:5]}", file=sys.stderr)
    return el


def throughput(t: Tee, n: int, repeat: int) -> dict:
    from bench import throughput as tp
    from scheduler import Scheduler
    slots = SLOTS_WORKERS * SLOTS_CONCURRENCY
    res = {"sweep": [], "tasks": [], "bare": [], "sweep_cpu": [], "sweep_redis": [],
           "bare_cpu": [], "record_bytes": [], "job_delta": []}
    with t.quiet(), Bench(f"main-throughput-{n}", quiet_logs=True) as b:
        print(f"== throughput, n={n}, redis {b.url}")
        b.start_scheduler()
        wnames = [f"w{k}@bench" for k in range(1, SLOTS_WORKERS + 1)]
        for w in wnames:
            b.start_worker(w, SLOTS_CONCURRENCY)
        s = Scheduler.connect(b.url)
        warm = s.submit([{"command": "true"}] * (slots * 2), name="warm-up")
        warm.wait(timeout=120)
        for _ in range(repeat):
            c0 = tp.cpu_snapshot(b, wnames)
            b.r.config_resetstat()
            el, detail = tp.run_sweep(s, n, slots)
            c1 = tp.cpu_snapshot(b, wnames)
            res["sweep"].append(el)
            res["sweep_cpu"].append(tp.cpu_report(c0, c1, n, el))
            res["sweep_redis"].append(tp.redis_report(b.r, n))
            print(f"hpcq, one {n}-instance sweep: {el:.2f} s, {n / el:.1f} tasks/s\n{detail}")
            mem0 = int(b.r.info("memory")["used_memory"])
            el = hpcq_one_task_jobs(s, n)
            mem1 = int(b.r.info("memory")["used_memory"])
            res["tasks"].append(el)
            res["job_delta"].append((mem1 - mem0) / n)
            print(f"hpcq, {n} one-task jobs: {el:.2f} s, {n / el:.1f} tasks/s; "
                  f"used_memory delta {(mem1 - mem0) / n:.0f} B per job")
        # a Finished task's record: the last one-task jobs' tasks
        last = max(int(j) for j in s.store.job_ids())
        sizes = [b.r.memory_usage(f"hpcq:task:{j}.1", samples=0) for j in range(last - 49, last + 1)]
        sizes = [x for x in sizes if x]
        res["record_bytes"] = [statistics.median(sizes)] if sizes else []
        for w in wnames:
            b.stop(w)
        b.stop("scheduler")
        for _ in range(repeat):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                el = tp.run_bare(b, n, SLOTS_WORKERS, SLOTS_CONCURRENCY)
            print(buf.getvalue(), end="")
            res["bare"].append(el)
            res["bare_cpu"].append(next((ln for ln in buf.getvalue().splitlines() if "CPU ms" in ln), ""))
    return res


def hyperqueue_throughput(t: Tee, n: int, repeat: int) -> dict:
    from bench import hyperqueue as hqb
    with t.quiet():
        print(f"== HyperQueue {hqb.version()}, n={n}")
        return hqb.measure(n, SLOTS_WORKERS * SLOTS_CONCURRENCY, repeat)


# --- cancel ------------------------------------------------------------------------------------
def cancels(t: Tee, n_running: int, n_queued: int, backlog: int, repeat: int) -> dict:
    from bench import cancel_latency as cl
    from scheduler import Scheduler
    res = {"term50": [], "term99": [], "q50": [], "q99": [], "bad": 0}
    with t.quiet(), Bench("main-cancel", quiet_logs=True) as b:
        print(f"== cancel latency, redis {b.url}")
        script = os.path.join(b.dir, "trap.py")
        with open(script, "w") as f:
            f.write(cl.TRAP)
        b.start_scheduler()
        b.start_worker("w1@bench", 4)
        s = Scheduler.connect(b.url)
        for rep in range(repeat):
            # running_cancels writes into b.dir/running: one directory per repeat
            b.dir = os.path.join(b.logdir, f"rep{rep}")
            os.makedirs(b.dir)
            got = cl.running_cancels(s, b, script, n_running)
            res["term50"].append(percentile(got["term"], 50))
            res["term99"].append(percentile(got["term"], 99))
            res["bad"] += len(got["bad"])
            times = cl.queued_cancels(s, b, 4, n_queued, backlog)
            res["q50"].append(percentile(times, 50))
            res["q99"].append(percentile(times, 99))
        b.dir = b.logdir
    return res


# --- a 1,000,000-instance sweep -------------------------------------------------------------
def big_sweep(t: Tee, size: int, repeat: int) -> dict:
    from bench import submit_sweep as ss
    from scheduler import Scheduler
    res = {"submit": [], "cancel": [], "mem": [], "bad": []}
    with t.quiet(), Bench("main-sweep", quiet_logs=True) as b:
        print(f"== {size}-instance sweep, no workers, redis {b.url}")
        s = Scheduler.connect(b.url)
        ss.one(s, b.r, 1)  # warm-up: scripts loaded, connection open
        for _ in range(repeat):
            row = ss.one(s, b.r, size)
            t0 = time.perf_counter()
            task = s.cancel_task(row["task"], timeout=600)
            el = time.perf_counter() - t0
            canceled = int(task.record.get("i:Canceled", 0))
            if task.state != "Canceled" or canceled != size:
                res["bad"].append(f"{task.id} {task.state} i:Canceled={canceled}")
            print(f"submit {row['total'] * 1e3:.2f} ms, used_memory delta {row['mem_delta']} B, "
                  f"cancel_task(master) {el * 1e3:.2f} ms -> {task.state}, {canceled} instances Canceled")
            res["submit"].append(row["total"])
            res["cancel"].append(el)
            res["mem"].append(row["mem_delta"])
    return res


# --- a large job, a deep queue, many workers ---------------------------------------------------
def large(t: Tee, job_n: int, depths: list[int], counts: list[int], queued: int, seconds: float) -> dict:
    from bench import big_job, many_workers, queue_depth
    with t.quiet():
        with Bench("main-big-job", quiet_logs=True) as b:
            print(f"== a {job_n}-task job, redis {b.url}")
            job = big_job.measure(b, job_n)
            print(job)
        print("== dispatch rate by queue depth")
        depth = queue_depth.run(depths, 400)
        print(f"== {counts} simulated workers, {queued} queued")
        many = many_workers.run(counts, queued, seconds)
    return {"job": job, "depth": depth, "many": many}


# --- the table ---------------------------------------------------------------------------------
class Table:
    def __init__(self):
        self.rows = []

    def add(self, figure: str, hpcq: str, peer: str = "—", ratio: str = "—", goal: str = "—",
            met: str = "—") -> None:
        self.rows.append((figure, hpcq, peer, ratio, goal, met))

    def ratio_row(self, figure: str, n: int, mine: list[float], peer_name: str, theirs: list[float],
                  goal: float) -> None:
        a, p = n / statistics.median(mine), n / statistics.median(theirs)
        self.add(figure, f"{a:.0f} tasks/s", f"{peer_name} {p:.0f} tasks/s", f"{a / p:.2f}",
                 f">= {goal:g}", "yes" if a / p >= goal else "no")

    def limit_row(self, figure: str, values: list[float], goal_ms: float, unit_ms: bool = True) -> None:
        v = statistics.median(values) * 1e3
        self.add(figure, f"{v:.2f} ms", goal=f"<= {goal_ms:g} ms", met="yes" if v <= goal_ms else "no")

    def render(self) -> str:
        head = ("figure", "hpcq", "peer", "ratio", "goal", "met?")
        lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---:|---:|:---:|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def median_line(lines: list[str], times: list[float]) -> str:
    """The line of the run whose time is the median one."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    return lines[order[len(order) // 2]] if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (medians are reported)")
    ap.add_argument("--full", action="store_true", help="also 10,000 tasks; 100,000 queued for the queued cancel")
    ap.add_argument("--quick", action="store_true", help="a smoke run with tiny sizes (figures meaningless)")
    ap.add_argument("--log", default=None, help="where the benchmarks' own output goes")
    args = ap.parse_args()
    if args.quick:
        sizes, n_run, n_q, backlog, sweep, repeat = [50], 10, 20, 1000, 10_000, 1
        job_n, depths, counts, queued, seconds = 2000, [1000, 20_000], [10, 30], 3000, 3.0
    else:
        sizes = [1000, 10_000] if args.full else [1000]
        n_run, n_q, backlog, sweep, repeat = 200, 200, (100_000 if args.full else 10_000), 1_000_000, args.repeat
        job_n, depths, counts, queued, seconds = 100_000, [1000, 1_000_000], [50, 100, 200, 500], 100_000, 10.0
    log = args.log or os.path.join(tempfile.mkdtemp(prefix="hpcq-bench-main-"), "bench.log")
    t = Tee(log)
    from bench import hyperqueue as hqb
    hq_version = hqb.version()  # installs it first if missing
    started = time.time()
    t.out(f"python -m bench{' --quick' if args.quick else ''}{' --full' if args.full else ''} "
          f"--repeat {repeat}, {time.strftime('%Y-%m-%d %H:%M')}")
    t.out(machine_note().replace("machine:", "machine at the start:"))
    table = Table()
    breakdown = []
    for n in sizes:
        tp = throughput(t, n, repeat)
        hq = hyperqueue_throughput(t, n, repeat)
        N = fmt_n(n)
        table.ratio_row(f"{N} `true`, one {N}-instance sweep, 2 workers x 2", n, tp["sweep"],
                        f"bare Celery ({N} apply_async)", tp["bare"], 0.9)
        table.ratio_row(f"{N} `true`, one {N}-instance sweep, 2 workers x 2", n, tp["sweep"],
                        f"HyperQueue ({N}-task job)", hq["sweep"], 1.3)
        table.ratio_row(f"{N} one-task jobs (`Scheduler.submit` each), 2 workers x 2", n, tp["tasks"],
                        f"bare Celery ({N} apply_async)", tp["bare"], 0.9)
        table.ratio_row(f"{N} one-task jobs (`Scheduler.submit` each), 2 workers x 2", n, tp["tasks"],
                        f"HyperQueue ({N} one-task jobs)", hq["tasks"], 1.3)
        if tp["record_bytes"] and n == sizes[0]:
            table.add("Redis memory per Finished task record (`MEMORY USAGE` of its key)",
                      f"{tp['record_bytes'][0]:.0f} B")
            table.add("Redis used_memory per finished one-task job (job, task, indexes, events)",
                      f"{statistics.median(tp['job_delta']):.0f} B")
        breakdown.append(f"Sweep row, {N} instances (run with the median time):")
        breakdown.append(median_line(tp["sweep_cpu"], tp["sweep"]))
        breakdown.append(median_line(tp["sweep_redis"], tp["sweep"]))
        breakdown.append(f"  bare Celery, {N} tasks:")
        breakdown.append(median_line(tp["bare_cpu"], tp["bare"]))
        breakdown.append(f"  HyperQueue {hq_version}, one {N}-task job: CPU "
                         f"{statistics.median(hq['sweep_cpu']) * 1e3:.2f} ms per task (server + worker "
                         f"+ commands, one process); {N} one-task jobs: "
                         f"{statistics.median(hq['tasks_cpu']) * 1e3:.2f} ms")
    c = cancels(t, n_run, n_q, backlog, repeat)
    table.limit_row(f"cancel call -> SIGTERM in the running process, p50 ({n_run} tasks, 1 worker x 4)",
                    c["term50"], 5)
    table.limit_row(f"cancel call -> SIGTERM in the running process, p99 ({n_run} tasks, 1 worker x 4)",
                    c["term99"], 10)
    table.limit_row(f"cancel of a queued task, the call, p99 ({n_q} canceled, {fmt_n(backlog)} queued ahead)",
                    c["q99"], 2)
    sw = big_sweep(t, sweep, repeat)
    table.limit_row(f"submit a {fmt_n(sweep)}-instance sweep", sw["submit"], 500)
    table.limit_row(f"cancel the master of a {fmt_n(sweep)}-instance sweep (all queued)", sw["cancel"], 1000)
    table.add(f"Redis used_memory delta of a {fmt_n(sweep)}-instance sweep submit",
              f"{statistics.median(sw['mem']):.0f} B")
    lg = large(t, job_n, depths, counts, queued, seconds)
    for op in ("submit", "cancel", "requeue"):
        el, worst = lg["job"][op]
        table.add(f"{op} of a {fmt_n(job_n)}-task job: the longest PING meanwhile (took {el:.1f} s)",
                  f"{worst * 1e3:.1f} ms", goal="<= 50 ms", met="yes" if worst <= 0.05 else "no")
    lo, hi = lg["depth"][0], lg["depth"][-1]
    table.add(f"dispatch rate with {fmt_n(hi['depth'])} queued (dispatch.lua, 100 a call)",
              f"{hi['rate']:.0f} units/s", f"{fmt_n(lo['depth'])} queued: {lo['rate']:.0f} units/s",
              f"{hi['rate'] / lo['rate']:.2f}", ">= 0.8", "yes" if hi["rate"] >= 0.8 * lo["rate"] else "no")
    table.add(f"Redis used_memory per queued task ({fmt_n(hi['depth'])}-task job)",
              f"{hi['per_task_bytes']:.0f} B")
    base = lg["many"][0]
    for row in lg["many"]:
        ratio = row["sched_ms"] / base["sched_ms"]
        table.add(f"{row['workers']} simulated workers x 4, {fmt_n(queued)} queued: scheduler CPU per "
                  f"dispatch ({row['rate']:.0f} tasks/s run; Redis {row['redis_ms']:.2f} ms/task; "
                  f"a heartbeat {row['beat_redis_us']:.0f} us of Redis, {row['beats_per_s']:.0f}/s)",
                  f"{row['sched_ms']:.2f} ms", f"{base['workers']} workers: {base['sched_ms']:.2f} ms",
                  f"{ratio:.2f}", "<= 1.2 (flat)", "yes" if ratio <= 1.2 else "no")
    if not lg["job"]["ok"]:
        sw["bad"].append("the large job did not end Queued after its requeue")
    t.out(machine_note().replace("machine:", "machine at the end:  "))
    t.out(f"HyperQueue {hq_version}: LocalCluster from the PyPI wheel (it has no `hq` binary), one "
          f"worker of 4 CPUs, submitted through its Python API; bare Celery and hpcq share the "
          f"redis-server binary; medians of {repeat} run(s); took {time.time() - started:.0f} s")
    t.out("")
    t.out(table.render())
    t.out("")
    t.out("\n".join(breakdown))
    problems = []
    if c["bad"]:
        problems.append(f"{c['bad']} canceled running task(s) did not end Failed")
    problems += sw["bad"]
    if problems:
        t.out("PROBLEMS: " + "; ".join(problems))
    t.out(f"(the benchmarks' own output: {log})")


if __name__ == "__main__":
    main()
