"""The one free-port picker of the tests and the benchmarks (hpcq's own, for ``hpcq up``, is
product code: scheduler/local.py)."""

from __future__ import annotations

import socket

#: Never handed out: a developer's own Redis may be there.
DEFAULT_REDIS_PORT = 6379


def free_port(*addrs: str) -> int:
    """A TCP port free right now on every address of ``addrs`` (default 127.0.0.1), never 6379."""
    addrs = addrs or ("127.0.0.1",)
    while True:
        with socket.socket() as s:
            s.bind((addrs[0], 0))
            port = s.getsockname()[1]
        if port == DEFAULT_REDIS_PORT:
            continue
        try:
            for addr in addrs[1:]:
                with socket.socket() as s:
                    s.bind((addr, port))
        except OSError:
            continue
        return port
