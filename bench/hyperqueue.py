"""HyperQueue as the peer for the throughput figures: N ``true`` tasks on one HyperQueue worker
with as many CPUs as hpcq's slots (4 = 2 workers x concurrency 2), end to end, as one N-task job
(HyperQueue's sweep: an array job is N tasks of one job) and as N one-task jobs.

    python -m bench.hyperqueue [--n 1000] [--cpus 4] [--repeat 1]

The ``hyperqueue`` PyPI wheel (installed into this interpreter's environment at run time when it
is missing) ships no ``hq`` binary: its server and worker live in the wheel's native module and
are started with ``hyperqueue.LocalCluster``.  So this runs a LocalCluster (one server, one worker
of ``--cpus`` CPUs, its server dir under a temp dir) in a child process,
``python -m bench.hyperqueue serve DIR CPUS``, and submits from this process through the Python
API (``hyperqueue.Client`` / ``Job``): the N-task job as one ``submit``, the one-task jobs as N
``submit`` calls; then one ``wait_for_jobs``.  Each figure is timed from the first submit call
(building the job description included) until every job has ended.  Task commands are
``["true"]`` with the API's default stdout/stderr files, as ``hq submit -- true`` would have.

The child carries ``HPCQ_BENCH_TAG`` (as everything bench.common starts); at the end it is
stopped (stdin closed -> ``LocalCluster.stop()``), then the bench checks with psutil that no
process with the tag is left, and kills and reports any."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

from bench.common import ROOT, TAG_VAR, kill_leftovers, machine_note

# How the one-task-submissions figure submits (printed in the table).
ONE_TASK_METHOD = "Python API: N x Client.submit(Job with 1 task)"
SWEEP_METHOD = "Python API: 1 x Client.submit(Job with N tasks)"
READY = "bench-hq-server-dir="


def ensure_hyperqueue():
    """The ``hyperqueue`` module, pip-installed into this interpreter's environment if missing."""
    try:
        import hyperqueue
    except ImportError:
        print("bench: hyperqueue is not installed; python -m pip install hyperqueue", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "hyperqueue"], check=True,
                       stdout=sys.stderr)
        importlib.invalidate_caches()
    import hyperqueue
    return hyperqueue


def hq_binary() -> str | None:
    """The ``hq`` CLI, if one is around (the PyPI wheel does not ship it)."""
    found = shutil.which("hq") or os.path.join(os.path.dirname(sys.executable), "hq")
    return found if found and os.access(found, os.X_OK) else None


def version() -> str:
    return ensure_hyperqueue().get_version()


def serve(server_dir: str, cpus: int) -> None:
    """In the child: a LocalCluster (server + one worker of ``cpus`` CPUs) until stdin closes."""
    from hyperqueue import LocalCluster
    from hyperqueue.cluster import WorkerConfig
    cluster = LocalCluster(server_dir=server_dir, worker_config=WorkerConfig(cores=cpus))
    try:
        print(f"{READY}{cluster.cluster.server_dir}", flush=True)
        sys.stdin.read()
    finally:
        cluster.stop()


class _Answered(Exception):
    pass


class HQ:
    """A LocalCluster in a child process and a client to it; use as a context manager."""

    def __init__(self, cpus: int = 4):
        ensure_hyperqueue()
        self.cpus = cpus
        self.tag = f"hyperqueue-{uuid.uuid4().hex[:12]}"
        self.tmp = tempfile.mkdtemp(prefix="hpcq-bench-hq-")
        self.proc: subprocess.Popen | None = None
        self.client = None

    def __enter__(self) -> HQ:
        from hyperqueue import Client
        env = {**os.environ, TAG_VAR: self.tag,
               "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log = open(os.path.join(self.tmp, "cluster.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.hyperqueue", "serve", os.path.join(self.tmp, "server"),
             str(self.cpus)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            env=env, cwd=self.tmp, text=True)
        try:
            for line in self.proc.stdout:  # LocalCluster prints a table of its own first
                if line.startswith(READY):
                    break
            else:
                raise RuntimeError(f"the HyperQueue LocalCluster did not start; see {self.log.name}")
            self.server_dir = line[len(READY):].strip()
            self.client = Client(self.server_dir)
            self.workdir = os.path.join(self.tmp, "work")
            os.makedirs(self.workdir)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cpu_seconds(self) -> float:
        """CPU (user+system) of the cluster process and the task commands it reaped."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            return float("nan")

    def _job(self, n: int):
        from hyperqueue import Job
        job = Job(default_workdir=self.workdir)
        for _ in range(n):
            job.program(["true"])
        return job

    def _status(self, ids: list[int]) -> dict:
        """One JobInfo query: {job id: {"finished", "failed", "total", "completed"}}.

        ``wait_for_jobs`` asks the server, calls its callback, and sleeps 1 s before it asks
        again, which would round every figure up to a whole second; the callback raising after
        the first answer makes it one query."""
        got = {}

        def once(status):
            got.update(status)
            raise _Answered

        try:
            self.client.connection.wait_for_jobs(ids, once)
        except _Answered:
            pass
        return got

    def _wait(self, submitted) -> None:
        """Until every job has ended: one query, then a pause of 2 ms growing x1.5 to 50 ms
        (the policy of hpcq's ``Job.wait``)."""
        ids = [j.id for j in submitted]
        pause = 0.002
        while True:
            status = self._status(ids)
            if len(status) == len(ids) and all(v["completed"] for v in status.values()):
                break
            time.sleep(pause)
            pause = min(pause * 1.5, 0.05)
        failed = sum(v["failed"] for v in status.values())
        done = sum(v["finished"] for v in status.values())
        total = sum(v["total"] for v in status.values())
        if failed or done != total:
            print(f"  ! HyperQueue: {failed} failed, {done}/{total} finished", file=sys.stderr)

    def run_sweep(self, n: int) -> float:
        t0 = time.perf_counter()
        submitted = [self.client.submit(self._job(n))]
        self._wait(submitted)
        return time.perf_counter() - t0

    def run_one_task_jobs(self, n: int) -> float:
        t0 = time.perf_counter()
        submitted = [self.client.submit(self._job(1)) for _ in range(n)]
        self._wait(submitted)
        return time.perf_counter() - t0

    def warm_up(self) -> None:
        self._wait([self.client.submit(self._job(self.cpus * 2))])

    def close(self) -> None:
        self.client = None
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
            self.log.close()
            self.proc = None
        if not kill_leftovers(self.tagged(), "HyperQueue process(es) of this run"):
            print(f"cleanup: the HyperQueue cluster is stopped; no process left (files in {self.tmp})")
        shutil.rmtree(os.path.join(self.tmp, "work"), ignore_errors=True)

    def tagged(self) -> list[psutil.Process]:
        from tests.support.procs import processes
        return processes(env={TAG_VAR: self.tag})


def measure(n: int, cpus: int = 4, repeat: int = 1, report=print) -> dict[str, list[float]]:
    """Elapsed seconds per repeat: {"sweep": [...], "tasks": [...]} plus CPU seconds per task."""
    out: dict[str, list[float]] = {"sweep": [], "tasks": [], "sweep_cpu": [], "tasks_cpu": []}
    with HQ(cpus) as hq:
        hq.warm_up()
        for _ in range(repeat):
            for kind, run, label in (("sweep", hq.run_sweep, f"one {n}-task job:     "),
                                     ("tasks", hq.run_one_task_jobs, f"{n} one-task jobs:    ")):
                c0 = hq.cpu_seconds()
                el = run(n)
                cpu = (hq.cpu_seconds() - c0) / n
                out[kind].append(el)
                out[kind + "_cpu"].append(cpu)
                report(f"HyperQueue, {label} {el:7.2f} s  {n / el:7.1f} tasks/s  "
                       f"CPU {cpu * 1e3:.2f} ms/task (server+worker+commands)")
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    print(f"bench/hyperqueue.py: HyperQueue {version()}, {args.n} x 'true', one worker of {args.cpus} CPUs"
          f" (hq binary: {hq_binary() or 'none; LocalCluster from the wheel'})")
    print(machine_note())
    res = measure(args.n, args.cpus, args.repeat)
    for k in ("sweep", "tasks"):
        print(f"  median {k}: {args.n / statistics.median(res[k]):.1f} tasks/s")


if __name__ == "__main__":
    main()
