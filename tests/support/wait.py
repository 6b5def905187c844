"""The one poll loop of the tests and the benchmarks (``wait_until``), and its converse
(``stays``: a condition that must hold throughout a while, instead of a sleep then one look)."""

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


def stays(predicate, seconds: float, interval: float = 0.05) -> bool:
    """``predicate`` holds throughout ``seconds`` (checked every ``interval``)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())
