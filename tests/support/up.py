"""``hpcq up`` as a child process of a test: its output drained by threads, the URL and export
line it prints, and every process of its tree that was ever seen (so a test can check that all
of them are gone after the stop)."""

from __future__ import annotations

import re
import subprocess
import threading

import psutil

from tests.support.procs import die_with_parent

EXPORT = re.compile(r"^export HPCQ_REDIS_URL=(redis://127\.0\.0\.1:\d+/\d+)$", re.M)
URL = re.compile(r"redis://127\.0\.0\.1:\d+/\d+")


class Up:
    """``argv`` (an ``hpcq up`` command line) started in a session of its own."""

    def __init__(self, argv: list[str], env: dict, cwd=None):
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, preexec_fn=die_with_parent)
        self.out: list[str] = []
        self.err: list[str] = []
        self.seen: dict[int, psutil.Process] = {}
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._drain, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _drain(stream, sink):
        for line in stream:
            sink.append(line)

    def _printed(self, pattern: re.Pattern) -> str | None:
        m = pattern.search("".join(self.out))
        if m:
            return m.group(0)
        assert self.proc.poll() is None, f"hpcq up exited ({self.proc.returncode}): {''.join(self.err)}"
        return None

    def export_line(self) -> str | None:
        """The ``export HPCQ_REDIS_URL=...`` line, once printed (fails if it exited first)."""
        return self._printed(EXPORT)

    def url(self) -> str | None:
        """The embedded Redis' URL, once printed (fails if it exited first)."""
        return self._printed(URL)

    def tree(self) -> list[psutil.Process]:
        """Its descendants, every one seen so far (the end checks that they are all gone)."""
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen.setdefault(p.pid, p)
        except psutil.Error:
            pass
        return list(self.seen.values())

    def kill(self) -> None:
        if self.proc.poll() is None:
            for p in self.tree():
                try:
                    p.kill()
                except psutil.Error:
                    pass
            self.proc.kill()
            self.proc.wait(10)
