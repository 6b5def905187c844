"""Session fixtures: a real redis-server (``tests.support.redis_server.RedisServer``) on a free
port of 127.0.0.1, never 6379, and child processes that are always cleaned up.

The suite runs its files in two processes (pytest-xdist: ``-n 2 --dist loadfile`` in
pyproject.toml; ``-n 0`` or ``-p no:xdist`` runs it in one).  Each process has its own session:
its own redis-server, tmp dirs, spool and run dirs, markers and ports (support/ports.py), so the
two never see each other's processes, files or keys.

Fixtures:
  spool_dir     (session)  ``HPCQ_SPOOL_DIR`` for every worker the session starts, in its tmp dir
  run_dir       (session)  ``HPCQ_RUN_DIR`` (the workers' attempt registries) likewise
  redis_server  (session)  the server's URL ``redis://127.0.0.1:PORT/0``; also sets
                           ``HPCQ_REDIS_URL`` for the session
  redis_url     (function) the same URL, after FLUSHALL
  r             (function) ``redis.Redis`` on it with ``decode_responses=True``
  procs         (function) ``procs.start(argv, env=None)`` -> support.procs.Proc; at teardown every
                           process is stopped and none of their descendants may be left

Tiers (markers, registered in pyproject.toml): every test is exactly one of ``unit`` (no Redis,
no process), ``store`` (the session's Redis, no process) or ``cluster`` (starts processes), and
may also be ``netns`` (network namespaces; always cluster) and ``slow`` (over ~20 s alone).
Collection fails on a test that is not.  The autouse fixtures (spool_dir, run_dir) start
nothing: the session's redis-server starts only when a test asks for it.
"""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.procs import Procs
from tests.support.redis_server import RedisServer


def pytest_addoption(parser, pluginmanager):
    """With xdist blocked (``-p no:xdist``), accept and ignore pyproject's ``--numprocesses``
    and ``--dist``."""
    if not pluginmanager.has_plugin("xdist"):
        parser.addoption("--numprocesses", dest="numprocesses", default=None,
                         help="(pytest-xdist is disabled: ignored)")
        parser.addoption("--dist", dest="dist", default="no", help="(pytest-xdist is disabled: ignored)")


TIERS = ("unit", "store", "cluster")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every test has exactly one tier marker (before ``-m`` deselects any), and a netns test is
    a cluster test; otherwise collection fails, naming the tests."""
    wrong = []
    for item in items:
        marks = {m.name for m in item.iter_markers()}
        tiers = [t for t in TIERS if t in marks]
        if len(tiers) != 1:
            wrong.append(f"  {item.nodeid}: {' and '.join(tiers) or 'no tier'}")
        elif "netns" in marks and tiers != ["cluster"]:
            wrong.append(f"  {item.nodeid}: netns but not cluster")
    if wrong:
        # a failed collection report (an exception would be an INTERNALERROR under pytest-xdist)
        # and no items: pytest shows a collection error naming the tests, and runs nothing
        from _pytest.reports import CollectReport
        message = (f"{len(wrong)} test(s) without exactly one tier marker (pytest.mark.unit, .store "
                   "or .cluster, registered in pyproject.toml; see tests/conftest.py):\n" + "\n".join(wrong))
        config.hook.pytest_collectreport(report=CollectReport("tests/conftest.py::tiers", "failed", message, []))
        items.clear()


def _session_dir(tmp_path_factory, var: str, name: str):
    old = os.environ.get(var)
    os.environ[var] = str(tmp_path_factory.mktemp(name))
    yield os.environ[var]
    if old is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = old


@pytest.fixture(scope="session", autouse=True)
def spool_dir(tmp_path_factory):
    """Task output spools of every worker the session starts, kept out of the user's home."""
    yield from _session_dir(tmp_path_factory, "HPCQ_SPOOL_DIR", "spool")


@pytest.fixture(scope="session", autouse=True)
def run_dir(tmp_path_factory):
    """The attempt registries of every worker the session starts (``<run_dir>/<worker name>~
    <redis>``), this session's own: not the host's shared default (/tmp/hpcq-run-UID), where a
    worker of another session, or of an earlier run, with the same name and a Redis on the same
    port would find them."""
    yield from _session_dir(tmp_path_factory, "HPCQ_RUN_DIR", "run")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session; yields ``redis://127.0.0.1:PORT/0``."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    url = server.url
    old = os.environ.get("HPCQ_REDIS_URL")
    os.environ["HPCQ_REDIS_URL"] = url
    try:
        yield url
    finally:
        if old is None:
            os.environ.pop("HPCQ_REDIS_URL", None)
        else:
            os.environ["HPCQ_REDIS_URL"] = old
        server.stop()


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


@pytest.fixture
def store(redis_url):
    """hpcq's Store on the session's (emptied) Redis."""
    from scheduler.core.store import Store
    s = Store(redis_url)
    yield s
    s.redis.close()


@pytest.fixture
def rig(store):
    """Short-hands over the store for setting up states (tests/script_model.py)."""
    from tests.script_model import Rig
    return Rig(store)
