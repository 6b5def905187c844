"""A job of N plain tasks (100,000 by default): submit, cancel and requeue, each timed, with a
ping probe in another process measuring how long Redis is blocked at a time meanwhile (the
longest PING round trip).  The ops go STEP_TASKS tasks a step (scheduler/core/lua/lib_ops.lua).

    python -m bench.big_job [-n 100000]

No workers: the job's tasks stay queued, then are canceled, then queued again."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import redis

from bench.common import Bench


def _probe(url: str, stop, out) -> None:
    r = redis.Redis.from_url(url)
    worst, n = 0.0, 0
    while not stop.is_set():
        t = time.perf_counter()
        r.ping()
        worst = max(worst, time.perf_counter() - t)
        n += 1
    out.put((worst, n))


def probed(url: str, fn) -> tuple[float, float]:
    """(seconds fn took, the longest PING round trip meanwhile); the probe is another process, so
    the caller's own Python work does not delay it."""
    ctx = mp.get_context("fork")
    stop, out = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_probe, args=(url, stop, out))
    p.start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    fn()
    el = time.perf_counter() - t0
    stop.set()
    worst, _ = out.get(timeout=60)
    p.join(10)
    return el, worst


def measure(b: Bench, n: int) -> dict:
    """{op: (seconds, longest ping)} for submit, cancel and requeue of one n-task job."""
    from scheduler import Scheduler
    s = Scheduler.connect(b.url)
    tasks = [{"command": "true"}] * n
    box = {}
    res = {"submit": probed(b.url, lambda: box.setdefault("job", s.submit(tasks, name="big")))}
    job = box["job"]
    res["cancel"] = probed(b.url, lambda: s.cancel_job(job.id, wait=False))
    res["requeue"] = probed(b.url, lambda: s.requeue_job(job.id, wait=False))
    rec = s.store.job(job.id)
    res["ok"] = rec.get("state") == "Queued" and int(rec.get("c:Queued", 0)) == n
    s.cancel_job(job.id, wait=False)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=100_000)
    args = ap.parse_args()
    with Bench("big-job") as b:
        res = measure(b, args.n)
    for op in ("submit", "cancel", "requeue"):
        el, worst = res[op]
        print(f"{op} of a {args.n}-task job: {el:.2f} s, longest PING meanwhile {worst * 1e3:.1f} ms")
    print("end state right" if res["ok"] else "END STATE WRONG")


if __name__ == "__main__":
    main()
