"""The command line: ``python -m bench.chaos --tasks N --seed S``; exit 1 if any invariant is
violated."""

from __future__ import annotations

import argparse
import sys

import bench.chaos
from bench.chaos.config import Config
from bench.chaos.run import Chaos


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=bench.chaos.__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=300, help="tasks and sweep instances in all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--schedulers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds of chaos (default: max(20, 0.06 s per task))")
    ap.add_argument("--settle-timeout", type=float, default=None)
    ap.add_argument("--keep", action="store_true", help="keep logs and marker files")
    ap.add_argument("--quiet", action="store_true", help="no running commentary")
    a = ap.parse_args(argv)
    cfg = Config(tasks=a.tasks, seed=a.seed, workers=a.workers, schedulers=a.schedulers,
                 concurrency=a.concurrency, duration=a.duration, settle_timeout=a.settle_timeout,
                 keep=a.keep, quiet=a.quiet)
    chaos = Chaos(cfg)
    try:
        chaos.run()
    finally:
        if chaos.invariants:
            print(chaos.report(), flush=True)
    chaos.cleanup()
    return 1 if chaos.violations else 0


if __name__ == "__main__":
    sys.exit(main())
