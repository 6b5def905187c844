"""The one free-port picker of the tests and the benchmarks (hpcq's own, for ``hpcq up``, is
product code: scheduler/local.py).

Ports come from a block of the range 10000-32767, below the kernel's ephemeral range
(``ip_local_port_range``, 32768-60999 by default), one block per pytest-xdist worker
(``PYTEST_XDIST_WORKER``: gw0, gw1 ...; a run without xdist and the benchmarks use gw0's).  So a
port a test frees for a while (a Redis it stops, then restarts on the same port) is neither taken
by an outgoing connection nor handed to the test session running next to it."""

from __future__ import annotations

import os
import random
import socket

#: Never handed out: a developer's own Redis may be there.
DEFAULT_REDIS_PORT = 6379

#: The range the blocks are cut from, and how many blocks (workers gw8, gw9 ... share again).
RANGE = (10000, 32768)
BLOCKS = 8


def worker_index() -> int:
    """This process's pytest-xdist worker number (0 without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in name if c.isdigit())
    return int(digits) if digits else 0


def port_block(index: int | None = None) -> range:
    """The ports worker ``index`` (default: this process's) picks from."""
    size = (RANGE[1] - RANGE[0]) // BLOCKS
    start = RANGE[0] + (worker_index() if index is None else index) % BLOCKS * size
    return range(start, start + size)


def _bindable(addr: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((addr, port))
            return True
        except OSError:
            return False


def free_port(*addrs: str) -> int:
    """A TCP port free right now on every address of ``addrs`` (default 127.0.0.1), never 6379,
    from this worker's block (random within it, so ports are rarely reused soon)."""
    addrs = addrs or ("127.0.0.1",)
    block = port_block()
    for _ in range(len(block)):
        port = random.choice(block)
        if port != DEFAULT_REDIS_PORT and all(_bindable(a, port) for a in addrs):
            return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")
