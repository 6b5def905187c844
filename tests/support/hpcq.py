"""hpcq's CLI as a real process of a test."""

from __future__ import annotations

import os
import subprocess
import sys


def hpcq(*args, redis_url: str, input: str | None = None, timeout: float = 60,
         env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m scheduler.cli *args`` against ``redis_url`` (in ``cwd``, default the
    test's); text output, not checked."""
    full_env = dict(os.environ, HPCQ_REDIS_URL=redis_url, **(env or {}))
    return subprocess.run([sys.executable, "-m", "scheduler.cli", *[str(a) for a in args]],
                          env=full_env, input=input, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)
