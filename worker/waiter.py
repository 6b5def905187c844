"""The attempt's one wait: on its command's exit (a pidfd) or on a nudge from its signal handler
(a pipe), so a supervision loop stays one ``select`` whatever wakes it."""

from __future__ import annotations

import os
import select


class Waiter:
    """Wakes on the command's exit (a pidfd) or on a nudge from a signal handler (a pipe)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        os.set_blocking(self.w, False)

    def nudge(self) -> None:
        try:
            os.write(self.w, b"x")
        except OSError:
            pass

    def wait(self, timeout: float, exited: bool = False) -> tuple[bool, bool]:
        """(command exited, nudged) after at most ``timeout`` seconds."""
        fds = [self.r] if exited else [self.pidfd, self.r]
        try:
            ready, _, _ = select.select(fds, [], [], max(0.0, timeout))
        except InterruptedError:
            ready = []
        nudged = self.r in ready
        if nudged:
            try:
                while os.read(self.r, 64):
                    pass
            except BlockingIOError:
                pass
        return self.pidfd in ready, nudged

    def close(self) -> None:
        for fd in (self.pidfd, self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass
