"""Waiting for a cancel to take effect: how many tasks are still stopping and how long their
grace period has left, and an interrupt that leaves the cancel going.

The cancel itself is one atomic step that the command makes before it waits; waiting is only
watching.  So Ctrl-C during the wait does not undo or abort anything: the command says the
cancel is recorded and what is still stopping, and exits 0 (the processes are stopped by their
workers whether anyone watches or not)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click
from rich.console import Console

from scheduler.errors import WaitTimeout

POLL = 0.05
#: How long past the grace period the command waits for the stop to be recorded before it gives
#: up (exit 3): the SIGKILL and the finish step take well under a second on a live worker.
MARGIN = 60.0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe(what: str, left: int, grace_end: float | None, graceful: bool) -> str:
    """``canceling job 3: 2 tasks still stopping, SIGKILL in 12 s``."""
    if graceful:
        return f"canceling {what}: {_plural(left, 'task')} still running (let finish: graceful cancel)"
    text = f"canceling {what}: {_plural(left, 'task')} still stopping"
    if grace_end is None:
        return text
    rest = grace_end - time.monotonic()
    return text + (f", SIGKILL in {rest:.0f} s" if rest > 0.5 else ", grace period over: killing")


def wait_stopped(what: str, done: Callable[[], bool], left: Callable[[], int], grace: float,
                 graceful: bool = False, timeout: float | None = None, quiet: bool = False) -> None:
    """Poll ``done()`` until it holds, showing ``left()`` (tasks still stopping) and the grace
    left; a live line on a terminal, a line per change otherwise.  Ctrl-C: the cancel goes on,
    say so and exit 0.  WaitTimeout past ``timeout`` (default: grace + MARGIN; none if
    graceful, which waits for tasks to finish by themselves)."""
    start = time.monotonic()
    grace_end = None if graceful else start + grace
    if timeout is None and not graceful:
        timeout = grace + MARGIN
    deadline = None if timeout is None else start + timeout
    err = Console(stderr=True, highlight=False)
    status = err.status("") if err.is_terminal and not quiet else None
    last = None
    try:
        if status is not None:
            status.start()
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"timed out waiting for {what} to stop")
            line = describe(what, left(), grace_end, graceful)
            if status is not None:
                status.update(line)
            elif not quiet and line.split(",")[0] != last:
                last = line.split(",")[0]
                print(line, file=sys.stderr, flush=True)
            time.sleep(POLL)
    except KeyboardInterrupt:
        if status is not None:
            status.stop()
            status = None
        n = 0
        try:
            n = left()
        except Exception:
            pass
        tail = f" ({_plural(n, 'task')})" if n > 1 else ""
        click.echo(f"cancel recorded; {what} is still stopping{tail}", err=True)
        raise SystemExit(0) from None
    finally:
        if status is not None:
            status.stop()
