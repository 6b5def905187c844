"""Cancel latency, measured on a real cluster (a private redis-server, a scheduler, one worker
of concurrency 4 by default):

1. running tasks: N tasks whose process installs a SIGTERM handler that writes ``time.time()``
   to a file and exits; each is canceled one by one with ``job.cancel_task(id)``; reported:
   "cancel call -> SIGTERM received by the process" (time just before the call to the time in
   the file), and the whole call (it returns once the task is Failed and its processes gone);
2. queued tasks: every slot is held by a long task, N more tasks wait Queued; each is canceled
   with ``cancel_task(id)`` (wait=True); reported: the duration of the call;
3. the SIGKILL at the grace period: K tasks that record SIGTERM but do not exit; each is
   canceled with ``grace=G``; the bench watches the process through a pidfd; reported:
   (process gone - cancel call - G) and (task end_time in Redis - cancel call - G).

    /tmp/hv/bin/python -m bench.cancel_latency [--n 200] [--n-queued 200] [--n-kill 20] [--grace 2]
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time

from bench.common import Bench, machine_note, summary_ms
from tests.support.wait import wait_until

TRAP = r'''
import os, signal, sys, time
out, mode = sys.argv[1], sys.argv[2]
tid = os.environ["HPCQ_TASK_ID"]
def on_term(signum, frame):
    t = time.time()
    with open(os.path.join(out, tid + ".term"), "w") as f:
        f.write(repr(t))
    if mode == "exit":
        os._exit(0)
signal.signal(signal.SIGTERM, on_term)
tmp = os.path.join(out, tid + ".ready.tmp")
with open(tmp, "w") as f:
    f.write(str(os.getpid()))
os.rename(tmp, os.path.join(out, tid + ".ready"))
while True:
    signal.pause()
'''


def read_file(path: str, timeout: float = 30.0) -> str:
    def get():
        try:
            with open(path) as f:
                return f.read() or None
        except FileNotFoundError:
            return None
    return wait_until(get, timeout, path, 0.002)


def task_command(script: str, out: str, mode: str) -> str:
    # -I -S: the stdlib only, fast start; exec: the handler runs in the task's main process
    return f"exec {sys.executable} -I -S {script} {out} {mode}"


def running_cancels(s, b: Bench, script: str, n: int) -> dict[str, list[float]]:
    out = os.path.join(b.dir, "running")
    os.makedirs(out)
    job = s.create_job(name="cancel-running")
    for _ in range(n + 1):
        job.add_task(task_command(script, out, "exit"))
    s.submit_job(job)
    to_term, to_end, to_return, bad = [], [], [], []
    for t in range(1, n + 2):
        tid = f"{job.id}.{t}"
        read_file(os.path.join(out, tid + ".ready"), 120)
        t0 = time.time()
        task = job.cancel_task(tid)
        t1 = time.time()
        term = float(read_file(os.path.join(out, tid + ".term"), 30))
        if task.state != "Failed":
            bad.append(f"{tid} {task.state}")
        if t == 1:
            continue  # warm-up: the API's first revoke opens its Celery connection
        to_term.append(term - t0)
        to_end.append(float(task.record["end_time"]) - t0)
        to_return.append(t1 - t0)
    job.wait(timeout=60)
    print(f"running task, cancel call -> SIGTERM received by the process: {summary_ms(to_term)}")
    print(f"running task, cancel call -> task Failed recorded (end_time in Redis): {summary_ms(to_end)}")
    print(f"running task, cancel call returns (it polls the state every 50 ms): {summary_ms(to_return)}")
    if bad:
        print(f"  ! {len(bad)} canceled running task(s) did not end Failed: {bad[:5]}")
    return {"term": to_term, "end": to_end, "return": to_return, "bad": bad}


def queued_cancels(s, b: Bench, slots: int, n: int, backlog: int = 0) -> list[float]:
    """``backlog``: that many more tasks wait Queued ahead of the canceled ones (jobs of up to
    10,000 tasks, each submitted in one call); they are canceled before the slots are freed."""
    hold = s.create_job(name="hold-slots", priority="Highest")
    for _ in range(slots):
        hold.add_task("exec sleep 100000")
    s.submit_job(hold)
    wait_until(lambda: int(hold.refresh().record.get("c:Running", 0)) == slots, 120, "slots held", 0.05)
    ahead = []
    for k in range(0, backlog, 10_000):
        ahead.append(s.submit([{"command": "true"}] * min(10_000, backlog - k), name="backlog"))
    job = s.create_job(name="cancel-queued")
    for _ in range(n + 1):
        job.add_task("true")
    s.submit_job(job)
    times, bad = [], []
    for t in range(1, n + 2):
        tid = f"{job.id}.{t}"
        t0 = time.perf_counter()
        task = job.cancel_task(tid)
        el = time.perf_counter() - t0
        if task.state != "Canceled":
            bad.append(f"{tid} {task.state}")
        if t > 1:
            times.append(el)
    started = sum(1 for r in s.store.tasks([f"{job.id}.{t}" for t in range(1, n + 2)])
                  if r.get("start_time"))
    print(f"queued task ({backlog:,} more queued ahead), cancel_task(wait=True) call: {summary_ms(times)}")
    if bad or started:
        print(f"  ! {len(bad)} not Canceled ({bad[:5]}), {started} started")
    for j in ahead:
        s.cancel_job(j.id, timeout=600)
    s.cancel_job(hold.id, force=True, timeout=60)
    return times


def kill_at_grace(s, b: Bench, script: str, n: int, grace: float) -> None:
    out = os.path.join(b.dir, "ignore")
    os.makedirs(out)
    job = s.create_job(name="cancel-ignore-term")
    for _ in range(n):
        job.add_task(task_command(script, out, "ignore"))
    s.submit_job(job)
    gone, ended, termed, after_term, bad = [], [], [], [], []
    for t in range(1, n + 1):
        tid = f"{job.id}.{t}"
        pid = int(read_file(os.path.join(out, tid + ".ready"), 120))
        fd = os.pidfd_open(pid)
        try:
            t0 = time.time()
            job.cancel_task(tid, grace=grace, wait=False)
            ready, _, _ = select.select([fd], [], [], grace + 60)
            t_gone = time.time()
        finally:
            os.close(fd)
        if not ready:
            bad.append(f"{tid}: process {pid} still alive {grace + 60}s after the cancel")
            continue
        task = s.get_task(tid)
        wait_until(lambda: task.refresh().state in ("Failed", "Finished", "Canceled"),  # noqa: B023  (called now)
                   60, f"{tid} end", 0.01)
        term = float(read_file(os.path.join(out, tid + ".term"), 5))
        gone.append(t_gone - t0 - grace)
        ended.append(float(task.record["end_time"]) - t0 - grace)
        termed.append(term - t0)
        after_term.append(t_gone - term - grace)
        if task.state != "Failed" or str(task.record.get("exit_code")) != "-9":
            bad.append(f"{tid} {task.state} exit_code={task.record.get('exit_code')} {task.error_message!r}")
    job.wait(timeout=60)
    print(f"TERM-ignoring task, grace={grace:g}s: SIGTERM received after {summary_ms(termed)}")
    print(f"TERM-ignoring task, process gone - cancel call - grace: {summary_ms(gone)}")
    print(f"TERM-ignoring task, process gone - SIGTERM received - grace: {summary_ms(after_term)}")
    print(f"TERM-ignoring task, task end_time (Redis) - cancel call - grace: {summary_ms(ended)}")
    if bad:
        print(f"  ! {len(bad)} unexpected: {bad[:5]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="running tasks to cancel")
    ap.add_argument("--n-queued", type=int, default=200, help="queued tasks to cancel")
    ap.add_argument("--n-kill", type=int, default=20, help="TERM-ignoring tasks to cancel")
    ap.add_argument("--n-backlog", type=int, default=0,
                    help="tasks queued ahead of the queued ones that are canceled")
    ap.add_argument("--grace", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()
    print(f"bench/cancel_latency.py: {args.workers} worker(s) x concurrency {args.concurrency}")
    print(machine_note())
    from scheduler import Scheduler
    with Bench("cancel_latency") as b:
        script = os.path.join(b.dir, "trap.py")
        with open(script, "w") as f:
            f.write(TRAP)
        print(f"redis {b.url}")
        b.start_scheduler()
        for k in range(1, args.workers + 1):
            b.start_worker(f"w{k}@bench", args.concurrency)
        s = Scheduler.connect(b.url)
        if args.n:
            running_cancels(s, b, script, args.n)
        if args.n_queued:
            queued_cancels(s, b, args.workers * args.concurrency, args.n_queued, args.n_backlog)
        if args.n_kill:
            kill_at_grace(s, b, script, args.n_kill, args.grace)
        print(machine_note().replace("machine:", "at the end:"))


if __name__ == "__main__":
    main()
