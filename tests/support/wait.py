"""The one poll loop of the tests and the benchmarks."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float, what: str = "", interval: float = 0.05):
    """Poll ``predicate()`` every ``interval`` s until it returns something truthy, and return
    that value; raise AssertionError ("timed out after Ns waiting for <what>") once ``timeout``
    seconds have passed.  ``predicate`` may raise to fail at once (e.g. a process exited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s" + (f" waiting for {what}" if what else ""))
        time.sleep(interval)
